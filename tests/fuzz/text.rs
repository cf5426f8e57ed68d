//! Target 6: short texts an operator or a peer hands the runner: join
//! tokens (`runner join --token`) and egress patterns (`--allow-host`,
//! `--block-host`, a REST body's lists).

#![allow(unused_imports)]

use super::*;

use host_api::egress::Egress;
use runner::federation::token::Token;

#[test]
pub(crate) fn tokens_and_egress_patterns() {
    let token = Token {
        fingerprint: [0xab; 32],
        secret: "a-secret-of-some-length".into(),
    };
    let shown = token.to_string();
    // Valid seeds still decode, and read back as written.
    let back: Token = shown.parse().expect("a token parses");
    assert_eq!(back.to_string(), shown);
    let patterns = [
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
    ];
    for p in patterns {
        Egress::new(&[p.to_owned()], &[]).unwrap_or_else(|e| panic!("{p:?} no longer parses: {e}"));
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
        match text.parse::<Token>() {
            Err(e) => assert!(one_line(&e), "not a one-line error: {e:?}"),
            Ok(t) => {
                // What parses prints back to a token that parses the same.
                let again: Token = t.to_string().parse().expect("reads back");
                assert_eq!(again.fingerprint, t.fingerprint);
                assert_eq!(again.secret, t.secret);
            }
        }
        let one = std::slice::from_ref(&text);
        match Egress::new(one, one) {
            Err(e) => assert!(one_line(&e), "not a one-line error: {e:?}"),
            Ok(rules) => {
                // A destination both allowed and blocked is denied.
                if let Ok(true) = rules.check_name("example.com", 80) {
                    panic!("{text:?} both allows and blocks example.com:80, yet it passes");
                }
                assert!(one_line(&rules.describe()) || rules.describe().is_empty());
            }
        }
    });
}
