//! The fuzzing engine: a deterministic generator, the case runner, and
//! the byte and JSON-tree mutations every target uses.

#![allow(unused_imports)]

use super::*;

/// The default seed; `FUZZ_SEED` picks another.
pub(crate) const SEED: u64 = 0x5eed_f022_2025_0001;

/// Largest input made (long strings included), so a case stays fast.
pub(crate) const MAX_INPUT: usize = 96 << 10;

pub(crate) fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// xorshift64*: tiny, fast, and the same sequence on every machine.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // Never the all-zero state xorshift cannot leave.
        Rng(splitmix(seed) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A length that is usually small and sometimes not.
    pub(crate) fn len(&mut self) -> usize {
        match self.below(8) {
            0 => self.below(4096),
            1..=3 => self.below(256),
            _ => self.below(32),
        }
    }
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

thread_local! {
    /// The input of the case under way, shown if it fails.
    static CURRENT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Records `input` as the case's, for the failure message.
pub(crate) fn note(input: &[u8]) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.clear();
        c.extend_from_slice(input);
    });
}

/// Runs `cases` cases of target `name` (`FUZZ_CASES` overrides the
/// number), each with its own generator seeded from the run's seed, the
/// target and the case number, so any case replays alone (`FUZZ_ONLY`).
pub(crate) fn fuzz(name: &str, cases: u64, mut one: impl FnMut(&mut Rng)) -> u64 {
    let seed = env_u64("FUZZ_SEED").unwrap_or(SEED);
    let cases = env_u64("FUZZ_CASES").unwrap_or(cases);
    let range = match env_u64("FUZZ_ONLY") {
        Some(i) => i..i + 1,
        None => 0..cases,
    };
    let began = Instant::now();
    for i in range.clone() {
        let mut rng = Rng::new(seed ^ name_hash(name) ^ splitmix(i));
        note(b"");
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| one(&mut rng))) {
            let input = CURRENT.with(|c| c.borrow().clone());
            let shown = String::from_utf8_lossy(&input[..input.len().min(1500)]).into_owned();
            eprintln!(
                "fuzz target {name}: case {i} failed; replay it with FUZZ_SEED={seed:#x} FUZZ_ONLY={i}\n  input ({} bytes): {shown:?}",
                input.len()
            );
            panic::resume_unwind(p);
        }
    }
    eprintln!(
        "fuzz target {name}: {} cases in {:.2?} (seed {seed:#x})",
        range.end - range.start,
        began.elapsed()
    );
    range.end - range.start
}

/// Whether an error message is one non-empty line.
pub(crate) fn one_line(s: &str) -> bool {
    !s.trim().is_empty()
        && !s.contains([
            '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}',
        ])
}

/// Tokens spliced into any input: grammar pieces of every target, JSON
/// punctuation, extreme numbers, unicode.
#[rustfmt::skip]
pub(crate) const TOKENS: &[&str] = &[
    "p(99)", "p(", ")", "p(100.0001)", "p(-0)", "p(NaN)", "p(1e-320)", "<", "<=", ">", ">=", "==",
    "!=", "!", "=", "rate", "count", "avg", "med", "min", "max", "value", "abort", "ms", "s", "us",
    "µs", "m", "e", "-", ".", "{", "}", "[", "]", ":", ",", "\"", "\\", "\\u0000", "\\ud800",
    "\\u00e9", " ", "\t", "\n", "\r\n", "\u{a0}", "\u{2028}", "\u{feff}", "\u{202e}", "😀", "é",
    "\u{0}", "NaN", "-NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e-400", "1e308",
    "4294967295", "4294967296", "18446744073709551615", "18446744073709551616",
    "-9223372036854775809", "9007199254740993", "10000000", "10000000.000001", "0", "-0", "-1",
    "0.0", "1.", ".5", "1e", "1e+", "+1", "01", "0x10", "null", "true", "false", "{}", "[]", "\"\"",
    "30s", "0s", "1ns", "366d", "367days", "1year", "99999999999999999999s", "64MiB",
    "18446744073709551615GiB", "1s:2", "1s:NaN", "1s:-1", "poisson", "default", "*.example.com",
    "10.0.0.0/8", "[::1]:80", "localhost:99999", "json=/tmp/x", "type", "hello", "assign",
];

