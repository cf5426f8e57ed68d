//! NATS server URLs: checked, with the credentials written into them
//! (`nats://user:password@host`, `nats://token@host`), which async-nats
//! does not read itself.

use crate::bindings::runner::scenario::nats::Error;

/// Credentials written into a server URL: `user:password@` or `token@`.
pub(crate) enum UrlAuth {
    None,
    Token(String),
    UserPassword(String, String),
}

/// Checks the URL list; returns the default metric name (the first
/// server's `host:port`) and the credentials in the first URL that has any.
pub(crate) fn check_url(urls: &str) -> Result<(String, UrlAuth), Error> {
    let mut first = None;
    let mut auth = UrlAuth::None;
    for u in urls.split(',').map(str::trim) {
        let url = url::Url::parse(u)
            .map_err(|e| Error::InvalidArgument(format!("server URL {u:?} is not valid: {e}")))?;
        if !matches!(url.scheme(), "nats" | "tls") {
            return Err(Error::InvalidArgument(format!(
                "server URL scheme {:?} is not supported: use nats:// or tls://",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Error::InvalidArgument(format!("server URL {u:?} has no host")))?;
        first.get_or_insert_with(|| format!("{host}:{}", url.port().unwrap_or(4222)));
        if matches!(auth, UrlAuth::None) && !url.username().is_empty() {
            let user = decode(url.username());
            auth = match url.password() {
                Some(p) => UrlAuth::UserPassword(user, decode(p)),
                None => UrlAuth::Token(user),
            };
        }
    }
    let first = first.ok_or_else(|| Error::InvalidArgument("no server URL given".into()))?;
    Ok((first, auth))
}

/// The servers of a (checked) URL list: `(host, port)`.
pub(crate) fn servers(urls: &str) -> Vec<(String, u16)> {
    urls.split(',')
        .filter_map(|u| url::Url::parse(u.trim()).ok())
        .filter_map(|u| Some((u.host_str()?.to_owned(), u.port().unwrap_or(4222))))
        .collect()
}

/// Undoes the URL's percent-encoding of a user name or password.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_their_credentials_read() {
        let (name, auth) = check_url("nats://u:p%40ss@127.0.0.1:4333,nats://h2").expect("valid");
        assert_eq!(name, "127.0.0.1:4333");
        assert!(matches!(auth, UrlAuth::UserPassword(u, p) if u == "u" && p == "p@ss"));
        let (name, auth) = check_url("tls://tok@example.com").expect("valid");
        assert_eq!(name, "example.com:4222");
        assert!(matches!(auth, UrlAuth::Token(t) if t == "tok"));
        assert!(matches!(
            check_url("http://x"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            check_url("not a url"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
