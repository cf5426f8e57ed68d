//! The broker-facing decoder under fuzzing: valid seeds of what brokers
//! send, and the check every input must pass. The bounded run in
//! `tests.rs` and the libFuzzer target (`tests/fuzz/fuzz_targets/mqtt.rs`)
//! share both.

use super::*;

/// Both protocol versions, with the 1 MiB packet limit VUs connect with.
pub(super) fn codecs() -> [Codec; 2] {
    [false, true].map(|v5| Codec::new(v5, 1 << 20))
}

/// Valid packets for `c`: what this client sends (which brokers echo in
/// form), and what brokers send: CONNACK (with MQTT 5 properties),
/// SUBACK, UNSUBACK, PINGRESP.
pub(super) fn seeds(c: &Codec) -> Vec<Vec<u8>> {
    let mut valid = Vec::new();
    for out in [
        Out::Publish {
            pkid: 3,
            topic: "t/x".into(),
            payload: Bytes::from_static(b"payload"),
            qos: Qos::ExactlyOnce,
            retain: false,
        },
        Out::PubAck(1),
        Out::PubRec(2),
        Out::PubRel(3),
        Out::PubComp(4),
        Out::Subscribe {
            pkid: 5,
            filter: "a/#".into(),
            qos: Qos::AtLeastOnce,
        },
        Out::PingReq,
        Out::Disconnect,
    ] {
        let mut b = BytesMut::new();
        if c.encode(out, &mut b).is_ok() {
            valid.push(b.to_vec());
        }
    }
    valid.push(vec![0x20, 0x02, 0x00, 0x00]);
    valid.push(vec![0x20, 0x06, 0x00, 0x00, 0x03, 0x13, 0x00, 0x3c]);
    valid.push(vec![0x90, 0x03, 0x00, 0x05, 0x01]);
    valid.push(vec![0x90, 0x04, 0x00, 0x05, 0x00, 0x01]);
    valid.push(vec![0xB0, 0x02, 0x00, 0x05]);
    valid.push(vec![0xD0, 0x00]);
    valid
}

/// What decoding `bytes` as a stream from the broker came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    /// Whole packets taken off the stream.
    pub packets: usize,
    /// Whether the stream ended in a protocol error.
    pub refused: bool,
}

/// Decodes `bytes` as the broker's stream, packet after packet, and
/// panics on anything but progress, a clean wait for more, or a protocol
/// error: no packet may consume nothing, waiting may lose no byte, and no
/// error may be of another kind.
pub(super) fn check(c: &Codec, bytes: &[u8]) -> Outcome {
    let mut buf = BytesMut::from(bytes);
    let mut need = 0;
    let mut out = Outcome::default();
    loop {
        let before = buf.len();
        match c.decode(&mut buf, &mut need) {
            Ok(Some(_)) => {
                out.packets += 1;
                assert!(buf.len() < before, "a packet consumed no bytes: {bytes:?}");
            }
            Ok(None) => {
                assert!(need > 0, "more bytes asked for, but none: {bytes:?}");
                assert_eq!(buf.len(), before, "waiting for more lost bytes: {bytes:?}");
                return out;
            }
            Err(Error::Protocol(_)) => {
                out.refused = true;
                return out;
            }
            Err(e) => panic!("v5={} {bytes:?}: {e:?}", c.v5),
        }
        assert!(out.packets <= bytes.len(), "{bytes:?}");
    }
}

/// [`check`] of `data` with both protocol versions.
pub(crate) fn from_broker(data: &[u8]) {
    for c in codecs() {
        check(&c, data);
    }
}

/// [`seeds`] of both protocol versions.
pub(crate) fn all_seeds() -> Vec<Vec<u8>> {
    codecs().iter().flat_map(seeds).collect()
}
