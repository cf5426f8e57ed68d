//! MQTT 3.1.1 and 5 on the wire, as one: the packets this client sends
//! and the ones it acts on, encoded and decoded by rumqttc's codecs
//! (`mqttbytes`), without rumqttc's event loop and its per-connection
//! buffers.

pub(crate) mod fuzzing;
mod mqtt3;
mod mqtt5;
#[cfg(test)]
mod tests;

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
    /// How many QoS 1 and 2 publishes it takes unacknowledged at once.
    pub receive_max: Option<u16>,
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
            let p = mqtt5::packet(p, self.max_in);
            p.write(buf, Some(max as u32)).map_err(|e| match e {
                m5::Error::OutgoingPacketTooLarge { pkt_size, .. } => too_large(pkt_size as usize),
                e => Error::InvalidArgument(e.to_string()),
            })?;
        } else {
            let p = mqtt3::packet(p);
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
                Ok(p) => Ok(Some(mqtt5::read(p))),
                Err(m5::Error::InsufficientBytes(n)) => truncated(buf, n, need),
                Err(e) => Err(malformed(e.to_string())),
            }
        } else {
            match v4::Packet::read(buf, self.max_in) {
                Ok(p) => Ok(Some(mqtt3::read(p))),
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

/// The QoS level's number, as both protocol versions encode it.
fn level(q: Qos) -> u8 {
    match q {
        Qos::AtMostOnce => 0,
        Qos::AtLeastOnce => 1,
        Qos::ExactlyOnce => 2,
    }
}

/// The QoS of a level number the codecs decoded (so at most 2).
fn from_level(n: u8) -> Qos {
    match n {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    }
}

pub(super) fn refused_login() -> Error {
    Error::NotAuthorized("the broker refused the credentials".into())
}

pub(super) fn refused_subscription() -> Error {
    Error::NotAuthorized("the broker refused the subscription".into())
}
