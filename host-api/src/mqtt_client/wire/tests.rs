//! The codec: whole packets only, every malformed frame an error.
use super::fuzzing::{check, codecs, seeds};
use super::*;

/// A packet split anywhere decodes only once whole, and then exactly.
#[test]
fn packets_decode_only_when_whole() {
    for c in codecs() {
        let mut whole = BytesMut::new();
        let out = Out::Publish {
            pkid: 7,
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: Qos::AtLeastOnce,
            retain: true,
        };
        c.encode(out, &mut whole).expect("encode");
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            let mut need = 0;
            assert!(c.decode(&mut part, &mut need).expect("partial").is_none());
            assert!(need > 0, "v5={} cut={cut}", c.v5);
        }
        let mut need = 0;
        let p = c.decode(&mut whole, &mut need).expect("decode");
        match p {
            Some(In::Publish {
                pkid: 7,
                topic,
                payload,
                qos: Qos::AtLeastOnce,
                retain: true,
            }) => {
                assert_eq!(topic, "a/b");
                assert_eq!(&payload[..], b"hello");
            }
            other => panic!("v5={}: {other:?}", c.v5),
        }
        assert!(whole.is_empty());
    }
}

/// Garbage from a broker is a protocol error, never a panic; a packet
/// over the limit is refused before it is buffered whole.
#[test]
fn malformed_and_oversized_packets_are_protocol_errors() {
    for c in codecs() {
        let mut need = 0;
        let mut junk = BytesMut::from(&[0x00u8, 0x02, 1, 2][..]);
        assert!(matches!(
            c.decode(&mut junk, &mut need),
            Err(Error::Protocol(_))
        ));
        // A PUBLISH announcing 200 MB.
        let mut big = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            c.decode(&mut big, &mut need),
            Err(Error::Protocol(_))
        ));
        let small = Codec { max_out: 64, ..c };
        let out = Out::Publish {
            pkid: 0,
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; 100]),
            qos: Qos::AtMostOnce,
            retain: false,
        };
        assert!(matches!(
            small.encode(out, &mut BytesMut::new()),
            Err(Error::InvalidArgument(_))
        ));
    }
}

/// MQTT 5 packets without their properties are read: a DISCONNECT
/// with no reason code or only one, a 3.1.1-style CONNACK; a packet
/// shorter than its fields is an error, not a wait for more bytes.
#[test]
fn short_v5_packets_are_read() {
    let c = codecs()[1];
    let mut need = 0;
    let mut b = BytesMut::from(&[0xE0u8, 0x00][..]);
    assert!(matches!(
        c.decode(&mut b, &mut need),
        Ok(Some(In::Disconnect(_)))
    ));
    let mut b = BytesMut::from(&[0xE0u8, 0x01, 0x8E, 0xD0, 0x00][..]);
    match c.decode(&mut b, &mut need) {
        Ok(Some(In::Disconnect(why))) => assert!(why.contains("SessionTakenOver"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(c.decode(&mut b, &mut need), Ok(Some(In::PingResp))),
        "the next packet"
    );
    let mut b = BytesMut::from(&[0x20u8, 0x02, 0x00, 0x01][..]);
    assert!(matches!(
        c.decode(&mut b, &mut need),
        Ok(Some(In::ConnAck(Err(Error::ConnectionRefused(_)))))
    ));
    // Accepted, but in 3.1.1: what follows would be misread.
    let mut b = BytesMut::from(&[0x20u8, 0x02, 0x00, 0x00][..]);
    assert!(matches!(
        c.decode(&mut b, &mut need),
        Ok(Some(In::ConnAck(Err(Error::Protocol(_)))))
    ));
    // A SUBACK that stops after its packet id.
    let mut b = BytesMut::from(&[0x90u8, 0x02, 0x00, 0x05][..]);
    assert!(matches!(
        c.decode(&mut b, &mut need),
        Err(Error::Protocol(_))
    ));
}

/// An MQTT 5 CONNECT tells the broker the largest packet taken.
#[test]
fn a_v5_connect_announces_the_packet_limit() {
    let c = Codec::new(true, 1 << 20);
    let mut b = BytesMut::new();
    let out = Out::Connect {
        client_id: "c".into(),
        clean: true,
        keep_alive: 60,
        login: None,
    };
    c.encode(out, &mut b).expect("encode");
    // Property 0x27 (maximum packet size), 4 bytes, 1 MiB.
    assert!(
        b.windows(5).any(|w| w == [0x27, 0x00, 0x10, 0x00, 0x00]),
        "{b:?}"
    );
}

/// Bounded fuzzing of the broker-facing decoder (the bytes a broker,
/// or anything at its address, sends): valid packets of every kind a
/// broker sends, mutated, and random bytes. Nothing may panic or
/// loop; every failure is a protocol error.
#[test]
fn the_decoder_survives_mutated_and_random_frames() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for c in codecs() {
        let valid = seeds(&c);
        let (mut decoded, mut refused) = (0u32, 0u32);
        for case in 0..20_000u32 {
            let mut bytes = if case % 4 == 0 {
                (0..next() % 64).map(|_| next() as u8).collect()
            } else {
                let mut v = valid[(next() % valid.len() as u64) as usize].clone();
                for _ in 0..=next() % 4 {
                    let i = (next() % (v.len() as u64 + 1)) as usize;
                    match next() % 3 {
                        0 if i < v.len() => v[i] = next() as u8,
                        1 => v.insert(i, next() as u8),
                        _ if i < v.len() => {
                            v.remove(i);
                        }
                        _ => {}
                    }
                }
                v
            };
            if case % 7 == 0 {
                let again = bytes.clone();
                bytes.extend(again);
            }
            let out = check(&c, &bytes);
            decoded += out.packets as u32;
            refused += u32::from(out.refused);
        }
        // The cases reached both sides of the decoder.
        assert!(decoded > 2_000 && refused > 2_000, "{decoded} {refused}");
    }
}