/// Strings set into JSON fields by the tree mutations.
#[rustfmt::skip]
pub(crate) const STRINGS: &[&str] = &[
    "", " ", "0", "30s", "0s", "1ns", "1ms", "250ms", "1m 30s", "366d", "367d", "1year", "100years",
    "99999999999999999999s", "18446744073709551615ns", "-1s", "soon", "64MiB", "0B", "1GiB",
    "18446744073709551615GiB", "12 parsecs", "1s:2", "0s:0", "300d:1", "1s:NaN", "1s:inf", "1s:-1",
    "1s:1e308", ":", "even", "poisson", "default", "nope", "http_req_duration p(95)<200ms",
    "checks rate>0.99", "errors count<10 abort", "m avg<1e999", "http_reqs p(95)<1", "*",
    "*.example.com", "example.com:443", "127.0.0.1", "10.0.0.0/8", "::1", "[::1]:80", "0.0.0.0/0",
    "localhost:99999", "256.1.1.1", "a/33", "json=r.json", "../../etc/passwd", "\u{0}", "é", "µs",
    "\u{202e}", "😀", "\n", "line\nbreak",
];

/// Numbers set into JSON fields by the tree mutations.
pub(crate) fn edge_number(rng: &mut Rng) -> Value {
    match rng.below(22) {
        0 => json!(0),
        1 => json!(-0.0),
        2 => json!(-1),
        3 => json!(1),
        4 => json!(u32::MAX),
        5 => json!(u64::from(u32::MAX) + 1),
        6 => json!(u64::MAX),
        7 => json!(i64::MIN),
        8 => json!(f64::MAX),
        9 => json!(-f64::MAX),
        10 => json!(f64::MIN_POSITIVE),
        11 => json!(5e-324),
        12 => json!(MAX_RATE),
        13 => json!(MAX_RATE + 0.5),
        14 => json!(1_000_000),
        15 => json!(1_000_001),
        16 => json!(0.5),
        17 => json!(1e-9),
        18 => json!(9_007_199_254_740_993u64),
        19 => json!(100.000_001),
        20 => json!(rng.next() as i64),
        _ => json!(f64::from_bits(rng.next())),
    }
}

/// A JSON value made by `arbitrary`, with field names and strings drawn
/// from a target's dictionary most of the time.
#[derive(Arbitrary, Debug)]
pub(crate) enum Val {
    Null,
    Bool(bool),
    Small(i8),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(Text),
    Arr(Vec<Val>),
    Obj(Vec<(Text, Val)>),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Text {
    Known(u16),
    Any(String),
}

impl Text {
    pub(crate) fn render(&self, dict: &[&str]) -> String {
        match self {
            Text::Known(i) if !dict.is_empty() => dict[usize::from(*i) % dict.len()].to_owned(),
            Text::Known(i) => STRINGS[usize::from(*i) % STRINGS.len()].to_owned(),
            Text::Any(s) => s.clone(),
        }
    }
}

impl Val {
    pub(crate) fn render(&self, keys: &[&str]) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => json!(b),
            Val::Small(n) => json!(n),
            Val::Int(n) => json!(n),
            Val::Uint(n) => json!(n),
            Val::Float(f) => json!(f),
            Val::Text(t) => json!(t.render(STRINGS)),
            Val::Arr(xs) => Value::Array(xs.iter().map(|x| x.render(keys)).collect()),
            Val::Obj(kv) => Value::Object(
                kv.iter()
                    .map(|(k, v)| (k.render(keys), v.render(keys)))
                    .collect(),
            ),
        }
    }
}

/// `T` made by `arbitrary` from some of the generator's bytes.
pub(crate) fn arb<T: for<'a> Arbitrary<'a>>(rng: &mut Rng, size: usize) -> Option<T> {
    let n = 8 + rng.below(size);
    let data = rng.bytes(n);
    T::arbitrary(&mut Unstructured::new(&data)).ok()
}

/// What a target's inputs are made from.
pub(crate) struct Corpus {
    /// Valid inputs.
    pub(crate) seeds: Vec<Vec<u8>>,
    /// The seeds as JSON trees (empty for a target that is not JSON).
    pub(crate) trees: Vec<Value>,
    /// The field names of the target's JSON.
    pub(crate) keys: Vec<&'static str>,
}

