//! MQTT 3.1.1 and 5 on the wire, as one: the packets this client sends
//! and the ones it acts on, encoded and decoded by rumqttc's codecs
//! (`mqttbytes`), without rumqttc's event loop and its per-connection
//! buffers.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;

use crate::bindings::runner::scenario::mqtt::{Error, Qos};

/// A packet this client sends.
pub(super) enum Out {
    Connect {
        client_id: String,
        clean: bool,
        keep_alive: u16,
        login: Option<(String, String)>,
    },
    Publish {
        pkid: u16,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filter: String,
        qos: Qos,
    },
    Unsubscribe {
        pkid: u16,
        filter: String,
    },
    PingReq,
    Disconnect,
}

/// A packet received, reduced to what this client acts on.
#[derive(Debug)]
pub(super) enum In {
    /// The broker's answer to CONNECT: accepted (with what it imposes,
    /// MQTT 5), or why not.
    ConnAck(Result<Accepted, Error>),
    Publish {
        pkid: u16,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
    },
    /// A QoS 1 publish acknowledged, or refused (MQTT 5 reason codes).
    PubAck(u16, Result<(), Error>),
    /// A QoS 2 publish received by the broker, or refused.
    PubRec(u16, Result<(), Error>),
    PubRel(u16),
    PubComp(u16, Result<(), Error>),
    SubAck(u16, Result<Qos, Error>),
    UnsubAck(u16),
    PingResp,
    /// The broker ends the connection (MQTT 5), with its reason.
    Disconnect(String),
    /// Anything a client does not expect from a broker.
    Unexpected(&'static str),
    /// A packet of the right kind that breaks the protocol.
    Invalid(&'static str),
}

/// What a broker imposes when it accepts a connection (MQTT 5).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Accepted {
    /// The keep-alive to use instead of the one asked for.
    pub keep_alive: Option<u16>,
    /// The largest packet it takes.
    pub max_packet: Option<u32>,
}

/// One connection's protocol version and packet size limits.
#[derive(Clone, Copy)]
pub(super) struct Codec {
    pub v5: bool,
    /// Largest packet accepted, bytes (told to an MQTT 5 broker).
    pub max_in: usize,
    /// Largest packet sent, bytes: the broker's limit, if lower.
    pub max_out: usize,
}

impl Codec {
    /// Appends `p` to `buf`.
    pub fn encode(&self, p: Out, buf: &mut BytesMut) -> Result<(), Error> {
        let max = self.max_out;
        let too_large = |size: usize| {
            Error::InvalidArgument(format!(
                "the packet is {size} bytes, more than the {max} an MQTT packet may have here"
            ))
        };
        if self.v5 {
            let p = v5_packet(p, self.max_in);
            p.write(buf, Some(max as u32)).map_err(|e| match e {
                m5::Error::OutgoingPacketTooLarge { pkt_size, .. } => too_large(pkt_size as usize),
                e => Error::InvalidArgument(e.to_string()),
            })?;
        } else {
            let p = v4_packet(p);
            p.write(buf, max).map_err(|e| match e {
                rumqttc::mqttbytes::Error::OutgoingPacketTooLarge { pkt_size, .. } => {
                    too_large(pkt_size)
                }
                e => Error::InvalidArgument(e.to_string()),
            })?;
        }
        Ok(())
    }

    /// Takes the next whole packet off the front of `buf`: `Ok(None)` when
    /// more bytes are needed (the number, at least, in `need`).
    pub fn decode(&self, buf: &mut BytesMut, need: &mut usize) -> Result<Option<In>, Error> {
        if buf.is_empty() {
            *need = 2;
            return Ok(None);
        }
        let malformed = |e: String| Error::Protocol(format!("a malformed packet: {e}"));
        let before = buf.len();
        // rumqttc cuts a whole packet off the buffer before parsing it, and
        // reports a packet shorter than its fields say as "more bytes
        // needed": by then the packet is gone, so that is a protocol error.
        let truncated = |buf: &BytesMut, n: usize, need: &mut usize| {
            if buf.len() < before {
                Err(malformed("shorter than its fields".into()))
            } else {
                *need = n;
                Ok(None)
            }
        };
        if self.v5 {
            if let Some(p) = short_v5(buf) {
                return Ok(Some(p));
            }
            match v5::Packet::read(buf, Some(self.max_in as u32)) {
                Ok(p) => Ok(Some(from_v5(p))),
                Err(m5::Error::InsufficientBytes(n)) => truncated(buf, n, need),
                Err(e) => Err(malformed(e.to_string())),
            }
        } else {
            match v4::Packet::read(buf, self.max_in) {
                Ok(p) => Ok(Some(from_v4(p))),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(n)) => truncated(buf, n, need),
                Err(e) => Err(malformed(e.to_string())),
            }
        }
    }
}

