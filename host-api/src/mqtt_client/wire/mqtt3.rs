//! MQTT 3.1.1 packets: [`Out`] to rumqttc's `v4` types, and back to [`In`].

use rumqttc::mqttbytes::v4;

use super::{from_level, level, refused_login, refused_subscription, Accepted, In, Out};
use crate::bindings::runner::scenario::mqtt::{Error, Qos};

/// rumqttc's QoS for `q` (every level exists in both versions: the
/// fallback is never taken).
fn to_qos(q: Qos) -> rumqttc::QoS {
    rumqttc::mqttbytes::qos(level(q)).unwrap_or(rumqttc::QoS::AtMostOnce)
}

/// The packet to write for `p`.
pub(super) fn packet(p: Out) -> v4::Packet {
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
            let mut p = v4::Publish::from_bytes(topic, to_qos(qos), payload);
            p.pkid = pkid;
            p.retain = retain;
            P::Publish(p)
        }
        Out::PubAck(id) => P::PubAck(v4::PubAck::new(id)),
        Out::PubRec(id) => P::PubRec(v4::PubRec::new(id)),
        Out::PubRel(id) => P::PubRel(v4::PubRel::new(id)),
        Out::PubComp(id) => P::PubComp(v4::PubComp::new(id)),
        Out::Subscribe { pkid, filter, qos } => {
            let mut s = v4::Subscribe::new(filter, to_qos(qos));
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

/// What a packet read means here.
pub(super) fn read(p: v4::Packet) -> In {
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
            qos: from_level(p.qos as u8),
            retain: p.retain,
        },
        P::PubAck(a) => In::PubAck(a.pkid, Ok(())),
        P::PubRec(a) => In::PubRec(a.pkid, Ok(())),
        P::PubRel(a) => In::PubRel(a.pkid),
        P::PubComp(a) => In::PubComp(a.pkid, Ok(())),
        P::SubAck(a) => In::SubAck(
            a.pkid,
            match a.return_codes.first() {
                Some(v4::SubscribeReasonCode::Success(q)) => Ok(from_level(*q as u8)),
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
