//! Target 3: federation frames, and the histograms inside snapshots.

#![allow(unused_imports)]

use super::*;

#[rustfmt::skip]
pub(crate) const PROTOCOL_KEYS: &[&str] = &[
    "type", "protocol", "version", "name", "capacity", "secret", "resume", "run", "worker", "id",
    "unix_ns", "sha256", "error", "class", "indices", "last_seq", "resumed", "reason", "spec",
    "share", "lease_ms", "at_unix_ns", "command", "abort", "vus", "rate", "ramp_ms", "ms",
    "until_unix_ns", "seq", "fractions", "iterations", "snapshot", "len", "classes", "owned",
    "fraction", "max_vus", "id_offset", "id_span", "spare", "shared_iterations", "t", "interval",
    "metrics", "events", "last", "model", "active", "target_vus", "kind", "from", "to", "ramp_s",
    "message", "hello", "pong", "need", "ready", "failed", "released", "swapped", "ended",
    "welcome", "refused", "ping", "assign", "start", "control", "lease", "ack", "adopt", "release",
    "rescale", "swap", "grant", "cancel", "stop", "load", "open", "closed",
];

pub(crate) fn snapshot_seed() -> Snapshot {
    let event: runner::run::ControlEvent = serde_json::from_value(json!({
        "t": 1.5, "kind": "vus", "class": "default", "from": 2.0, "to": 4.0, "ramp_s": 0.0,
        "message": "class default: 2 → 4 VUs"
    }))
    .expect("an event decodes");
    Snapshot {
        seq: 3,
        t: 3.0,
        interval: 1.0,
        classes: vec![
            ClassState {
                name: "default".into(),
                active: 4,
                target_vus: Some(4.0),
                max_vus: 10,
                ..ClassState::default()
            },
            serde_json::from_value(json!({"name": "api", "model": "open", "active": 1,
                "target_vus": null, "rate": 20.0, "max_vus": 5}))
            .expect("a class decodes"),
        ],
        metrics: sample_metrics(),
        events: vec![event],
        last: false,
    }
}

/// A valid message of every kind each side sends, as JSON.
pub(crate) fn frame_seeds() -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
    let v = |m: &dyn erased::Json| m.value();
    let ups: Vec<Value> = vec![
        v(&Up::Hello {
            protocol: 2,
            version: "0.1.0".into(),
            name: "w1".into(),
            capacity: 1.0,
            secret: "s3cret".into(),
            resume: None,
        }),
        v(&Up::Hello {
            protocol: 2,
            version: "0.1.0".into(),
            name: "w2".into(),
            capacity: 2.5,
            secret: "s3cret".into(),
            resume: Some(Resume { run: 7, worker: 3 }),
        }),
        v(&Up::Pong {
            id: 1,
            unix_ns: 1_700_000_000_000_000_000,
        }),
        v(&Up::Need {
            run: 7,
            sha256: "ab".repeat(32),
        }),
        v(&Up::Ready { run: 7 }),
        v(&Up::Failed {
            run: 7,
            error: "no such class".into(),
        }),
        v(&Up::Released {
            run: 7,
            class: "default".into(),
            indices: vec![1, 3, 5],
        }),
        v(&Up::Swapped {
            run: 7,
            sha256: "cd".repeat(32),
            error: Some("does not link".into()),
        }),
        v(&Up::Swapped {
            run: 7,
            sha256: "cd".repeat(32),
            error: None,
        }),
        v(&Up::Ended {
            run: 7,
            last_seq: 30,
        }),
    ];
    let spec: RunSpec = serde_json::from_value(spec_seeds()[0].clone()).expect("a spec");
    let open_spec: RunSpec = serde_json::from_value(json!({
        "scenario": {"name": "api.wasm", "sha256": "ef".repeat(32), "bytes": 1},
        "options": {"rate": 10.0, "duration": "30s", "max_vus": 8}
    }))
    .expect("a spec");
    let downs: Vec<Value> = vec![
        v(&Down::Welcome {
            protocol: 2,
            version: "0.1.0".into(),
            worker: 3,
            resumed: false,
        }),
        v(&Down::Refused {
            reason: "wrong token".into(),
        }),
        v(&Down::Ping { id: 9 }),
        v(&Down::Assign {
            run: 7,
            spec: Box::new(spec),
            share: Share {
                classes: vec![ClassShare {
                    name: "default".into(),
                    owned: vec![0, 2],
                    ..ClassShare::default()
                }],
                shared_iterations: None,
            },
            lease_ms: 5000,
        }),
        v(&Down::Assign {
            run: 8,
            spec: Box::new(open_spec),
            share: Share {
                classes: vec![ClassShare {
                    name: "default".into(),
                    owned: Vec::new(),
                    fraction: 0.5,
                    vus: 1,
                    max_vus: 4,
                    id_offset: 4,
                    id_span: 8,
                    spare: 1,
                }],
                shared_iterations: Some(10),
            },
            lease_ms: 5000,
        }),
        v(&Down::Start {
            run: 7,
            at_unix_ns: 1_700_000_000_000_000_000,
        }),
        v(&Down::Control {
            run: 7,
            command: WireCommand::Stop { abort: true },
        }),
        v(&Down::Control {
            run: 7,
            command: WireCommand::Load {
                class: Some("default".into()),
                vus: Some(4),
                rate: None,
                ramp_ms: 1000,
            },
        }),
        v(&Down::Control {
            run: 7,
            command: WireCommand::Load {
                class: None,
                vus: None,
                rate: Some(12.5),
                ramp_ms: 0,
            },
        }),
        v(&Down::Lease {
            run: 7,
            ms: 5000,
            until_unix_ns: 1_700_000_005_000_000_000,
        }),
        v(&Down::Ack { run: 7, seq: 12 }),
        v(&Down::Adopt {
            run: 7,
            class: "default".into(),
            indices: vec![4, 6],
            at_unix_ns: 1_700_000_000_000_000_000,
        }),
        v(&Down::Release {
            run: 7,
            class: "default".into(),
            indices: vec![1],
        }),
        v(&Down::Rescale {
            run: 7,
            fractions: vec![("api".into(), 0.25)],
        }),
        v(&Down::Swap {
            run: 7,
            name: "v2.wasm".into(),
            sha256: "12".repeat(32),
        }),
        v(&Down::Grant {
            run: 7,
            iterations: 40,
        }),
        v(&Down::Cancel {
            run: 7,
            reason: "stopped".into(),
        }),
    ];
    let snaps = vec![
        v(&SnapshotFrame {
            run: 7,
            snapshot: snapshot_seed(),
        }),
        v(&SnapshotFrame {
            run: 7,
            snapshot: Snapshot {
                seq: 1,
                last: true,
                ..Snapshot::default()
            },
        }),
    ];
    let heads = vec![v(&ComponentHeader {
        sha256: "ab".repeat(32),
        len: 1 << 20,
    })];
    (ups, downs, snaps, heads)
}

