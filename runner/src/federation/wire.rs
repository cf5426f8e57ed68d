//! Frames on the wire: a 4-byte big-endian length, then that many bytes
//! of JSON. Every frame is size-limited and validated; a malformed one is
//! an error naming what was wrong, and the connection that sent it is
//! closed with that reason. Nothing a peer sends can panic the other.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame either side accepts (a snapshot of a run with many
/// request names is the largest).
pub const MAX_FRAME: usize = 32 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream ended or failed.
    #[error("the connection failed: {0}")]
    Io(String),
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("a frame of {0} bytes is larger than the {MAX_FRAME} allowed")]
    TooLarge(usize),
    /// A frame that is not the JSON message expected.
    #[error("a malformed frame: {0}")]
    Malformed(String),
}

/// Writes `msg` as one frame.
pub async fn write<T: Serialize>(s: &mut quinn::SendStream, msg: &T) -> Result<(), WireError> {
    let body = serde_json::to_vec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let len = (body.len() as u32).to_be_bytes();
    s.write_all(&len)
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    s.write_all(&body)
        .await
        .map_err(|e| WireError::Io(e.to_string()))
}

/// Writes a frame whose JSON was made beforehand.
pub async fn write_raw(s: &mut quinn::SendStream, body: &[u8]) -> Result<(), WireError> {
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let len = (body.len() as u32).to_be_bytes();
    s.write_all(&len)
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    s.write_all(body)
        .await
        .map_err(|e| WireError::Io(e.to_string()))
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly before it.
pub async fn read<T: DeserializeOwned>(r: &mut quinn::RecvStream) -> Result<Option<T>, WireError> {
    Ok(read_sized(r).await?.map(|(t, _)| t))
}

/// [`read`], refusing frames over `max` bytes (before authentication).
pub async fn read_limited<T: DeserializeOwned>(
    r: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<T>, WireError> {
    Ok(read_within(r, max).await?.map(|(t, _)| t))
}

/// [`read`], with the frame's size in bytes.
pub async fn read_sized<T: DeserializeOwned>(
    r: &mut quinn::RecvStream,
) -> Result<Option<(T, usize)>, WireError> {
    read_within(r, MAX_FRAME).await
}

async fn read_within<T: DeserializeOwned>(
    r: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<(T, usize)>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(WireError::Io(e.to_string())),
    }
    let n = body_len(len, max)?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    decode_body(&body).map(|t| Some((t, n + 4)))
}

/// Frames read from a stream by a task of their own, for a loop that
/// waits on other things too. [`read`] itself must not be a branch of a
/// `select!` that loops: when another branch wins half-way through a frame
/// that spans several packets (the share of thousands of VUs), the bytes
/// read so far are lost and every later frame is read from the middle of
/// the stream. [`Frames::next`] is cancel-safe.
pub struct Frames<T> {
    rx: tokio::sync::mpsc::Receiver<Result<Option<T>, WireError>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: DeserializeOwned + Send + 'static> Frames<T> {
    /// Starts reading `recv`.
    pub fn spawn(mut recv: quinn::RecvStream) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(async move {
            loop {
                let frame = read::<T>(&mut recv).await;
                let last = !matches!(frame, Ok(Some(_)));
                if tx.send(frame).await.is_err() || last {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next frame, as [`read`] returns it; `Ok(None)` once the stream
    /// has ended.
    pub async fn next(&mut self) -> Result<Option<T>, WireError> {
        self.rx.recv().await.unwrap_or(Ok(None))
    }
}

impl<T> Drop for Frames<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// The pure half of reading, apart from the stream so that it can be
// fuzzed (tests/fuzz.rs): what a peer's bytes decode to.

/// The body length a frame's 4-byte prefix announces, refused over `max`
/// bytes before anything is allocated for it.
pub fn body_len(prefix: [u8; 4], max: usize) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > max {
        return Err(WireError::TooLarge(n));
    }
    Ok(n)
}

/// Decodes a frame's body (the JSON after its length prefix).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Decodes the frame at the start of `bytes` as [`read_limited`] and
/// [`read_sized`] read it from a stream that carried these bytes:
/// `Ok(None)` when there are none, the message and the frame's size
/// (prefix included) otherwise; a frame cut short is an
/// [`WireError::Io`] error, as on a stream that ends inside it. Bytes
/// after the frame are left alone.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, WireError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(WireError::Io(format!(
            "the stream ended {} bytes into a frame's length",
            bytes.len()
        )));
    };
    let n = body_len(*prefix, max)?;
    let body = rest.get(..n).ok_or_else(|| {
        WireError::Io(format!(
            "the stream ended {} bytes into a frame of {n}",
            rest.len()
        ))
    })?;
    decode_body(body).map(|t| Some((t, n + 4)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::federation::tls::{client_config, Identity, Trust};

    /// A QUIC connection over loopback: (the server's end, the client's).
    async fn pair() -> (quinn::Connection, quinn::Connection) {
        let id = Identity::generate().expect("identity");
        let server = quinn::Endpoint::server(
            id.server_config().expect("server config"),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .expect("server");
        let addr = server.local_addr().expect("addr");
        let mut client =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        client.set_default_client_config(
            client_config(&Trust::Pinned(id.fingerprint)).expect("client config"),
        );
        let name = Trust::Pinned(id.fingerprint).server_name(&addr.to_string());
        let (accepted, connected) = tokio::join!(
            async {
                server
                    .accept()
                    .await
                    .expect("incoming")
                    .await
                    .expect("accept")
            },
            async {
                client
                    .connect(addr, &name)
                    .expect("connect")
                    .await
                    .expect("connected")
            }
        );
        (accepted, connected)
    }

    #[tokio::test]
    async fn a_frame_that_arrives_in_pieces_survives_a_loop_that_waits_on_a_timer() {
        let (server, client) = pair().await;
        let big: Vec<u32> = (0..200_000).collect();
        let writer = tokio::spawn(async move {
            let mut send = server.open_uni().await.expect("open");
            let body = serde_json::to_vec(&big).expect("json");
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            // In pieces, with pauses longer than the reader's timer.
            for piece in frame.chunks(frame.len() / 8 + 1) {
                send.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            write(&mut send, &vec![7u32]).await.expect("write");
            send.finish().expect("finish");
            let _ = send.stopped().await;
            server
        });
        let recv = client.accept_uni().await.expect("accept");
        let mut frames = Frames::<Vec<u32>>::spawn(recv);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut got = Vec::new();
        let mut ticks = 0;
        loop {
            tokio::select! {
                f = frames.next() => match f.expect("a whole frame") {
                    Some(v) => got.push(v),
                    None => break,
                },
                _ = tick.tick() => ticks += 1,
            }
        }
        assert!(ticks > 10, "the timer won many times mid-frame: {ticks}");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), 200_000);
        assert_eq!(got[0][199_999], 199_999);
        assert_eq!(got[1], vec![7]);
        let _server = writer.await.expect("writer");
    }
}