impl Corpus {
    pub(crate) fn json(seeds: Vec<Value>, keys: &[&'static str]) -> Self {
        Corpus {
            seeds: seeds
                .iter()
                .map(|v| serde_json::to_vec(v).expect("a seed serializes"))
                .collect(),
            trees: seeds,
            keys: keys.to_vec(),
        }
    }

    /// One input: mostly a mutated seed, sometimes made from scratch.
    pub(crate) fn input(&self, rng: &mut Rng) -> Vec<u8> {
        let json = !self.trees.is_empty();
        let mut b = match rng.below(20) {
            0 => {
                let n = rng.len();
                rng.bytes(n)
            }
            1 => {
                let n = 1 + rng.below(12);
                (0..n).flat_map(|_| rng.pick(TOKENS).bytes()).collect()
            }
            2 => rng.pick(&self.seeds).clone(),
            3 | 4 if json => {
                let v = arb::<Vec<(Text, Val)>>(rng, 400).unwrap_or_default();
                let keys = &self.keys;
                let obj: serde_json::Map<String, Value> = v
                    .iter()
                    .map(|(k, v)| (k.render(keys), v.render(keys)))
                    .collect();
                serde_json::to_vec(&obj).expect("a map serializes")
            }
            5..=11 if json => {
                let mut v = rng.pick(&self.trees).clone();
                for _ in 0..1 + rng.below(3) {
                    mutate_tree(&mut v, rng, &self.keys);
                }
                let mut b = serde_json::to_vec(&v).expect("a tree serializes");
                if rng.one_in(4) {
                    mutate_bytes(&mut b, rng, &self.seeds);
                }
                b
            }
            _ => {
                let mut b = rng.pick(&self.seeds).clone();
                mutate_bytes(&mut b, rng, &self.seeds);
                b
            }
        };
        b.truncate(MAX_INPUT);
        b
    }
}

/// One to four byte-level mutations of `b`.
pub(crate) fn mutate_bytes(b: &mut Vec<u8>, rng: &mut Rng, corpus: &[Vec<u8>]) {
    pub(crate) const INTERESTING: &[u8] = b"\0\xff\x7f\x80\"{}[],:\\ \n0-.e<>=!()";
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(14) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = *rng.pick(INTERESTING);
            }
            2 => {
                let n = 1 + rng.below(8);
                let ins = rng.bytes(n);
                b.splice(at..at, ins);
            }
            3 if !b.is_empty() => {
                let n = 1 + rng.below(b.len().min(16));
                let from = rng.below(b.len() - n + 1);
                b.drain(from..from + n);
            }
            4 | 5 => {
                let t = rng.pick(TOKENS).as_bytes().to_vec();
                b.splice(at..at, t);
            }
            6 if !b.is_empty() => {
                // Replace a run with a token.
                let n = rng.below(b.len().min(8) + 1);
                let end = (at + n).min(b.len());
                let t = rng.pick(TOKENS).as_bytes().to_vec();
                b.splice(at.min(end)..end, t);
            }
            7 if !b.is_empty() => {
                // Copy a chunk elsewhere.
                let from = rng.below(b.len());
                let n = 1 + rng.below((b.len() - from).min(64));
                let chunk = b[from..from + n].to_vec();
                b.splice(at..at, chunk);
            }
            8 => {
                // Crossover: this seed's start, another's end.
                let other = match corpus {
                    [] => b.clone(),
                    _ => rng.pick(corpus).clone(),
                };
                let j = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[j..]);
            }
            9 => {
                // Replace a number with an extreme one.
                if let Some(start) = (at..b.len()).find(|&i| b[i].is_ascii_digit()) {
                    let end = (start..b.len())
                        .find(|&i| !b[i].is_ascii_digit())
                        .unwrap_or(b.len());
                    let n = rng.pick(TOKENS).as_bytes().to_vec();
                    let n = if rng.one_in(2) {
                        n
                    } else {
                        let digits = 1 + rng.below(400);
                        "9".repeat(digits).into_bytes()
                    };
                    b.splice(start..end, n);
                }
            }
            10 => {
                // A long run: of one byte, or of a token.
                let n = 256 << rng.below(8);
                let run: Vec<u8> = if rng.one_in(2) {
                    vec![*rng.pick(b"a9 {[\"\\-"); n]
                } else {
                    rng.pick(TOKENS).as_bytes().repeat(n / 4)
                };
                b.splice(at..at, run);
            }
            11 => b.truncate(at),
            12 if b.len() > 1 => {
                let (i, j) = (rng.below(b.len()), rng.below(b.len()));
                b.swap(i, j);
            }
            _ => {
                let c = *rng.pick(&["é", "µ", "\u{2028}", "😀", "\u{feff}", "\u{0}", "\u{7f}"]);
                b.splice(at..at, c.bytes());
            }
        }
        if b.len() > MAX_INPUT {
            b.truncate(MAX_INPUT);
        }
    }
}

