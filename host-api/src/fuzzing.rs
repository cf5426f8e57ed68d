//! Entry points for the libFuzzer targets in `tests/fuzz/`, over decoders
//! this crate keeps private. Hidden from the docs: not an interface to
//! build on.

use crate::mqtt_client::fuzzing;

/// Decodes `data` as the byte stream an MQTT broker (or anything at its
/// address) sent, as MQTT 3.1.1 and as MQTT 5. Panics if the decoder
/// does anything but take whole packets, wait for more bytes without
/// losing any, or refuse the stream with a protocol error.
pub fn mqtt_from_broker(data: &[u8]) {
    fuzzing::from_broker(data);
}

/// Valid packets of both MQTT versions, to seed a corpus.
pub fn mqtt_seeds() -> Vec<Vec<u8>> {
    fuzzing::all_seeds()
}
