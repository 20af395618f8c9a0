//! The Connect protocol over HTTP/1.1 and h2c: codecs, unary, server-streaming and
//! client-streaming calls, and how errors are written on each.
//!
//! Only what envd needs is here: the JSON and binary protobuf codecs, no compression
//! (identity only), `Connect-Timeout-Ms`.

pub mod envelope;

use std::{future::Future, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Code, EnvdError, Result};

/// Largest single message envd accepts (Connect read limit).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A message type usable with both codecs.
pub trait Message:
    prost::Message + Default + Serialize + DeserializeOwned + Send + 'static
{
}
impl<T> Message for T where
    T: prost::Message + Default + Serialize + DeserializeOwned + Send + 'static
{
}

/// The shape of an RPC, which fixes its content types and framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unary,
    ServerStream,
    ClientStream,
}

/// The message codec chosen by the request's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    /// Picks the codec from `Content-Type` for an RPC of `kind`.
    pub fn from_headers(headers: &HeaderMap, kind: Kind) -> Result<Codec> {
        let raw = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let codec = match (kind, essence.as_str()) {
            (Kind::Unary, "application/json") => Some(Codec::Json),
            (Kind::Unary, "application/proto") => Some(Codec::Proto),
            (Kind::ServerStream | Kind::ClientStream, "application/connect+json") => {
                Some(Codec::Json)
            }
            (Kind::ServerStream | Kind::ClientStream, "application/connect+proto") => {
                Some(Codec::Proto)
            }
            _ => None,
        };
        codec.ok_or_else(|| {
            EnvdError::InvalidArgument(format!(
                "unsupported content type {raw:?} for a {} call",
                match kind {
                    Kind::Unary => "unary",
                    Kind::ServerStream => "server-streaming",
                    Kind::ClientStream => "client-streaming",
                }
            ))
        })
    }

    pub fn decode<M: Message>(self, bytes: &[u8]) -> Result<M> {
        match self {
            Codec::Json => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(M::default());
                }
                serde_json::from_slice(bytes)
                    .map_err(|e| EnvdError::InvalidArgument(format!("invalid JSON message: {e}")))
            }
            Codec::Proto => M::decode(bytes)
                .map_err(|e| EnvdError::InvalidArgument(format!("invalid protobuf message: {e}"))),
        }
    }

    pub fn encode<M: Message>(self, msg: &M) -> Result<Vec<u8>> {
        match self {
            Codec::Json => serde_json::to_vec(msg)
                .map_err(|e| EnvdError::Internal(format!("encoding a JSON message: {e}"))),
            Codec::Proto => Ok(msg.encode_to_vec()),
        }
    }

    fn content_type(self, kind: Kind) -> &'static str {
        match (kind, self) {
            (Kind::Unary, Codec::Json) => "application/json",
            (Kind::Unary, Codec::Proto) => "application/proto",
            (_, Codec::Json) => "application/connect+json",
            (_, Codec::Proto) => "application/connect+proto",
        }
    }
}

/// What every handler learns about its call besides the message.
#[derive(Debug, Clone)]
pub struct Call {
    pub codec: Codec,
    pub headers: HeaderMap,
    /// `Connect-Timeout-Ms`: the client's deadline for the whole call.
    pub timeout: Option<Duration>,
}

impl Call {
    pub fn new(codec: Codec, headers: HeaderMap) -> Result<Call> {
        let timeout = match headers.get("connect-timeout-ms") {
            None => None,
            Some(v) => {
                let ms: u64 = v
                    .to_str()
                    .ok()
                    .filter(|s| !s.is_empty() && s.len() <= 10)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        EnvdError::InvalidArgument(format!("invalid Connect-Timeout-Ms {v:?}"))
                    })?;
                (ms > 0).then(|| Duration::from_millis(ms))
            }
        };
        Ok(Call {
            codec,
            headers,
            timeout,
        })
    }

    /// A header value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn json_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error_json(err: &EnvdError) -> serde_json::Value {
    serde_json::json!({ "code": err.code().as_str(), "message": err.to_string() })
}

/// A unary error: Connect status for the code, JSON `{"code","message"}` body.
pub fn unary_error(err: &EnvdError) -> Response {
    if err.code() == Code::Internal {
        tracing::warn!(error = %err, "request failed");
    }
    json_response(
        err.code().connect_status(),
        "application/json",
        error_json(err).to_string().into_bytes(),
    )
}

