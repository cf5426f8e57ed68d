//! Where a scenario may connect: the operator's `--allow-host` and
//! `--block-host` rules, the same for HTTP, MQTT and NATS. A destination
//! is judged by its host name before any lookup and by its address after
//! it (so a CIDR rule holds whatever name points there), and a denied
//! connection sends nothing to its destination.
//!
//! A rule is `host`, `host:port`, `*.example.com` (any subdomain, not the
//! domain itself), an IP address (`10.0.0.5`, `[::1]:8080`) or a CIDR
//! (`10.0.0.0/8`). With allow rules, only what one of them matches may be
//! reached; block rules win over allow rules.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The rules a run's connections follow.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    allow: Vec<Rule>,
    block: Vec<Rule>,
    /// Rules that hold as well (a process's, around a run's own).
    outer: Option<Box<Egress>>,
}

/// One `--allow-host` or `--block-host` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// A host name, or with `wildcard` any name below it.
    Name {
        name: String,
        wildcard: bool,
        port: Option<u16>,
    },
    /// An address or a network.
    Net { net: IpNet, port: Option<u16> },
}

/// Why a destination may not be reached: a sentence naming it and the
/// rule (or its absence) that decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Egress {
    /// Rules from the flags' values; the error names the bad one.
    pub fn new(allow: &[String], block: &[String]) -> Result<Self, String> {
        let parse = |flag: &str, v: &[String]| -> Result<Vec<Rule>, String> {
            v.iter()
                .map(|s| Rule::parse(s).map_err(|e| format!("{flag} {s:?}: {e}")))
                .collect()
        };
        Ok(Self {
            allow: parse("--allow-host", allow)?,
            block: parse("--block-host", block)?,
            outer: None,
        })
    }

    /// These rules, and `outer`'s as well: a destination must pass both.
    pub fn within(mut self, outer: Egress) -> Self {
        self.outer = Some(Box::new(outer));
        self
    }

    /// Adds `--block-host` rules.
    pub fn block_also(&mut self, block: &[String]) -> Result<(), String> {
        for s in block {
            self.block
                .push(Rule::parse(s).map_err(|e| format!("--block-host {s:?}: {e}"))?);
        }
        Ok(())
    }

    /// Loopback only: what a runner that takes scenarios from the network
    /// allows unless its operator says otherwise.
    pub fn loopback_only() -> Self {
        let loopback = ["localhost", "127.0.0.0/8", "::1"];
        Self {
            allow: loopback
                .iter()
                .filter_map(|r| Rule::parse(r).ok())
                .collect(),
            block: Vec::new(),
            outer: None,
        }
    }

    /// Whether every destination may be reached.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty()
            && self.block.is_empty()
            && self.outer.as_ref().is_none_or(|o| o.is_open())
    }

    /// Judges `host:port` by its name alone, before any lookup: `Ok(true)`
    /// when allowed whatever it resolves to (unless an address rule
    /// blocks it), `Ok(false)` when its address decides, or why it is
    /// denied.
    pub fn check_name(&self, host: &str, port: u16) -> Result<bool, Denied> {
        let outer = match &self.outer {
            Some(o) => o.check_name(host, port)?,
            None => true,
        };
        let here = self.check_name_here(host, port)?;
        Ok(outer && here)
    }

    fn check_name_here(&self, host: &str, port: u16) -> Result<bool, Denied> {
        let host = normalize(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_addr_here(&host, ip, port).map(|()| true);
        }
        if let Some(r) = self.block.iter().find(|r| r.matches_name(&host, port)) {
            return Err(Denied(format!(
                "{host}:{port} is blocked (--block-host {r})"
            )));
        }
        if self.allow.is_empty() || self.allow.iter().any(|r| r.matches_name(&host, port)) {
            // Still subject to address blocks.
            return Ok(!self.block.iter().any(|r| matches!(r, Rule::Net { .. })));
        }
        if self.allow.iter().any(|r| matches!(r, Rule::Net { .. })) {
            return Ok(false);
        }
        Err(self.not_allowed(&host, port))
    }

    /// Judges `host:port` by the address `ip` it resolved to.
    pub fn check_addr(&self, host: &str, ip: IpAddr, port: u16) -> Result<(), Denied> {
        if let Some(o) = &self.outer {
            o.check_addr(host, ip, port)?;
        }
        self.check_addr_here(host, ip, port)
    }

    fn check_addr_here(&self, host: &str, ip: IpAddr, port: u16) -> Result<(), Denied> {
        let host = normalize(host);
        let ip = canonical(ip);
        if let Some(r) = self
            .block
            .iter()
            .find(|r| r.matches_ip(ip, port) || r.matches_name(&host, port))
        {
            return Err(Denied(format!(
                "{host}:{port} ({ip}) is blocked (--block-host {r})"
            )));
        }
        if self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|r| r.matches_ip(ip, port) || r.matches_name(&host, port))
        {
            return Ok(());
        }
        Err(self.not_allowed(&format!("{host} ({ip})"), port))
    }

    /// The rules in a line, for logs: `anywhere`, or what is allowed and
    /// blocked.
    pub fn describe(&self) -> String {
        let list = |r: &[Rule]| {
            r.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let here = match (self.allow.is_empty(), self.block.is_empty()) {
            (true, true) => "anywhere".to_owned(),
            (false, true) => list(&self.allow),
            (true, false) => format!("anywhere but {}", list(&self.block)),
            (false, false) => format!("{} but not {}", list(&self.allow), list(&self.block)),
        };
        match &self.outer {
            Some(o) => format!("{here}, within {}", o.describe()),
            None => here,
        }
    }

    fn not_allowed(&self, what: &str, port: u16) -> Denied {
        let list: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
        Denied(format!(
            "{what}:{port} is not allowed (--allow-host: {})",
            list.join(", ")
        ))
    }
}