/// Serializes any message of the protocol.
pub(crate) mod erased {
    pub trait Json {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("a message serializes")
        }
    }
}

pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Decodes `bytes` as a `T` frame of at most `max` bytes and checks the
/// outcome against what the prefix announced.
pub(crate) fn decode_checked<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Option<T> {
    let r = wire::decode::<T>(bytes, max);
    if bytes.is_empty() {
        assert!(matches!(r, Ok(None)), "an empty stream is not a clean end");
        return None;
    }
    if bytes.len() < 4 {
        assert!(
            matches!(r, Err(WireError::Io(_))),
            "a cut length is not an I/O error"
        );
        return None;
    }
    let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    match r {
        Err(WireError::TooLarge(m)) => {
            assert!(
                n > max && m == n,
                "TooLarge({m}) for a frame of {n} (max {max})"
            );
            None
        }
        _ if n > max => panic!("a frame of {n} bytes passed a limit of {max}"),
        Err(WireError::Io(_)) => {
            assert!(bytes.len() - 4 < n, "a whole frame read as cut short");
            None
        }
        _ if bytes.len() - 4 < n => panic!("a frame cut short decoded"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
        Ok(None) => panic!("a frame decoded as nothing"),
        Ok(Some((t, size))) => {
            assert_eq!(size, n + 4, "the frame's size");
            Some(t)
        }
    }
}

/// What the receiving side does with a decoded frame, short of the
/// network: an assignment is validated and planned as a worker does; a
/// snapshot is merged as the coordinator does.
pub(crate) fn after_decode(
    bytes: &[u8],
    buckets: &mut Buckets,
    rng: &mut Rng,
    fixtures: &[ScenarioOptions],
) {
    let _ = decode_checked::<Up>(bytes, MAX_HELLO);
    let _ = decode_checked::<Up>(bytes, MAX_FRAME);
    let _ = decode_checked::<ComponentHeader>(bytes, 4096);
    if let Some(Down::Assign { spec, share, .. }) = decode_checked::<Down>(bytes, MAX_FRAME) {
        if options_checks(&spec.options, fixtures) {
            if let Some(mut plan) = plan_checks(&spec.options, &fixtures[0]) {
                if let Err(e) = plan.apply(&share) {
                    assert!(!e.to_string().is_empty());
                } else {
                    let _ = (plan.local_vus(), plan.pool_vus(), plan.total_vus());
                }
            }
        }
    }
    if let Some(f) = decode_checked::<SnapshotFrame>(bytes, MAX_FRAME) {
        let s = f.snapshot;
        if !plausible_counts(&s) {
            // Known: counts near u64::MAX overflow when added up (a panic
            // with overflow checks, wrapped totals without); see
            // `peer_counts_overflow_when_merged`. The decoder itself has
            // been exercised by now.
            return;
        }
        let _ = (s.point(), s.active_vus());
        let mut twice = s.clone();
        twice.merge(&s);
        buckets.add(rng.below(4) as u32, s);
        if rng.one_in(2) {
            let _ = buckets.take().point();
        }
        if rng.one_in(64) {
            let _ = buckets.drain().map(|s| s.point());
        }
    }
}

/// Whether every count in `s` is small enough that adding up a few
/// thousand of them cannot overflow.
pub(crate) fn plausible_counts(s: &Snapshot) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.as_u64().is_none_or(|n| n < 1 << 48),
            Value::Array(a) => a.iter().all(walk),
            Value::Object(o) => o.values().all(walk),
            _ => true,
        }
    }
    walk(&serde_json::to_value(s).expect("a snapshot serializes"))
}

