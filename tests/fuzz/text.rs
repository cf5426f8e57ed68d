//! Target 6: short texts an operator or a peer hands the runner: join
//! tokens (`runner join --token`) and egress patterns (`--allow-host`,
//! `--block-host`, a REST body's lists).

#![allow(unused_imports)]

use super::*;

use host_api::egress::Egress;
use runner::federation::token::Token;

#[test]
pub(crate) fn tokens_and_egress_patterns() {
    let shown = token_seed();
    // Valid seeds still decode, and read back as written.
    let back: Token = shown.parse().expect("a token parses");
    assert_eq!(back.to_string(), shown);
    let patterns = egress_seeds();
    for p in &patterns {
        Egress::new(&[(*p).to_owned()], &[])
            .unwrap_or_else(|e| panic!("{p:?} no longer parses: {e}"));
    }
    let mut seeds: Vec<Vec<u8>> = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
    seeds.push(shown.as_bytes().to_vec());
    let corpus = Corpus {
        seeds,
        trees: Vec::new(),
        keys: Vec::new(),
    };
    fuzz("tokens-and-egress-patterns", 30_000, |rng| {
        let text = String::from_utf8_lossy(&corpus.input(rng)).into_owned();
        note(text.as_bytes());
        check_token_and_pattern(&text);
    });
}

/// Egress patterns of every form `--allow-host` documents.
pub fn egress_seeds() -> Vec<&'static str> {
    vec![
        "example.com",
        "api.example.com:443",
        "*.example.com",
        "10.0.0.0/8",
        "127.0.0.1",
        "127.0.0.1:8080",
        "::1",
        "[::1]:443",
        "fd00::/8",
        "localhost",
    ]
}

/// A valid join token, as `runner serve` prints it.
pub fn token_seed() -> String {
    Token {
        fingerprint: [0xab; 32],
        secret: "a-secret-of-some-length".into(),
    }
    .to_string()
}

/// One input of the text target: `text` as a join token and as an
/// egress pattern, both allowed and blocked. A token that parses prints
/// back to the same token; a pattern that parses never lets through what
/// it also blocks; every refusal is one line.
pub fn check_token_and_pattern(text: &str) {
    match text.parse::<Token>() {
        Err(e) => assert!(one_line(&e), "not a one-line error: {e:?}"),
        Ok(t) => {
            // What parses prints back to a token that parses the same.
            let again: Token = t.to_string().parse().expect("reads back");
            assert_eq!(again.fingerprint, t.fingerprint);
            assert_eq!(again.secret, t.secret);
        }
    }
    let one = [text.to_owned()];
    match Egress::new(&one, &one) {
        Err(e) => assert!(one_line(&e), "not a one-line error: {e:?}"),
        Ok(rules) => {
            // A destination both allowed and blocked is denied.
            if let Ok(true) = rules.check_name("example.com", 80) {
                panic!("{text:?} both allows and blocks example.com:80, yet it passes");
            }
            assert!(one_line(&rules.describe()) || rules.describe().is_empty());
        }
    }
}
