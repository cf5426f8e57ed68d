//! The client against a raw TCP server that answers from a script, byte
//! for byte, so every framing and failure can be staged.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::head::MAX_HEADERS;
use super::*;

/// What the server does after reading each request.
enum Step {
    /// Writes these bytes and keeps the connection.
    Answer(Vec<u8>),
    /// Writes these bytes and closes.
    AnswerClose(Vec<u8>),
    /// Closes without answering.
    Close,
}

/// Reads one request (head and, by content-length or chunks, its body).
async fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    if let Some(n) = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).await.ok()?;
        got.extend_from_slice(&body);
    } else if text.contains("transfer-encoding: chunked") {
        while !got.ends_with(b"0\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            got.push(byte[0]);
        }
    }
    Some(got)
}

/// A server on loopback that plays `steps` on its first connection and
/// sends every request it read to the returned channel.
async fn server(steps: Vec<Step>) -> (Conn, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for step in steps {
            let Some(req) = read_request(&mut s).await else {
                return;
            };
            let _ = tx.send(req);
            match step {
                Step::Answer(b) => s.write_all(&b).await.unwrap(),
                Step::AnswerClose(b) => {
                    s.write_all(&b).await.unwrap();
                    return;
                }
                Step::Close => return,
            }
        }
        // Holds the connection open until the client is done.
        let _ = s.read(&mut [0u8; 1]).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    (Conn::new(Io::Tcp(tcp)), rx)
}

fn get(close: bool) -> Outgoing<'static> {
    request("GET", b"", close)
}

fn request(method: &str, body: &'static [u8], close: bool) -> Outgoing<'static> {
    let mut headers = Vec::new();
    if close {
        headers.push((
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        ));
    }
    let enc = encode_head(method, "/p?q=1", "example.test:80", &headers, body.len()).unwrap();
    Outgoing {
        head: enc.head,
        body,
        chunked: enc.chunked,
        head_only: method == "HEAD",
        close: enc.close,
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn exchange(c: &mut Conn, r: &Outgoing<'_>) -> Result<Response, Error> {
    c.exchange(r, 1 << 20, false)
        .await
        .map_err(Failure::into_error)
}

fn protocol_error(r: Result<Response, Error>, words: &str) {
    match r {
        Err(Error::Protocol(m)) => assert!(m.contains(words), "{m}"),
        Err(e) => panic!("expected a protocol error with {words:?}, got {e:?}"),
        Ok(r) => panic!("expected a protocol error, got status {}", r.status),
    }
}

#[tokio::test]
async fn keep_alive_carries_requests_one_after_another() {
    let (mut c, mut rx) = server(vec![Step::Answer(ok("one")), Step::Answer(ok("two!"))]).await;
    let a = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!(
        (a.status, a.body.as_slice(), a.reusable),
        (200, &b"one"[..], true)
    );
    assert_eq!(a.headers.get("content-length").as_deref(), Some("3"));
    let b = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!((b.body.as_slice(), b.body_size), (&b"two!"[..], 4));
    let first = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert_eq!(
        first, "GET /p?q=1 HTTP/1.1\r\nhost: example.test:80\r\n\r\n",
        "a GET with no body carries no content-length"
    );
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\
        Expires: never\r\n\r\n";
    let (mut c, _rx) = server(vec![Step::Answer(answer.to_vec()), Step::Answer(ok("x"))]).await;
    let a = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!(a.body, b"Wikipedia in\r\n\r\nchunks.");
    assert!(a.reusable);
    // The trailer was consumed: the next answer parses from its start.
    let b = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!(b.body, b"x");
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close() {
    let answer = b"HTTP/1.1 200 OK\r\nServer: old\r\n\r\nall of this".to_vec();
    let (mut c, _rx) = server(vec![Step::AnswerClose(answer)]).await;
    let a = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!(
        (a.body.as_slice(), a.reusable),
        (&b"all of this"[..], false)
    );
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let answer = [
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"[..],
        &ok("done"),
    ]
    .concat();
    let (mut c, _rx) = server(vec![Step::Answer(answer)]).await;
    let a = exchange(&mut c, &request("POST", b"data", false))
        .await
        .unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"done"[..]));
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_they_say() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
    let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n".to_vec();
    let not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n".to_vec();
    let steps = vec![
        Step::Answer(head),
        Step::Answer(no_content),
        Step::Answer(not_modified),
        Step::Answer(ok("after")),
    ];
    let (mut c, _rx) = server(steps).await;
    let a = exchange(&mut c, &request("HEAD", b"", false))
        .await
        .unwrap();
    assert_eq!((a.status, a.body_size, a.reusable), (200, 0, true));
    let b = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!((b.status, b.body_size), (204, 0));
    let d = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!((d.status, d.body_size), (304, 0));
    let e = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!(e.body, b"after");
}

#[tokio::test]
async fn lengths_that_disagree_are_refused() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(answer)]).await;
    protocol_error(exchange(&mut c, &get(false)).await, "two different");
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(answer)]).await;
    protocol_error(exchange(&mut c, &get(false)).await, "not a number");
    // The same length twice is one length.
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nab".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(answer)]).await;
    assert_eq!(exchange(&mut c, &get(false)).await.unwrap().body, b"ab");
}