/// A worker's snapshot counts are added up as they come (the
/// coordinator's merge): counts near `u64::MAX`, which an authenticated
/// worker can send, used to overflow (a panic with overflow checks, a
/// wrap without). Found by `federation_frames`; merges now saturate.
#[test]
pub(crate) fn peer_counts_saturate_when_merged() {
    let mut frame = serde_json::to_value(SnapshotFrame {
        run: 7,
        snapshot: snapshot_seed(),
    })
    .expect("json");
    frame["snapshot"]["metrics"]["iterations"]["failed"] = json!(u64::MAX / 2 + 1);
    frame["snapshot"]["classes"][0]["active"] = json!(u64::MAX / 2 + 1);
    let bytes = frame_bytes(&frame);
    let (f, _) = wire::decode::<SnapshotFrame>(&bytes, MAX_FRAME)
        .expect("decodes")
        .expect("a frame");
    let mut merged = f.snapshot.clone();
    merged.merge(&f.snapshot);
    assert!(merged.metrics.iterations.failed >= f.snapshot.metrics.iterations.failed);
    assert!(merged.active_vus() >= f.snapshot.active_vus());
}

pub(crate) fn frame_bytes(v: &Value) -> Vec<u8> {
    frame(&serde_json::to_vec(v).expect("json"))
}

/// Mutates the binary of a histogram inside a snapshot's JSON, so the
/// decoder behind the base64 is reached with near-valid encodings.
pub(crate) fn mutate_histogram(v: &mut Value, rng: &mut Rng) -> bool {
    let mut hists: Vec<&mut String> = Vec::new();
    collect_hists(v, &mut hists);
    if hists.is_empty() {
        return false;
    }
    let i = rng.below(hists.len());
    let h = &mut *hists[i];
    *h = mutate_hist_text(h, rng);
    true
}

pub(crate) fn collect_hists<'a>(v: &'a mut Value, out: &mut Vec<&'a mut String>) {
    match v {
        // Every encoding starts with the V2 cookie, 0x1c8493, "HISF" or "HISS".
        Value::String(s) if s.starts_with("HIS") => out.push(s),
        Value::Array(a) => a.iter_mut().for_each(|x| collect_hists(x, out)),
        Value::Object(o) => o.values_mut().for_each(|x| collect_hists(x, out)),
        _ => {}
    }
}

