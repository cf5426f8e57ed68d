//! MQTT 3.1.1 and 5 as one: rumqttc's two APIs' events, QoS levels and
//! errors translated to this crate's.

use crate::messaging::stamp_latency;
use rumqttc::v5;

use super::Inbound;
use crate::bindings::runner::scenario::mqtt::{Error, Qos};

/// An event of either protocol version, reduced to what matters here.
pub(super) enum Ev {
    OutPublish(u16),
    OutSubscribe(u16),
    OutUnsubscribe(u16),
    OutDisconnect,
    /// A QoS 1 or 2 publish completed (PUBACK or PUBCOMP), or was refused.
    Acked(u16, Result<(), Error>),
    SubAck(u16, Result<Qos, Error>),
    UnsubAck(u16),
    Message(Inbound),
    /// The broker ended the connection.
    Closed(Error),
    Other,
}

pub(super) fn v4_qos(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

pub(super) fn from_v4_qos(q: rumqttc::QoS) -> Qos {
    match q {
        rumqttc::QoS::AtMostOnce => Qos::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => Qos::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

pub(super) fn v5_qos(q: Qos) -> v5::mqttbytes::QoS {
    match q {
        Qos::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        Qos::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        Qos::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

pub(super) fn from_v5_qos(q: v5::mqttbytes::QoS) -> Qos {
    match q {
        v5::mqttbytes::QoS::AtMostOnce => Qos::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => Qos::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

pub(super) fn outgoing(o: rumqttc::Outgoing) -> Ev {
    use rumqttc::Outgoing as O;
    match o {
        O::Publish(p) => Ev::OutPublish(p),
        O::Subscribe(p) => Ev::OutSubscribe(p),
        O::Unsubscribe(p) => Ev::OutUnsubscribe(p),
        O::Disconnect => Ev::OutDisconnect,
        _ => Ev::Other,
    }
}

pub(super) fn v4_event(ev: rumqttc::Event) -> Ev {
    use rumqttc::{Event as E, Packet as P, SubscribeReasonCode as R};
    match ev {
        E::Outgoing(o) => outgoing(o),
        E::Incoming(P::PubAck(a)) => Ev::Acked(a.pkid, Ok(())),
        E::Incoming(P::PubComp(a)) => Ev::Acked(a.pkid, Ok(())),
        E::Incoming(P::SubAck(a)) => {
            let granted = match a.return_codes.first() {
                Some(R::Success(q)) => Ok(from_v4_qos(*q)),
                _ => Err(Error::NotAuthorized(
                    "the broker refused the subscription".into(),
                )),
            };
            Ev::SubAck(a.pkid, granted)
        }
        E::Incoming(P::UnsubAck(a)) => Ev::UnsubAck(a.pkid),
        E::Incoming(P::Publish(p)) => Ev::Message(Inbound {
            latency: stamp_latency(&p.payload),
            topic: p.topic,
            payload: p.payload,
            qos: from_v4_qos(p.qos),
            retain: p.retain,
        }),
        E::Incoming(_) => Ev::Other,
    }
}

pub(super) fn v5_event(ev: v5::Event) -> Ev {
    use v5::mqttbytes::v5::Packet as P;
    use v5::mqttbytes::v5::{PubAckReason, PubCompReason, SubscribeReasonCode as R};
    use v5::Event as E;
    match ev {
        E::Outgoing(o) => outgoing(o),
        E::Incoming(P::PubAck(a)) => {
            let r = match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                PubAckReason::NotAuthorized => Err(Error::NotAuthorized(
                    "the broker refused the publish".into(),
                )),
                other => Err(Error::Protocol(format!(
                    "the broker refused the publish: {other:?}"
                ))),
            };
            Ev::Acked(a.pkid, r)
        }
        E::Incoming(P::PubComp(a)) => {
            let r = match a.reason {
                PubCompReason::Success => Ok(()),
                other => Err(Error::Protocol(format!("publish not completed: {other:?}"))),
            };
            Ev::Acked(a.pkid, r)
        }
        E::Incoming(P::SubAck(a)) => {
            let granted = match a.return_codes.first() {
                Some(R::Success(q)) => Ok(from_v5_qos(*q)),
                Some(R::NotAuthorized) | None => Err(Error::NotAuthorized(
                    "the broker refused the subscription".into(),
                )),
                Some(other) => Err(Error::Protocol(format!(
                    "the broker refused the subscription: {other:?}"
                ))),
            };
            Ev::SubAck(a.pkid, granted)
        }
        E::Incoming(P::UnsubAck(a)) => Ev::UnsubAck(a.pkid),
        E::Incoming(P::Publish(p)) => Ev::Message(Inbound {
            latency: stamp_latency(&p.payload),
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            qos: from_v5_qos(p.qos),
            retain: p.retain,
        }),
        E::Incoming(P::Disconnect(d)) => Ev::Closed(Error::Disconnected(format!(
            "the broker disconnected: {:?}",
            d.reason_code
        ))),
        E::Incoming(_) => Ev::Other,
    }
}

pub(super) fn io_error(e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Error::ConnectionRefused(e.to_string()),
        K::TimedOut => Error::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Error::Disconnected(format!("the broker closed the connection: {e}"))
        }
        _ => Error::Io(e.to_string()),
    }
}

pub(super) fn v4_error(e: rumqttc::ConnectionError) -> Error {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E};
    match e {
        E::Io(io) => io_error(&io),
        E::NetworkTimeout | E::FlushTimeout => Error::Timeout,
        E::Tls(t) => Error::Tls(t.to_string()),
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            Error::NotAuthorized("the broker refused the credentials".into())
        }
        E::ConnectionRefused(code) => {
            Error::ConnectionRefused(format!("the broker refused the connection: {code:?}"))
        }
        E::MqttState(s) => match s {
            rumqttc::StateError::Io(io)
            | rumqttc::StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)) => {
                io_error(&io)
            }
            rumqttc::StateError::ConnectionAborted => {
                Error::Disconnected("the broker closed the connection".into())
            }
            s => Error::Protocol(s.to_string()),
        },
        E::NotConnAck(p) => Error::Protocol(format!("expected CONNACK, got {p:?}")),
        E::RequestsDone => Error::Disconnected("the connection closed".into()),
    }
}

pub(super) fn v5_error(e: v5::ConnectionError) -> Error {
    use v5::mqttbytes::v5::ConnectReturnCode as C;
    use v5::ConnectionError as E;
    match e {
        E::Io(io) => io_error(&io),
        E::Timeout(_) => Error::Timeout,
        E::Tls(t) => Error::Tls(t.to_string()),
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            Error::NotAuthorized("the broker refused the credentials".into())
        }
        E::ConnectionRefused(code) => {
            Error::ConnectionRefused(format!("the broker refused the connection: {code:?}"))
        }
        E::MqttState(s) => match s {
            v5::StateError::Io(io)
            | v5::StateError::Deserialization(v5::mqttbytes::Error::Io(io)) => io_error(&io),
            v5::StateError::ConnectionAborted => {
                Error::Disconnected("the broker closed the connection".into())
            }
            s => Error::Protocol(s.to_string()),
        },
        E::NotConnAck(p) => Error::Protocol(format!("expected CONNACK, got {p:?}")),
        E::RequestsDone => Error::Disconnected("the connection closed".into()),
    }
}