/// The error for a request whose content type does not fit the procedure.
fn unsupported_media_type(err: &EnvdError) -> Response {
    let mut resp = unary_error(err);
    *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    resp
}

/// The error for a procedure this service does not have.
pub fn unknown_method(path: &str) -> Response {
    let err = EnvdError::Unimplemented(format!("unknown procedure {path}"));
    let mut resp = unary_error(&err);
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

async fn read_body(body: Body) -> Result<Bytes> {
    match Limited::new(body, MAX_MESSAGE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(EnvdError::ResourceExhausted(
            format!("request body exceeds the limit of {MAX_MESSAGE_BYTES} bytes"),
        )),
        Err(e) => Err(EnvdError::InvalidArgument(format!(
            "reading request body: {e}"
        ))),
    }
}

fn check_identity(headers: &HeaderMap, name: &str) -> Result<()> {
    match headers.get(name).map(|v| v.to_str().unwrap_or("?")) {
        None | Some("identity") | Some("") => Ok(()),
        Some(other) => Err(EnvdError::Unimplemented(format!(
            "{name} {other:?} is not supported; use identity"
        ))),
    }
}

/// Serves a unary call: decode, run `f`, encode; every failure becomes a Connect error.
pub async fn unary<Req, Resp, F, Fut>(headers: HeaderMap, body: Body, f: F) -> Response
where
    Req: Message,
    Resp: Message,
    F: FnOnce(Call, Req) -> Fut,
    Fut: Future<Output = Result<Resp>>,
{
    let codec = match Codec::from_headers(&headers, Kind::Unary) {
        Ok(c) => c,
        Err(e) => return unsupported_media_type(&e),
    };
    let result = async {
        check_identity(&headers, "content-encoding")?;
        let call = Call::new(codec, headers)?;
        let req: Req = codec.decode(&read_body(body).await?)?;
        let timeout = call.timeout;
        let fut = f(call, req);
        let resp = match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
                EnvdError::DeadlineExceeded(format!("deadline of {} ms exceeded", t.as_millis()))
            })??,
            None => fut.await?,
        };
        codec.encode(&resp)
    }
    .await;
    match result {
        Ok(bytes) => json_response(StatusCode::OK, codec.content_type(Kind::Unary), bytes),
        Err(err) => unary_error(&err),
    }
}

/// The stream of decoded messages of a client-streaming request body.
pub struct MessageStream<Req> {
    codec: Codec,
    body: axum::body::BodyDataStream,
    decoder: envelope::Decoder,
    done: bool,
    _req: std::marker::PhantomData<fn() -> Req>,
}

impl<Req: Message> MessageStream<Req> {
    fn new(codec: Codec, body: Body) -> Self {
        Self {
            codec,
            body: body.into_data_stream(),
            decoder: envelope::Decoder::new(MAX_MESSAGE_BYTES),
            done: false,
            _req: std::marker::PhantomData,
        }
    }

    /// The next message; `None` once the client has half-closed.
    pub async fn next(&mut self) -> Option<Result<Req>> {
        if self.done {
            return None;
        }
        loop {
            match self.decoder.next_frame() {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(Some(frame)) if frame.is_end_stream() => {
                    self.done = true;
                    return None;
                }
                Ok(Some(frame)) => return Some(self.codec.decode(&frame.payload)),
                Ok(None) => {}
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(EnvdError::Canceled(format!("reading request: {e}"))));
                }
                None => {
                    self.done = true;
                    if self.decoder.pending() != 0 {
                        return Some(Err(EnvdError::InvalidArgument(
                            "request body ended inside an envelope".into(),
                        )));
                    }
                    return None;
                }
            }
        }
    }
}

fn end_stream_frame(err: Option<&EnvdError>) -> Bytes {
    let body = match err {
        None => serde_json::json!({}),
        Some(err) => serde_json::json!({ "error": error_json(err) }),
    };
    envelope::encode(envelope::FLAG_END_STREAM, body.to_string().as_bytes())
}