/// MQTT 5 packets that may leave out their properties, which rumqttc's
/// reader requires: a DISCONNECT with no reason code or with only one
/// (how brokers announce a shutdown or a session taken over), and a
/// CONNACK in the 3.1.1 form (a broker refusing MQTT 5).
fn short_v5(buf: &mut BytesMut) -> Option<In> {
    match buf[..] {
        [0xE0, 0x00, ..] => {
            let _ = buf.split_to(2);
            Some(In::Disconnect("normal disconnection".into()))
        }
        [0xE0, 0x01, code, ..] => {
            let _ = buf.split_to(3);
            let reason = v5::DisconnectReasonCode::try_from(code)
                .map_or_else(|_| format!("reason code {code:#04x}"), |r| format!("{r:?}"));
            Some(In::Disconnect(reason))
        }
        [0x20, 0x02, _, code, ..] => {
            let _ = buf.split_to(4);
            Some(In::ConnAck(match code {
                0 => Err(Error::Protocol(
                    "the broker answered CONNECT in MQTT 3.1.1: connect with protocol v311".into(),
                )),
                4 | 5 | 0x86 | 0x87 => Err(refused_login()),
                code => Err(Error::ConnectionRefused(format!(
                    "the broker refused the connection: return code {code:#04x} (does it speak MQTT 5?)"
                ))),
            }))
        }
        _ => None,
    }
}

impl Codec {
    /// A codec for `v5`, before the broker has said what it takes.
    pub fn new(v5: bool, max_packet: usize) -> Self {
        Self {
            v5,
            max_in: max_packet,
            max_out: max_packet,
        }
    }
}

