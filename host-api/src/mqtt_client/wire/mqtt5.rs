//! MQTT 5 packets: [`Out`] to rumqttc's `v5` types, and back to [`In`].

use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;

use super::{from_level, level, refused_login, refused_subscription, Accepted, In, Out};
use crate::bindings::runner::scenario::mqtt::{Error, Qos};

/// rumqttc's QoS for `q` (every level exists in both versions: the
/// fallback is never taken).
fn to_qos(q: Qos) -> m5::QoS {
    m5::qos(level(q)).unwrap_or(m5::QoS::AtMostOnce)
}

/// The packet to write for `p`; `max_in` is told to the broker.
pub(super) fn packet(p: Out, max_in: usize) -> v5::Packet {
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
            let mut p = v5::Publish::new(topic, to_qos(qos), payload, None);
            p.pkid = pkid;
            p.retain = retain;
            P::Publish(p)
        }
        Out::PubAck(id) => P::PubAck(v5::PubAck::new(id, None)),
        Out::PubRec(id) => P::PubRec(v5::PubRec::new(id, None)),
        Out::PubRel(id) => P::PubRel(v5::PubRel::new(id, None)),
        Out::PubComp(id) => P::PubComp(v5::PubComp::new(id, None)),
        Out::Subscribe { pkid, filter, qos } => {
            let mut s = v5::Subscribe::new(v5::Filter::new(filter, to_qos(qos)), None);
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

/// An MQTT 5 reason code of a failed publish, as an error.
fn refused_publish(reason: impl std::fmt::Debug, not_authorized: bool) -> Error {
    if not_authorized {
        Error::NotAuthorized("the broker refused the publish".into())
    } else {
        Error::Protocol(format!("the broker refused the publish: {reason:?}"))
    }
}

/// What a packet read means here.
pub(super) fn read(p: v5::Packet) -> In {
    use v5::ConnectReturnCode as C;
    use v5::Packet as P;
    use v5::{PubAckReason, PubCompReason, PubRecReason, SubscribeReasonCode as R};
    match p {
        P::ConnAck(a) => In::ConnAck(match a.code {
            C::Success => match a.properties {
                // MQTT 5 §3.2.2.3.3: zero is a protocol error.
                Some(p) if p.receive_max == Some(0) => {
                    return In::Invalid("a CONNACK with Receive Maximum 0")
                }
                Some(p) => Ok(Accepted {
                    keep_alive: p.server_keep_alive,
                    max_packet: p.max_packet_size,
                    receive_max: p.receive_max,
                }),
                None => Ok(Accepted::default()),
            },
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
            qos: from_level(p.qos as u8),
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
                Some(R::Success(q)) => Ok(from_level(*q as u8)),
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