/// A random node of `v`.
fn pick_node<'a>(v: &'a mut Value, rng: &mut Rng) -> &'a mut Value {
    let n = match &*v {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    if n == 0 || rng.one_in(4) {
        return v;
    }
    let i = rng.below(n);
    match v {
        Value::Array(a) => pick_node(&mut a[i], rng),
        Value::Object(o) => match o.values_mut().nth(i) {
            Some(child) => pick_node(child, rng),
            None => unreachable!("i < len"),
        },
        _ => unreachable!("a container"),
    }
}

/// Sets some of the numbers in `v` to extremes of their kind.
fn extreme_numbers(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Number(n) if rng.one_in(4) => {
            *v = match (n.is_u64(), rng.below(4)) {
                (true, 0) => json!(u64::MAX),
                (true, 1) => json!(u64::MAX / 2 + 1),
                (true, 2) => json!(u32::MAX),
                (false, 0) => json!(f64::MAX),
                (false, 1) => json!(-f64::MAX),
                _ => edge_number(rng),
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| extreme_numbers(x, rng)),
        Value::Object(o) => o.values_mut().for_each(|x| extreme_numbers(x, rng)),
        _ => {}
    }
}

/// One structure-aware mutation: a field dropped, added, retyped, or set
/// to an extreme value.
fn mutate_tree(v: &mut Value, rng: &mut Rng, keys: &[&str]) {
    let node = pick_node(v, rng);
    match rng.below(13) {
        0 | 1 => *node = edge_number(rng),
        2 => *node = json!(*rng.pick(STRINGS)),
        3 => {
            if let Some(val) = arb::<Val>(rng, 64) {
                *node = val.render(keys);
            }
        }
        4 => match node {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).cloned();
                if let Some(k) = k {
                    o.remove(&k);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
            }
            _ => *node = Value::Null,
        },
        5 => match node {
            Value::Object(o) => {
                let k = if rng.one_in(4) || keys.is_empty() {
                    rng.pick(STRINGS).to_string()
                } else {
                    rng.pick(keys).to_string()
                };
                let val = if rng.one_in(2) {
                    edge_number(rng)
                } else {
                    json!(*rng.pick(STRINGS))
                };
                o.insert(k, val);
            }
            Value::Array(a) => {
                let extra = match a.first() {
                    Some(x) if rng.one_in(2) => x.clone(),
                    _ => edge_number(rng),
                };
                for _ in 0..1 + rng.below(3) {
                    a.push(extra.clone());
                }
            }
            _ => *node = json!([node.clone()]),
        },
        6 => match node {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                *node = json!(*rng.pick(&[-f, f + 1.0, f - 1.0, f * 1e10, f / 3.0, f.trunc()]));
            }
            Value::Bool(b) => *node = json!(!*b),
            Value::String(s) => {
                let mut b = s.clone().into_bytes();
                mutate_bytes(&mut b, rng, &[]);
                *node = json!(String::from_utf8_lossy(&b));
            }
            _ => *node = edge_number(rng),
        },
        7 => *node = Value::String(node.to_string()),
        8 => *node = json!({ "x": node.clone() }),
        9 => {
            if let Value::String(s) = node {
                let n = 1 << rng.below(14);
                *s = s.repeat(n.min(MAX_INPUT / (s.len() + 1)));
            }
        }
        10 => *node = Value::Null,
        // Numbers anywhere below, deep fields included, set to extremes.
        11 => extreme_numbers(node, rng),
        _ => *node = json!(*rng.pick(&[true, false])),
    }
}