fn v4_qos(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn from_v4_qos(q: rumqttc::QoS) -> Qos {
    match q {
        rumqttc::QoS::AtMostOnce => Qos::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => Qos::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn v5_qos(q: Qos) -> m5::QoS {
    match q {
        Qos::AtMostOnce => m5::QoS::AtMostOnce,
        Qos::AtLeastOnce => m5::QoS::AtLeastOnce,
        Qos::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

fn from_v5_qos(q: m5::QoS) -> Qos {
    match q {
        m5::QoS::AtMostOnce => Qos::AtMostOnce,
        m5::QoS::AtLeastOnce => Qos::AtLeastOnce,
        m5::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn v4_packet(p: Out) -> v4::Packet {
    use v4::Packet as P;
    match p {
        Out::Connect {
            client_id,
            clean,
            keep_alive,
            login,
        } => {
            let mut c = v4::Connect::new(client_id);
            c.clean_session = clean;
            c.keep_alive = keep_alive;
            if let Some((u, pw)) = login {
                c.set_login(u, pw);
            }
            P::Connect(c)
        }
        Out::Publish {
            pkid,
            topic,
            payload,
            qos,
            retain,
        } => {
            let mut p = v4::Publish::from_bytes(topic, v4_qos(qos), payload);
            p.pkid = pkid;
            p.retain = retain;
            P::Publish(p)
        }
        Out::PubAck(id) => P::PubAck(v4::PubAck::new(id)),
        Out::PubRec(id) => P::PubRec(v4::PubRec::new(id)),
        Out::PubRel(id) => P::PubRel(v4::PubRel::new(id)),
        Out::PubComp(id) => P::PubComp(v4::PubComp::new(id)),
        Out::Subscribe { pkid, filter, qos } => {
            let mut s = v4::Subscribe::new(filter, v4_qos(qos));
            s.pkid = pkid;
            P::Subscribe(s)
        }
        Out::Unsubscribe { pkid, filter } => {
            let mut u = v4::Unsubscribe::new(filter);
            u.pkid = pkid;
            P::Unsubscribe(u)
        }
        Out::PingReq => P::PingReq,
        Out::Disconnect => P::Disconnect,
    }
}

fn v5_packet(p: Out, max_in: usize) -> v5::Packet {
    use v5::Packet as P;
    match p {
        Out::Connect {
            client_id,
            clean,
            keep_alive,
            login,
        } => {
            // The broker is told the largest packet taken, so it drops
            // larger ones for this client rather than breaking the
            // connection with them.
            let properties = v5::ConnectProperties {
                session_expiry_interval: None,
                receive_maximum: None,
                max_packet_size: u32::try_from(max_in).ok(),
                topic_alias_max: None,
                request_response_info: None,
                request_problem_info: None,
                user_properties: Vec::new(),
                authentication_method: None,
                authentication_data: None,
            };
            let c = v5::Connect {
                keep_alive,
                client_id,
                clean_start: clean,
                properties: Some(properties),
            };
            P::Connect(c, None, login.map(|(u, pw)| v5::Login::new(u, pw)))
        }
        Out::Publish {
            pkid,
            topic,
            payload,
            qos,
            retain,
        } => {
            let mut p = v5::Publish::new(topic, v5_qos(qos), payload, None);
            p.pkid = pkid;
            p.retain = retain;
            P::Publish(p)
        }
        Out::PubAck(id) => P::PubAck(v5::PubAck::new(id, None)),
        Out::PubRec(id) => P::PubRec(v5::PubRec::new(id, None)),
        Out::PubRel(id) => P::PubRel(v5::PubRel::new(id, None)),
        Out::PubComp(id) => P::PubComp(v5::PubComp::new(id, None)),
        Out::Subscribe { pkid, filter, qos } => {
            let mut s = v5::Subscribe::new(v5::Filter::new(filter, v5_qos(qos)), None);
            s.pkid = pkid;
            P::Subscribe(s)
        }
        Out::Unsubscribe { pkid, filter } => {
            let mut u = v5::Unsubscribe::new(filter, None);
            u.pkid = pkid;
            P::Unsubscribe(u)
        }
        Out::PingReq => P::PingReq(v5::PingReq),
        Out::Disconnect => P::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )),
    }
}

fn refused_login() -> Error {
    Error::NotAuthorized("the broker refused the credentials".into())
}

fn refused_subscription() -> Error {
    Error::NotAuthorized("the broker refused the subscription".into())
}

fn from_v4(p: v4::Packet) -> In {
    use v4::ConnectReturnCode as C;
    use v4::Packet as P;
    match p {
        P::ConnAck(a) => In::ConnAck(match a.code {
            C::Success => Ok(Accepted::default()),
            C::BadUserNamePassword | C::NotAuthorized => Err(refused_login()),
            code => Err(Error::ConnectionRefused(format!(
                "the broker refused the connection: {code:?}"
            ))),
        }),
        P::Publish(p) => In::Publish {
            pkid: p.pkid,
            topic: p.topic,
            payload: p.payload,
            qos: from_v4_qos(p.qos),
            retain: p.retain,
        },
        P::PubAck(a) => In::PubAck(a.pkid, Ok(())),
        P::PubRec(a) => In::PubRec(a.pkid, Ok(())),
        P::PubRel(a) => In::PubRel(a.pkid),
        P::PubComp(a) => In::PubComp(a.pkid, Ok(())),
        P::SubAck(a) => In::SubAck(
            a.pkid,
            match a.return_codes.first() {
                Some(v4::SubscribeReasonCode::Success(q)) => Ok(from_v4_qos(*q)),
                _ => Err(refused_subscription()),
            },
        ),
        P::UnsubAck(a) => In::UnsubAck(a.pkid),
        P::PingResp => In::PingResp,
        P::Connect(_) => In::Unexpected("CONNECT"),
        P::Subscribe(_) => In::Unexpected("SUBSCRIBE"),
        P::Unsubscribe(_) => In::Unexpected("UNSUBSCRIBE"),
        P::PingReq => In::Unexpected("PINGREQ"),
        P::Disconnect => In::Unexpected("DISCONNECT"),
    }
}

/// An MQTT 5 reason code of a failed publish, as an error.
fn refused_publish(reason: impl std::fmt::Debug, not_authorized: bool) -> Error {
    if not_authorized {
        Error::NotAuthorized("the broker refused the publish".into())
    } else {
        Error::Protocol(format!("the broker refused the publish: {reason:?}"))
    }
}

fn from_v5(p: v5::Packet) -> In {
    use v5::ConnectReturnCode as C;
    use v5::Packet as P;
    use v5::{PubAckReason, PubCompReason, PubRecReason, SubscribeReasonCode as R};
    match p {
        P::ConnAck(a) => In::ConnAck(match a.code {
            C::Success => Ok(a.properties.map_or_else(Accepted::default, |p| Accepted {
                keep_alive: p.server_keep_alive,
                max_packet: p.max_packet_size,
            })),
            C::BadUserNamePassword | C::NotAuthorized => Err(refused_login()),
            code => Err(Error::ConnectionRefused(format!(
                "the broker refused the connection: {code:?}"
            ))),
        }),
        // A topic alias, which this client never allows (it announces
        // none), leaves the topic empty.
        P::Publish(p) if p.topic.is_empty() => In::Invalid("a PUBLISH with no topic (an alias)"),
        P::Publish(p) => In::Publish {
            pkid: p.pkid,
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            qos: from_v5_qos(p.qos),
            retain: p.retain,
        },
        P::PubAck(a) => In::PubAck(
            a.pkid,
            match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                r => Err(refused_publish(r, r == PubAckReason::NotAuthorized)),
            },
        ),
        P::PubRec(a) => In::PubRec(
            a.pkid,
            match a.reason {
                PubRecReason::Success | PubRecReason::NoMatchingSubscribers => Ok(()),
                r => Err(refused_publish(r, r == PubRecReason::NotAuthorized)),
            },
        ),
        P::PubRel(a) => In::PubRel(a.pkid),
        P::PubComp(a) => In::PubComp(
            a.pkid,
            match a.reason {
                PubCompReason::Success => Ok(()),
                r => Err(Error::Protocol(format!("publish not completed: {r:?}"))),
            },
        ),
        P::SubAck(a) => In::SubAck(
            a.pkid,
            match a.return_codes.first() {
                Some(R::Success(q)) => Ok(from_v5_qos(*q)),
                Some(R::NotAuthorized) | None => Err(refused_subscription()),
                Some(other) => Err(Error::Protocol(format!(
                    "the broker refused the subscription: {other:?}"
                ))),
            },
        ),
        P::UnsubAck(a) => In::UnsubAck(a.pkid),
        P::PingResp(_) => In::PingResp,
        P::Disconnect(d) => In::Disconnect(format!("{:?}", d.reason_code)),
        P::Auth(_) => In::Unexpected("AUTH"),
        P::Connect(..) => In::Unexpected("CONNECT"),
        P::Subscribe(_) => In::Unexpected("SUBSCRIBE"),
        P::Unsubscribe(_) => In::Unexpected("UNSUBSCRIBE"),
        P::PingReq(_) => In::Unexpected("PINGREQ"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codecs() -> [Codec; 2] {
        [false, true].map(|v5| Codec::new(v5, 1 << 20))
    }

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
                c.encode(out, &mut b).expect("encode");
                valid.push(b.to_vec());
            }
            // What brokers send: CONNACK (with MQTT 5 properties), SUBACK,
            // UNSUBACK, PINGRESP.
            valid.push(vec![0x20, 0x02, 0x00, 0x00]);
            valid.push(vec![0x20, 0x06, 0x00, 0x00, 0x03, 0x13, 0x00, 0x3c]);
            valid.push(vec![0x90, 0x03, 0x00, 0x05, 0x01]);
            valid.push(vec![0x90, 0x04, 0x00, 0x05, 0x00, 0x01]);
            valid.push(vec![0xB0, 0x02, 0x00, 0x05]);
            valid.push(vec![0xD0, 0x00]);
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
                let mut buf = BytesMut::from(&bytes[..]);
                let mut need = 0;
                let mut packets = 0;
                loop {
                    let before = buf.len();
                    match c.decode(&mut buf, &mut need) {
                        Ok(Some(_)) => {
                            packets += 1;
                            decoded += 1;
                            assert!(buf.len() < before, "a packet consumed no bytes: {bytes:?}");
                        }
                        Ok(None) => {
                            assert!(need > 0, "more bytes asked for, but none: {bytes:?}");
                            assert_eq!(buf.len(), before, "waiting for more lost bytes: {bytes:?}");
                            break;
                        }
                        Err(Error::Protocol(_)) => {
                            refused += 1;
                            break;
                        }
                        Err(e) => panic!("v5={} {bytes:?}: {e:?}", c.v5),
                    }
                    assert!(packets <= bytes.len(), "{bytes:?}");
                }
            }
            // The cases reached both sides of the decoder.
            assert!(decoded > 2_000 && refused > 2_000, "{decoded} {refused}");
        }
    }
}