pub(crate) fn mutate_hist_text(text: &str, rng: &mut Rng) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut b = b64.decode(text).unwrap_or_default();
    if rng.one_in(8) {
        let mut t = text.as_bytes().to_vec();
        mutate_bytes(&mut t, rng, &[]);
        return String::from_utf8_lossy(&t).into_owned();
    }
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            // A header field (cookie, payload length, offset, digits,
            // lowest, highest, ratio) set to an extreme.
            0 if b.len() >= 40 => {
                let at = *rng.pick(&[0usize, 4, 8, 12, 16, 20, 24, 28, 32, 36]);
                let any = rng.next() as u32;
                let x: u32 = *rng.pick(&[0, 1, 2, 3, 5, 0x7fff_ffff, u32::MAX, any]);
                b[at..at + 4].copy_from_slice(&x.to_be_bytes());
            }
            // The payload's length, so it lies about what follows.
            1 if b.len() >= 40 => {
                let len = (b.len() - 40) as u32;
                let x = *rng.pick(&[0, len.saturating_sub(1), len + 1, len.wrapping_mul(2)]);
                b[4..8].copy_from_slice(&x.to_be_bytes());
            }
            // The counts (zig-zag LEB128): a byte with its continuation
            // bit set, or appended runs.
            2 => {
                let at = 40 + rng.below(b.len().saturating_sub(40) + 1);
                let run = match rng.below(3) {
                    0 => vec![0xff; 1 + rng.below(12)],
                    1 => vec![0x80; 1 + rng.below(12)],
                    _ => {
                        let n = 1 + rng.below(16);
                        rng.bytes(n)
                    }
                };
                let at = at.min(b.len());
                b.splice(at..at, run);
            }
            _ => mutate_bytes(&mut b, rng, &[]),
        }
    }
    b64.encode(b)
}

#[test]
pub(crate) fn federation_frames() {
    let fixtures = scenario_fixtures();
    let (ups, downs, snaps, heads) = frame_seeds();
    // Every seed decodes as its own kind, reads back the same, and is
    // refused past each limit.
    for v in &ups {
        let body = serde_json::to_vec(v).expect("json");
        let f = frame(&body);
        let (up, size) = wire::decode::<Up>(&f, MAX_FRAME)
            .unwrap_or_else(|e| panic!("{v} no longer decodes: {e}"))
            .expect("a frame");
        assert_eq!(size, f.len());
        assert_eq!(&serde_json::to_value(&up).expect("json"), v);
        assert!(matches!(
            wire::decode::<Down>(&f, MAX_FRAME),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            wire::decode::<Up>(&f, body.len() - 1),
            Err(WireError::TooLarge(n)) if n == body.len()
        ));
        assert!(matches!(
            wire::decode::<Up>(&f[..f.len() - 1], MAX_FRAME),
            Err(WireError::Io(_))
        ));
        assert!(matches!(
            wire::decode::<Up>(&f[..3], MAX_FRAME),
            Err(WireError::Io(_))
        ));
    }
    for v in &downs {
        let f = frame(&serde_json::to_vec(v).expect("json"));
        let (down, _) = wire::decode::<Down>(&f, MAX_FRAME)
            .unwrap_or_else(|e| panic!("{v} no longer decodes: {e}"))
            .expect("a frame");
        assert_eq!(&serde_json::to_value(&down).expect("json"), v);
        assert!(matches!(
            wire::decode::<Up>(&f, MAX_FRAME),
            Err(WireError::Malformed(_))
        ));
    }
    for v in &snaps {
        let f = frame(&serde_json::to_vec(v).expect("json"));
        let (s, _) = wire::decode::<SnapshotFrame>(&f, MAX_FRAME)
            .unwrap_or_else(|e| panic!("{v} no longer decodes: {e}"))
            .expect("a frame");
        assert_eq!(&serde_json::to_value(&s).expect("json"), v);
    }
    let (snap, _) = wire::decode::<SnapshotFrame>(
        &frame(&serde_json::to_vec(&snaps[0]).expect("json")),
        MAX_FRAME,
    )
    .expect("decodes")
    .expect("a frame");
    assert_eq!(snap.snapshot.metrics.http_requests(), 51);
    for v in &heads {
        let f = frame(&serde_json::to_vec(v).expect("json"));
        assert!(wire::decode::<ComponentHeader>(&f, 4096)
            .expect("decodes")
            .is_some());
    }
    // A hostile length is refused before anything is read or allocated.
    for n in [MAX_FRAME as u32 + 1, u32::MAX] {
        let r = wire::decode::<SnapshotFrame>(&n.to_be_bytes(), MAX_FRAME);
        assert!(
            matches!(r, Err(WireError::TooLarge(m)) if m == n as usize),
            "{r:?}"
        );
    }
    let r = wire::decode::<Up>(&(MAX_HELLO as u32 + 1).to_be_bytes(), MAX_HELLO);
    assert!(
        matches!(r, Err(WireError::TooLarge(_))),
        "a large hello: {r:?}"
    );
    assert!(matches!(wire::decode::<Up>(b"", MAX_HELLO), Ok(None)));
    assert!(matches!(
        wire::body_len([0, 0, 0, 5], 4),
        Err(WireError::TooLarge(5))
    ));
    assert!(matches!(
        wire::decode_body::<Up>(b"{"),
        Err(WireError::Malformed(_))
    ));

    let kinds = [
        Corpus::json(ups, PROTOCOL_KEYS),
        Corpus::json(downs, PROTOCOL_KEYS),
        Corpus::json(snaps, PROTOCOL_KEYS),
        Corpus::json(heads, PROTOCOL_KEYS),
    ];
    let mut buckets = Buckets::new();
    let mut decoded = 0u64;
    let cases = fuzz("frames", 50_000, |rng| {
        let kind = rng.below(kinds.len());
        let corpus = &kinds[kind];
        let mut body = if kind == 2 && rng.one_in(4) {
            let mut v = rng.pick(&corpus.trees).clone();
            mutate_histogram(&mut v, rng);
            serde_json::to_vec(&v).expect("json")
        } else {
            corpus.input(rng)
        };
        let n = body.len() as u32;
        let prefix = match rng.below(12) {
            0 => rng.next() as u32,
            1 => n.wrapping_add(1 + rng.below(3) as u32),
            2 => n.saturating_sub(1 + rng.below(3) as u32),
            3 => *rng.pick(&[MAX_HELLO as u32 + 1, MAX_FRAME as u32 + 1, u32::MAX, 4097]),
            _ => n,
        };
        let mut bytes = prefix.to_be_bytes().to_vec();
        bytes.append(&mut body);
        match rng.below(10) {
            0 => {
                let n = 1 + rng.below(16);
                bytes.extend(rng.bytes(n));
            }
            1 => {
                let at = rng.below(bytes.len() + 1);
                bytes.truncate(at);
            }
            2 => mutate_bytes(&mut bytes, rng, &[]),
            _ => {}
        }
        note(&bytes);
        let own = match kind {
            0 => wire::decode::<Up>(&bytes, MAX_FRAME).is_ok_and(|m| m.is_some()),
            1 => wire::decode::<Down>(&bytes, MAX_FRAME).is_ok_and(|m| m.is_some()),
            2 => wire::decode::<SnapshotFrame>(&bytes, MAX_FRAME).is_ok_and(|m| m.is_some()),
            _ => wire::decode::<ComponentHeader>(&bytes, 4096).is_ok_and(|m| m.is_some()),
        };
        decoded += u64::from(own);
        after_decode(&bytes, &mut buckets, rng, &fixtures);
    });
    eprintln!("frames: {decoded} of {cases} decoded as the message they were made from");
    assert!(
        decoded > cases / 50,
        "too few frames decode ({decoded} of {cases})"
    );
}