fn stream_body<Resp, S>(codec: Codec, stream: S) -> Response
where
    Resp: Message,
    S: Stream<Item = Result<Resp>> + Send + 'static,
{
    enum St<S> {
        Open(std::pin::Pin<Box<S>>),
        Done,
    }
    let frames = futures_util::stream::unfold(St::Open(Box::pin(stream)), move |st| async move {
        let St::Open(mut inner) = st else {
            return None;
        };
        let frame = match inner.next().await {
            Some(Ok(msg)) => match codec.encode(&msg) {
                Ok(bytes) => return Some((envelope::encode(0, &bytes), St::Open(inner))),
                Err(e) => end_stream_frame(Some(&e)),
            },
            Some(Err(e)) => {
                if e.code() == Code::Internal {
                    tracing::warn!(error = %e, "stream failed");
                }
                end_stream_frame(Some(&e))
            }
            None => end_stream_frame(None),
        };
        Some((frame, St::Done))
    })
    .map(Ok::<_, std::convert::Infallible>);
    let mut resp = Response::new(Body::from_stream(frames));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.content_type(Kind::ServerStream)),
    );
    resp
}

fn stream_error(codec: Codec, err: EnvdError) -> Response {
    stream_body::<pbjson_types::Empty, _>(codec, futures_util::stream::once(async { Err(err) }))
}

/// Serves a server-streaming call: one request message in, a stream of messages out,
/// then the end-of-stream frame (with the error if the stream failed).
pub async fn server_stream<Req, Resp, F, Fut, S>(headers: HeaderMap, body: Body, f: F) -> Response
where
    Req: Message,
    Resp: Message,
    F: FnOnce(Call, Req) -> Fut,
    Fut: Future<Output = Result<S>>,
    S: Stream<Item = Result<Resp>> + Send + 'static,
{
    let codec = match Codec::from_headers(&headers, Kind::ServerStream) {
        Ok(c) => c,
        Err(e) => return unsupported_media_type(&e),
    };
    let started = async {
        check_identity(&headers, "connect-content-encoding")?;
        let call = Call::new(codec, headers)?;
        let mut messages = MessageStream::<Req>::new(codec, body);
        let req = match messages.next().await {
            Some(r) => r?,
            None => {
                return Err(EnvdError::InvalidArgument(
                    "a server-streaming call needs exactly one request message".into(),
                ))
            }
        };
        if let Some(Ok(_)) = messages.next().await {
            return Err(EnvdError::InvalidArgument(
                "a server-streaming call takes exactly one request message".into(),
            ));
        }
        f(call, req).await
    }
    .await;
    match started {
        Ok(stream) => stream_body(codec, stream),
        Err(e) => stream_error(codec, e),
    }
}

