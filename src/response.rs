//! How a layer answers for itself.
//!
//! HTTP layers reject with a real [`Response`] (so an axum `Router` needs no
//! `HandleErrorLayer`): a JSON body for HTTP clients, and for gRPC requests
//! (`content-type: application/grpc*`) a trailers-only gRPC response, HTTP 200 with
//! `grpc-status` and `grpc-message` in the headers. The body type stays generic through
//! [`ResponseBody`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from a bulwark layer: the inner service's body, or the layer's own.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body: ResponseBody<Full<Bytes>> = ResponseBody::full(Bytes::from_static(b"hi"));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
        Watched { #[pin] body: Watched<B> },
    }
}

/// How a watched body ended: what a layer that must see the whole response (a gRPC status in
/// the trailers) learns once, and only once.
#[derive(Debug)]
#[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
pub(crate) enum BodyEnd<'a> {
    /// The trailers arrived.
    Trailers(&'a HeaderMap),
    /// The body ended without trailers.
    Finished,
    /// The body failed.
    Failed,
    /// The body was dropped before its end was read (its reader went away; or a server
    /// dropped a body that was empty from the start without polling it).
    Dropped,
}

pub(crate) type EndHook = Box<dyn FnOnce(BodyEnd<'_>) + Send + Sync>;

pin_project! {
    /// An inner body with a hook called once when it ends, however it ends.
    #[project = WatchedProj]
    pub(crate) struct Watched<B> {
        #[pin]
        body: B,
        on_end: Option<EndHook>,
    }

    impl<B> PinnedDrop for Watched<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(on_end) = this.project().on_end.take() {
                on_end(BodyEnd::Dropped);
            }
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for Watched<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl<B> Watched<B>
where
    B: Body<Data = Bytes>,
{
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = std::task::ready!(this.body.poll_frame(cx));
        let end = match &polled {
            Some(Ok(frame)) => frame.trailers_ref().map(BodyEnd::Trailers),
            Some(Err(_)) => Some(BodyEnd::Failed),
            None => Some(BodyEnd::Finished),
        };
        if let Some(end) = end {
            if let Some(on_end) = this.on_end.take() {
                on_end(end);
            }
        }
        Poll::Ready(polled)
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = ResponseBody::inner(Full::new(Bytes::from_static(b"from the handler")));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "from the handler");
    /// # }
    /// ```
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// Wraps the inner service's body and calls `on_end` once when it ends: with its
    /// trailers, at its end, on its error, or when it is dropped unfinished.
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
    pub(crate) fn watched(body: B, on_end: EndHook) -> Self {
        Self {
            kind: Kind::Watched {
                body: Watched {
                    body,
                    on_end: Some(on_end),
                },
            },
        }
    }

    /// A body of the layer's own.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// let body: ResponseBody<http_body_util::Empty<Bytes>> = ResponseBody::full(Bytes::from_static(b"{}"));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }

    /// An empty body of the layer's own.
    ///
    /// ```
    /// use http_body::Body;
    /// use http_body_util::Full;
    /// use tower_bulwark::response::ResponseBody;
    ///
    /// let body: ResponseBody<Full<bytes::Bytes>> = ResponseBody::empty();
    /// assert!(body.is_end_stream());
    /// ```
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The same body under another inner-body type. Only for the layer's own bodies, which
    /// never hold an inner body; one that did would become empty rather than panic.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn retype<B2>(self) -> ResponseBody<B2> {
        match self.kind {
            Kind::Full { body } => ResponseBody {
                kind: Kind::Full { body },
            },
            Kind::Inner { .. } | Kind::Watched { .. } => ResponseBody::empty(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Watched { body } => body.poll_frame(cx),
            KindProj::Full { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Watched { body } => body.body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Watched { body } => body.body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

/// True when the request is gRPC (`content-type: application/grpc`, `application/grpc+proto`, ...).
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("content-type", "application/grpc+proto".parse().unwrap());
/// assert!(tower_bulwark::response::is_grpc(&headers));
/// ```
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC status codes a layer answers with.
///
/// ```
/// use tower_bulwark::response::{grpc_rejection, GrpcCode};
///
/// assert_eq!(GrpcCode::ResourceExhausted as u16, 8);
/// let res = grpc_rejection::<()>(&http::HeaderMap::new(), GrpcCode::Unavailable, "shed");
/// assert_eq!(res.headers()["grpc-status"], "14");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    /// 3: the request itself is unusable.
    InvalidArgument = 3,
    /// 8: a rate limit or quota was hit.
    ResourceExhausted = 8,
    /// 13: the server failed (for example it is misconfigured).
    Internal = 13,
    /// 14: the service is unavailable (open breaker, shed load).
    Unavailable = 14,
}

impl GrpcCode {
    /// The closest gRPC code for an HTTP error status: `INVALID_ARGUMENT` for 4xx (429 is
    /// `RESOURCE_EXHAUSTED`), `UNAVAILABLE` for 503, `INTERNAL` otherwise.
    ///
    /// ```
    /// use tower_bulwark::response::GrpcCode;
    /// assert_eq!(GrpcCode::from_http(http::StatusCode::BAD_REQUEST), GrpcCode::InvalidArgument);
    /// assert_eq!(GrpcCode::from_http(http::StatusCode::TOO_MANY_REQUESTS), GrpcCode::ResourceExhausted);
    /// ```
    pub fn from_http(status: StatusCode) -> Self {
        match status {
            StatusCode::TOO_MANY_REQUESTS => GrpcCode::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => GrpcCode::Unavailable,
            s if s.is_client_error() => GrpcCode::InvalidArgument,
            _ => GrpcCode::Internal,
        }
    }
}

/// A trailers-only gRPC response to the request with headers `request`: HTTP 200,
/// `grpc-status` and `grpc-message` in the headers, no body.
///
/// The `content-type` echoes the request's (so gRPC-Web clients get `application/grpc-web...`).
/// `message` is percent-encoded as the gRPC protocol requires.
///
/// ```
/// use tower_bulwark::response::{grpc_rejection, GrpcCode};
///
/// let mut request = http::HeaderMap::new();
/// request.insert("content-type", "application/grpc+proto".parse().unwrap());
/// let res = grpc_rejection::<()>(&request, GrpcCode::ResourceExhausted, "Too many requests: 100%");
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.headers()["content-type"], "application/grpc+proto");
/// assert_eq!(res.headers()["grpc-status"], "8");
/// assert_eq!(res.headers()["grpc-message"], "Too many requests: 100%25");
/// ```
pub fn grpc_rejection<B>(
    request: &HeaderMap,
    code: GrpcCode,
    message: &str,
) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::empty());
    let headers = res.headers_mut();
    let content_type = request
        .get(CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/grpc"));
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(message) = HeaderValue::try_from(percent_encode_grpc(message)) {
        headers.insert("grpc-message", message);
    }
    res
}

/// Percent-encodes what the gRPC spec requires in `grpc-message`: bytes outside 0x20..=0x7E,
/// and `%`.
fn percent_encode_grpc(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A JSON response with the given status.
///
/// ```
/// use bytes::Bytes;
/// use tower_bulwark::response::json_response;
///
/// let res = json_response::<()>(http::StatusCode::TOO_MANY_REQUESTS, Bytes::from("{}"));
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["content-type"], "application/json");
/// ```
pub fn json_response<B>(status: StatusCode, json: Bytes) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::full(json));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Whole seconds, rounded up, for `Retry-After` and reset headers.
#[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
pub(crate) fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `{"error":"<error>","retryAfter":<secs>}` with `content-type: application/json`: the body
/// of every refusal that tells the client when to come back (429, 503).
#[cfg_attr(
    not(any(feature = "rate-limit", feature = "circuit-breaker")),
    allow(dead_code)
)]
pub(crate) fn retry_json<B>(
    status: StatusCode,
    error: &str,
    retry_after_secs: u64,
) -> Response<ResponseBody<B>> {
    let mut body = BytesMut::with_capacity(40 + error.len());
    body.put_slice(br#"{"error":""#);
    body.put_slice(error.as_bytes());
    body.put_slice(br#"","retryAfter":"#);
    put_u64(&mut body, retry_after_secs);
    body.put_u8(b'}');
    json_response(status, body.freeze())
}

/// Writes `n` in decimal, without going through `core::fmt`.
#[cfg_attr(
    not(any(feature = "rate-limit", feature = "circuit-breaker")),
    allow(dead_code)
)]
pub(crate) fn put_u64(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is a single digit, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

/// What a layer's response future answers when polled again after it completed: a 500,
/// rather than a panic on a request path or a second poll of the inner future.
#[cfg_attr(
    not(any(feature = "rate-limit", feature = "circuit-breaker")),
    allow(dead_code)
)]
pub(crate) fn polled_after_completion<B>() -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// True for gRPC-Web (`application/grpc-web*`), whose trailers travel inside the body.
#[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
pub(crate) fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"))
}
