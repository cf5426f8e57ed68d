//! Source addresses for VUs' connections (`--local-addr`): one machine
//! opens at most ~28,000 connections from one address to one target
//! address and port (the ephemeral ports), so runs with more connected
//! VUs spread them over several local addresses, as k6's `--local-ips`
//! does. VU `i` connects from address `i mod n` (of the target's family).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most addresses one run may spread over.
pub const MAX_ADDRESSES: usize = 65_536;

/// The addresses `patterns` name, in order: each an IP, an inclusive
/// range `A-B` of one family, or a CIDR block `A/N`; at most
/// [`MAX_ADDRESSES`] in all.
pub fn expand(patterns: &[String]) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let p = p.trim();
        let (first, last) = bounds(p)?;
        let (first, last) = (number(first), number(last));
        let count = last.checked_sub(first).map(|n| n + 1).unwrap_or(0);
        if count == 0 {
            return Err(format!(
                "--local-addr {p:?}: the range ends before it starts"
            ));
        }
        if out.len() as u128 + count > MAX_ADDRESSES as u128 {
            return Err(format!(
                "--local-addr: more than {MAX_ADDRESSES} addresses in all"
            ));
        }
        let v6 = p.contains(':');
        for n in first..=last {
            out.push(address(n, v6));
        }
    }
    Ok(out)
}

/// The first and last address of one pattern.
fn bounds(p: &str) -> Result<(IpAddr, IpAddr), String> {
    let ip = |s: &str| {
        s.trim().parse::<IpAddr>().map_err(|_| {
            format!("--local-addr {p:?}: {s:?} is not an IP address (use an IP, a range A-B or a CIDR A/N)")
        })
    };
    if let Some((a, b)) = p.split_once('-') {
        let (a, b) = (ip(a)?, ip(b)?);
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!(
                "--local-addr {p:?}: a range's ends must be of one family"
            ));
        }
        return Ok((a, b));
    }
    if let Some((a, bits)) = p.split_once('/') {
        let a = ip(a)?;
        let width = if a.is_ipv4() { 32 } else { 128 };
        let bits: u32 = bits.parse().ok().filter(|b| *b <= width).ok_or_else(|| {
            format!("--local-addr {p:?}: {bits:?} is not a prefix length (0-{width})")
        })?;
        let host_bits = width - bits;
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let base = number(a) & !mask;
        return Ok((
            address(base, !a.is_ipv4()),
            address(base | mask, !a.is_ipv4()),
        ));
    }
    let a = ip(p)?;
    Ok((a, a))
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn address(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

/// Whether this machine can open connections from each of `addrs`
/// (checked on the first and last of each family: a range is a run of one
/// interface's addresses); else which one it cannot, and why.
pub fn check(addrs: &[IpAddr]) -> Result<(), String> {
    let mut probe: Vec<IpAddr> = Vec::new();
    for v4 in [true, false] {
        let family: Vec<&IpAddr> = addrs.iter().filter(|a| a.is_ipv4() == v4).collect();
        probe.extend(family.first().copied());
        probe.extend(family.last().copied());
    }
    for a in probe {
        if let Err(e) = std::net::TcpListener::bind(SocketAddr::new(a, 0)) {
            return Err(format!(
                "--local-addr {a} is not an address of this machine ({e}); add it to an interface (e.g. `ip addr add {a}/32 dev lo`) or leave it out"
            ));
        }
    }
    Ok(())
}

/// The source address for VU `vu` connecting to `target`: one of `addrs`
/// of the target's family (VUs take them in turn), or none.
pub fn pick(addrs: &[IpAddr], vu: u32, target: IpAddr) -> Option<IpAddr> {
    let family = |a: &&IpAddr| a.is_ipv4() == target.is_ipv4();
    let n = addrs.iter().filter(family).count();
    (n > 0).then(|| addrs.iter().filter(family).nth(vu as usize % n).copied())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Result<Vec<IpAddr>, String> {
        expand(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ranges_blocks_and_single_addresses_expand_in_order() {
        let a = v(&["127.0.0.2-127.0.0.4", "10.0.0.0/31", "::1"]).expect("valid");
        let shown: Vec<String> = a.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "10.0.0.0",
                "10.0.0.1",
                "::1"
            ]
        );
        assert_eq!(v(&["127.0.0.0/16"]).expect("valid").len(), 65_536);
        assert!(v(&["127.0.0.0/15"])
            .unwrap_err()
            .contains("more than 65536"));
        assert!(v(&["127.0.0.9-127.0.0.2"])
            .unwrap_err()
            .contains("ends before"));
        assert!(v(&["127.0.0.1-::1"]).unwrap_err().contains("one family"));
        assert!(v(&["localhost"]).unwrap_err().contains("not an IP address"));
        assert!(v(&["10.0.0.0/33"]).unwrap_err().contains("prefix length"));
        // VUs take the addresses of the target's family in turn.
        let target: IpAddr = "127.0.0.1".parse().unwrap();
        let picks: Vec<String> = (0..4)
            .map(|vu| pick(&a, vu, target).unwrap().to_string())
            .collect();
        assert_eq!(picks, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "10.0.0.0"]);
        assert_eq!(
            pick(&a, 7, "::1".parse().unwrap()).unwrap().to_string(),
            "::1"
        );
        assert_eq!(pick(&[], 0, target), None);
        assert!(check(&v(&["127.0.0.2-127.0.0.9"]).unwrap()).is_ok());
        assert!(check(&v(&["192.0.2.1"]).unwrap())
            .unwrap_err()
            .contains("is not an address of this machine"));
    }
}