/// Serves a client-streaming call: `f` consumes the request messages and returns the one reply.
pub async fn client_stream<Req, Resp, F, Fut>(headers: HeaderMap, body: Body, f: F) -> Response
where
    Req: Message,
    Resp: Message,
    F: FnOnce(Call, MessageStream<Req>) -> Fut,
    Fut: Future<Output = Result<Resp>>,
{
    let codec = match Codec::from_headers(&headers, Kind::ClientStream) {
        Ok(c) => c,
        Err(e) => return unsupported_media_type(&e),
    };
    let result = async {
        check_identity(&headers, "connect-content-encoding")?;
        let call = Call::new(codec, headers)?;
        f(call, MessageStream::new(codec, body)).await
    }
    .await;
    match result {
        Ok(resp) => stream_body(codec, futures_util::stream::once(async { Ok(resp) })),
        Err(e) => stream_error(codec, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wrenn_proto::{filesystem, process};

    #[test]
    fn sdk_start_request_decodes() {
        let json = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"},"cwd":"/tmp"},"stdin":false}"#;
        let req: process::StartRequest = Codec::Json.decode(json).unwrap();
        let p = req.process.unwrap();
        assert_eq!(p.args, ["-l", "-c", "echo hi"]);
        assert_eq!(p.envs["A"], "1");
        assert_eq!(p.cwd.as_deref(), Some("/tmp"));
        assert_eq!(req.stdin, Some(false));
        let snake: process::SendSignalRequest = Codec::Json
            .decode(br#"{"process":{"pid":7},"signal":"SIGNAL_SIGKILL"}"#)
            .unwrap();
        assert_eq!(snake.signal, process::Signal::Sigkill as i32);
        let w: filesystem::GetWatcherEventsRequest =
            Codec::Json.decode(br#"{"watcher_id":"w-1"}"#).unwrap();
        assert_eq!(w.watcher_id, "w-1");
    }

    #[test]
    fn timestamps_encode_as_rfc3339() {
        let entry = filesystem::EntryInfo {
            modified_time: Some(wrenn_proto::wkt::Timestamp {
                seconds: 1_795_000_000,
                nanos: 5,
            }),
            size: 12,
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&Codec::Json.encode(&entry).unwrap()).unwrap();
        let t = v["modifiedTime"].as_str().expect("RFC 3339 string");
        assert!(t.starts_with("2026-") && t.ends_with('Z'), "{t}");
        assert_eq!(v["size"], "12");
    }

    #[test]
    fn bad_messages_are_invalid_argument() {
        for bad in [
            &b"{"[..],
            b"[1]",
            b"{\"process\":{\"pid\":\"x\"}}",
            b"\xff\xfe",
        ] {
            let r: Result<process::ConnectRequest> = Codec::Json.decode(bad);
            assert!(matches!(r, Err(EnvdError::InvalidArgument(_))), "{bad:?}");
        }
        let r: Result<process::ConnectRequest> = Codec::Proto.decode(b"\x0a\x05ab");
        assert!(matches!(r, Err(EnvdError::InvalidArgument(_))));
    }

    proptest! {
        #[test]
        fn json_decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Codec::Json.decode::<process::StartRequest>(&data);
            let _ = Codec::Json.decode::<filesystem::WatchDirRequest>(&data);
            let _ = Codec::Proto.decode::<process::StreamInputRequest>(&data);
            let _ = Codec::Proto.decode::<filesystem::EntryInfo>(&data);
        }

        /// What envd encodes it decodes back, in both codecs (the SDK's messages).
        #[test]
        fn start_requests_round_trip(
            cmd in ".{0,16}",
            args in proptest::collection::vec(".{0,8}", 0..4),
            envs in proptest::collection::hash_map(".{1,8}", ".{0,8}", 0..4),
            cwd in proptest::option::of(".{0,12}"),
            tag in proptest::option::of(".{0,8}"),
            stdin in proptest::option::of(any::<bool>()),
            size in proptest::option::of((any::<u32>(), any::<u32>())),
        ) {
            let req = process::StartRequest {
                process: Some(process::ProcessConfig { cmd, args, envs, cwd }),
                pty: size.map(|(rows, cols)| process::Pty { size: Some(process::pty::Size { rows, cols }) }),
                tag,
                stdin,
            };
            for codec in [Codec::Json, Codec::Proto] {
                let bytes = codec.encode(&req).unwrap();
                let back: process::StartRequest = codec.decode(&bytes).unwrap();
                prop_assert_eq!(&back, &req);
            }
        }

        #[test]
        fn directory_listings_round_trip(
            entries in proptest::collection::vec((".{0,12}", ".{0,24}", any::<i64>(), any::<u32>(), any::<i64>(), 0i32..1_000_000_000), 0..6),
        ) {
            let resp = filesystem::ListDirResponse {
                entries: entries
                    .into_iter()
                    .map(|(name, path, size, mode, secs, nanos)| filesystem::EntryInfo {
                        name,
                        path,
                        size,
                        mode,
                        // RFC 3339 covers years 1..=9999.
                        modified_time: Some(wrenn_proto::wkt::Timestamp { seconds: secs.rem_euclid(253_402_300_799), nanos }),
                        ..Default::default()
                    })
                    .collect(),
            };
            for codec in [Codec::Json, Codec::Proto] {
                let bytes = codec.encode(&resp).unwrap();
                let back: filesystem::ListDirResponse = codec.decode(&bytes).unwrap();
                prop_assert_eq!(&back, &resp);
            }
        }

        #[test]
        fn json_shaped_input_never_panics(s in r#"\{("[a-zA-Z_]{1,12}":(-?[0-9]{1,20}|"[^"\\]{0,8}"|\{\}|\[\]|true|null),?){0,4}\}"#) {
            let _ = Codec::Json.decode::<process::StartRequest>(s.as_bytes());
            let _ = Codec::Json.decode::<process::SendSignalRequest>(s.as_bytes());
            let _ = Codec::Json.decode::<filesystem::ListDirRequest>(s.as_bytes());
        }
    }
}