impl Rule {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty rule".into());
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Rule::Net {
                net: canonical_net(net),
                port: None,
            });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Rule::Net {
                net: IpNet::from(canonical(ip)),
                port: None,
            });
        }
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            return Ok(Rule::Net {
                net: IpNet::from(canonical(sa.ip())),
                port: Some(sa.port()),
            });
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((n, p)) => (
                n,
                Some(p.parse::<u16>().map_err(|_| {
                    format!("{p:?} is not a port (rules are host, host:port, *.domain, an IP or a CIDR)")
                })?),
            ),
            None => (s, None),
        };
        let (name, wildcard) = match name.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (name, false),
        };
        let name = normalize(name);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "{name:?} is not a host name (rules are host, host:port, *.domain, an IP or a CIDR)"
            ));
        }
        Ok(Rule::Name {
            name,
            wildcard,
            port,
        })
    }

    fn matches_name(&self, host: &str, port: u16) -> bool {
        match self {
            Rule::Name {
                name,
                wildcard,
                port: p,
            } => {
                p.is_none_or(|p| p == port)
                    && if *wildcard {
                        host.len() > name.len() + 1
                            && host.ends_with(name.as_str())
                            && host.as_bytes()[host.len() - name.len() - 1] == b'.'
                    } else {
                        host == name
                    }
            }
            Rule::Net { .. } => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr, port: u16) -> bool {
        match self {
            Rule::Net { net, port: p } => p.is_none_or(|p| p == port) && net.contains(&ip),
            Rule::Name { .. } => false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Name {
                name,
                wildcard,
                port,
            } => {
                if *wildcard {
                    f.write_str("*.")?;
                }
                f.write_str(name)?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
            Rule::Net { net, port: None } if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            Rule::Net { net, port: None } => write!(f, "{net}"),
            Rule::Net { net, port: Some(p) } => match net.addr() {
                IpAddr::V4(a) => write!(f, "{a}:{p}"),
                IpAddr::V6(a) => write!(f, "[{a}]:{p}"),
            },
        }
    }
}

/// A host as rules see it: lower case, no brackets, no trailing dot.
fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    net.trunc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(allow: &[&str], block: &[&str]) -> Egress {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Egress::new(&v(allow), &v(block)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_rules_allow_everything() {
        let g = e(&[], &[]);
        assert!(g.is_open());
        assert_eq!(g.check_name("example.com", 80), Ok(true));
        assert_eq!(g.check_addr("example.com", ip("93.184.216.34"), 80), Ok(()));
    }

    #[test]
    fn names_wildcards_and_ports() {
        let g = e(&["api.test", "*.example.com", "db.test:5432"], &[]);
        assert_eq!(g.check_name("API.test.", 443), Ok(true));
        assert_eq!(g.check_name("a.example.com", 80), Ok(true));
        assert_eq!(g.check_name("a.b.example.com", 80), Ok(true));
        assert!(
            g.check_name("example.com", 80).is_err(),
            "not the domain itself"
        );
        assert!(g.check_name("badexample.com", 80).is_err());
        assert_eq!(g.check_name("db.test", 5432), Ok(true));
        let no = g.check_name("db.test", 5433).unwrap_err();
        assert!(no.0.contains("db.test:5433 is not allowed"), "{no}");
        assert!(no.0.contains("*.example.com"), "{no}");
    }

    #[test]
    fn addresses_and_networks_decide_after_the_lookup() {
        let g = e(&["10.0.0.0/8", "[::1]:8080"], &[]);
        assert_eq!(g.check_name("svc.internal", 80), Ok(false));
        assert_eq!(g.check_addr("svc.internal", ip("10.1.2.3"), 80), Ok(()));
        assert!(g.check_addr("svc.internal", ip("192.168.1.1"), 80).is_err());
        assert_eq!(g.check_name("[::1]", 8080), Ok(true));
        assert!(g.check_name("::1", 8081).is_err());
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(g.check_addr("x", ip("::ffff:10.0.0.1"), 1), Ok(()));
    }

    #[test]
    fn blocks_win_and_name_no_one() {
        let g = e(&["*.corp", "10.0.0.0/8"], &["secrets.corp", "10.9.0.0/16"]);
        let no = g.check_name("secrets.corp", 443).unwrap_err();
        assert!(no.0.contains("blocked (--block-host secrets.corp)"), "{no}");
        // Allowed by name, but its address is blocked.
        assert_eq!(g.check_name("app.corp", 443), Ok(false));
        assert!(g.check_addr("app.corp", ip("10.9.1.1"), 443).is_err());
        assert_eq!(g.check_addr("app.corp", ip("10.8.1.1"), 443), Ok(()));
        // Block lists alone allow the rest.
        let b = e(&[], &["169.254.169.254"]);
        assert!(b.check_name("169.254.169.254", 80).is_err());
        assert_eq!(b.check_addr("meta", ip("8.8.8.8"), 80), Ok(()));
    }

    #[test]
    fn loopback_only_is_the_networked_default() {
        let g = Egress::loopback_only();
        assert_eq!(g.check_name("localhost", 8080), Ok(true));
        assert_eq!(g.check_name("127.0.0.2", 80), Ok(true));
        assert_eq!(g.check_name("example.com", 80), Ok(false));
        assert!(g
            .check_addr("example.com", ip("93.184.216.34"), 80)
            .is_err());
    }

    #[test]
    fn a_run_s_rules_hold_within_its_process_s() {
        let g = e(&["*.example.com"], &[]).within(Egress::loopback_only());
        assert!(!g.is_open());
        // The run allows it; the process does not.
        assert_eq!(g.check_name("a.example.com", 80), Ok(false));
        assert!(g
            .check_addr("a.example.com", ip("93.184.216.34"), 80)
            .is_err());
        // The process allows it; the run does not.
        assert!(g.check_name("localhost", 80).is_err());
        let open = e(&[], &[]).within(Egress::loopback_only());
        assert_eq!(open.check_name("127.0.0.1", 80), Ok(true));
        assert!(open.check_addr("x", ip("10.0.0.1"), 80).is_err());
    }

    #[test]
    fn bad_rules_are_named() {
        let v = |s: &str| vec![s.to_owned()];
        for bad in ["", "host:port", "bad host", "*.", "a..b", "10.0.0.0/33"] {
            let err = Egress::new(&v(bad), &[]).unwrap_err();
            assert!(err.starts_with("--allow-host"), "{bad:?}: {err}");
        }
    }
}
