//! The join token, `FINGERPRINT:SECRET`: the SHA-256 fingerprint of the
//! coordinator's certificate (workers pin it, so they talk only to that
//! coordinator) and a secret (the coordinator admits only workers that
//! know it, compared in constant time).

use std::fmt;
use std::str::FromStr;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 of the coordinator certificate's DER bytes.
    pub fingerprint: [u8; 32],
    /// The shared secret, as given (printable, no `:`).
    pub secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret by accident.
        write!(f, "Token({}:…)", hex(&self.fingerprint))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", hex(&self.fingerprint), self.secret)
    }
}

impl FromStr for Token {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let what = "a token is FINGERPRINT:SECRET, as the coordinator prints it";
        let (fp, secret) = s.trim().split_once(':').ok_or_else(|| what.to_string())?;
        let fingerprint = unhex(fp)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("the token's fingerprint is not 64 hex digits ({what})"))?;
        check_secret(secret)?;
        Ok(Token {
            fingerprint,
            secret: secret.to_owned(),
        })
    }
}

/// Checks a secret is usable: 16 to 256 printable ASCII characters, no `:`.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if !(16..=256).contains(&secret.len())
        || !secret.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(
            "a secret is 16 to 256 printable characters without ':' (the coordinator makes one if none is given)"
                .into(),
        );
    }
    Ok(())
}

/// A new random secret: 128 bits, hex.
pub fn new_secret() -> anyhow::Result<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(hex(&bytes))
}

/// Whether `given` is `expected`, in time that does not depend on where
/// they differ.
pub fn secret_matches(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let t = Token {
            fingerprint: [7; 32],
            secret: new_secret().expect("random"),
        };
        assert_eq!(t.to_string().parse::<Token>(), Ok(t.clone()));
        assert!(!format!("{t:?}").contains(&t.secret));
        assert!("nocolon".parse::<Token>().is_err());
        assert!("abcd:0123456789abcdef".parse::<Token>().is_err());
        let short = format!("{}:short", hex(&[1; 32]));
        assert!(short.parse::<Token>().is_err());
        assert!(secret_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!secret_matches("0123456789abcdeX", "0123456789abcdef"));
        assert!(!secret_matches("0123", "0123456789abcdef"));
    }
}