#[test]
fn histograms_in_snapshots() {
    let seeds = histogram_seeds();
    for s in &seeds {
        let h = Hist::decode(s).unwrap_or_else(|e| panic!("an encoding does not decode: {e}"));
        assert_eq!(Hist::decode(&h.encode()).map(|b| b.count()), Ok(h.count()));
    }
    let mut valid = 0u64;
    let cases = fuzz("histograms", 20_000, |rng| {
        let i = rng.below(seeds.len());
        let text = mutate_hist_text(&seeds[i], rng);
        note(text.as_bytes());
        valid += u64::from(check_histogram(&text));
    });
    eprintln!("histograms: {valid} of {cases} mutated encodings decoded");
    assert!(valid > 0, "no mutated histogram decodes");
}

/// Encoded histograms of both kinds, full and empty.
pub fn histogram_seeds() -> Vec<String> {
    let mut micros = Hist::micros();
    let mut values = Hist::values();
    for i in 1..=1000u64 {
        micros.record(i * 37);
        values.record(i << 30);
    }
    vec![micros.encode(), values.encode(), Hist::micros().encode()]
}

/// One input of the histogram target: `text` as an encoded histogram
/// inside a snapshot. What decodes answers quantiles, encodes to what
/// decodes to the same count, and merges into both kinds. Returns
/// whether `text` decoded.
pub fn check_histogram(text: &str) -> bool {
    let h = match Hist::decode(text) {
        Err(e) => {
            assert!(!e.is_empty());
            return false;
        }
        Ok(h) => h,
    };
    let count = h.count();
    for q in [0.0, 0.5, 0.99, 1.0] {
        let _ = h.quantile(q);
    }
    let back = Hist::decode(&h.encode()).expect("a decoded histogram encodes");
    assert_eq!(back.count(), count);
    let mut m = Hist::micros();
    m.merge(&h);
    m.record(5);
    let mut v = Hist::values();
    v.merge(&h);
    v.merge(&m);
    let mut same = h.clone();
    same.merge(&h);
    true
}