#[tokio::test]
async fn both_framings_end_the_connection() {
    let answer =
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            .to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(answer)]).await;
    let a = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!((a.body.as_slice(), a.reusable), (&b"ok"[..], false));
}

#[tokio::test]
async fn heads_past_the_limits_are_refused() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let (mut c, _rx) = server(vec![Step::Answer(many)]).await;
    protocol_error(exchange(&mut c, &get(false)).await, "headers");

    // Fewer than the limit but more than fit on the stack: fine.
    let mut some = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..100 {
        some.extend_from_slice(format!("x-h{i}: v{i}\r\n").as_bytes());
    }
    some.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let (mut c, _rx) = server(vec![Step::Answer(some)]).await;
    let a = exchange(&mut c, &get(false)).await.unwrap();
    assert_eq!(a.headers.get("x-h99").as_deref(), Some("v99"));
    assert_eq!(a.headers.all().len(), 101);

    let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let (mut c, _rx) = server(vec![Step::Answer(huge.into_bytes())]).await;
    protocol_error(exchange(&mut c, &get(false)).await, "KiB");
}

#[tokio::test]
async fn bodies_past_the_limit_are_refused() {
    let steps = vec![Step::Answer(ok(&"z".repeat(100)))];
    let (mut c, _rx) = server(steps).await;
    let r = c.exchange(&get(false), 99, false).await;
    assert!(matches!(
        r.map_err(Failure::into_error),
        Err(Error::BodyTooLarge(99))
    ));

    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(chunked)]).await;
    let r = c.exchange(&get(false), 63, false).await;
    assert!(matches!(
        r.map_err(Failure::into_error),
        Err(Error::BodyTooLarge(63))
    ));
}

#[tokio::test]
async fn a_discarded_body_is_counted_not_kept() {
    let (mut c, _rx) = server(vec![Step::Answer(ok(&"z".repeat(5000)))]).await;
    let a = c.exchange(&get(false), 1 << 20, true).await.ok().unwrap();
    assert_eq!((a.body.len(), a.body_size, a.reusable), (0, 5000, true));
}

#[tokio::test]
async fn a_close_before_any_answer_may_be_retried_a_cut_body_may_not() {
    let (mut c, _rx) = server(vec![Step::Answer(ok("a")), Step::Close]).await;
    exchange(&mut c, &get(false)).await.unwrap();
    assert!(matches!(
        c.exchange(&get(false), 1 << 20, false).await,
        Err(Failure::Closed(Error::ConnectionReset(_)))
    ));

    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf".to_vec();
    let (mut c, _rx) = server(vec![Step::AnswerClose(cut)]).await;
    match c.exchange(&get(false), 1 << 20, false).await {
        Err(Failure::Failed(Error::ConnectionReset(m))) => assert!(m.contains("body"), "{m}"),
        _ => panic!("a cut body must fail, and not as retryable"),
    }
}

#[tokio::test]
async fn connections_that_cannot_carry_another_request_are_not_kept() {
    let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(close)]).await;
    assert!(!exchange(&mut c, &get(false)).await.unwrap().reusable);

    let old = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(old)]).await;
    assert!(!exchange(&mut c, &get(false)).await.unwrap().reusable);

    let old_alive =
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\na".to_vec();
    let (mut c, _rx) = server(vec![Step::Answer(old_alive)]).await;
    assert!(exchange(&mut c, &get(false)).await.unwrap().reusable);

    // The scenario asked to close.
    let (mut c, mut rx) = server(vec![Step::Answer(ok("a"))]).await;
    assert!(!exchange(&mut c, &get(true)).await.unwrap().reusable);
    let req = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(req.contains("connection: close\r\n"), "{req}");

    // Bytes past the answer: the next answer could not be told apart.
    let extra = [ok("a"), b"HTTP/1.1 200 OK\r\n".to_vec()].concat();
    let (mut c, _rx) = server(vec![Step::Answer(extra)]).await;
    assert!(!exchange(&mut c, &get(false)).await.unwrap().reusable);
}

#[tokio::test]
async fn request_bodies_go_out_framed() {
    let (mut c, mut rx) = server(vec![Step::Answer(ok("")), Step::Answer(ok(""))]).await;
    exchange(&mut c, &request("POST", b"", false))
        .await
        .unwrap();
    let big: &'static [u8] = Box::leak(vec![b'b'; COALESCE + 10].into_boxed_slice());
    exchange(&mut c, &request("PUT", big, false)).await.unwrap();
    let empty_post = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(
        empty_post.ends_with("content-length: 0\r\n\r\n"),
        "{empty_post}"
    );
    let put = rx.recv().await.unwrap();
    let expect = format!("content-length: {}\r\n\r\n", big.len());
    assert!(
        put.ends_with(big),
        "a body larger than one write arrives whole"
    );
    assert!(String::from_utf8_lossy(&put).contains(&expect));
}

#[tokio::test]
async fn a_chunked_request_body_goes_out_as_one_chunk() {
    let (mut c, mut rx) = server(vec![Step::Answer(ok("k"))]).await;
    let te = [(
        hyper::header::TRANSFER_ENCODING,
        hyper::header::HeaderValue::from_static("chunked"),
    )];
    let enc = encode_head("POST", "/", "h", &te, 5).unwrap();
    let out = Outgoing {
        head: enc.head,
        body: b"hello",
        chunked: enc.chunked,
        head_only: false,
        close: false,
    };
    exchange(&mut c, &out).await.unwrap();
    let req = String::from_utf8(rx.recv().await.unwrap()).unwrap();
    assert!(
        req.ends_with("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{req}"
    );
    assert!(!req.contains("content-length"), "{req}");
}

#[test]
fn request_heads_keep_the_scenarios_host_and_check_its_framing() {
    use hyper::header::{HeaderName, HeaderValue};
    let h = |k: &'static str, v: &'static str| {
        (HeaderName::from_static(k), HeaderValue::from_static(v))
    };
    let enc = encode_head("GET", "/", "default:1", &[h("host", "mine")], 0).unwrap();
    let text = String::from_utf8(enc.head).unwrap();
    assert_eq!(text, "GET / HTTP/1.1\r\nhost: mine\r\n\r\n");

    let enc = encode_head("POST", "/", "h", &[h("content-length", "3")], 3).unwrap();
    assert_eq!(
        String::from_utf8(enc.head)
            .unwrap()
            .matches("content-length")
            .count(),
        1
    );

    let bad = |hs: &[(HeaderName, HeaderValue)], len| match encode_head("POST", "/", "h", hs, len) {
        Err(Error::InvalidRequest(m)) => m,
        _ => panic!("expected an invalid request"),
    };
    assert!(bad(&[h("content-length", "4")], 3).contains("does not match"));
    assert!(bad(&[h("content-length", "x")], 3).contains("not a number"));
    assert!(bad(&[h("transfer-encoding", "gzip")], 3).contains("only chunked"));
    let both = [h("transfer-encoding", "chunked"), h("content-length", "3")];
    assert!(bad(&both, 3).contains("keep one"));
}
