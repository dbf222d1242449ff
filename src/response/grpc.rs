//! gRPC answers: recognising a gRPC request, the status codes, the trailers-only response.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

use super::ResponseBody;

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

/// True for gRPC-Web (`application/grpc-web*`), whose trailers travel inside the body.
#[cfg(feature = "circuit-breaker")]
pub(crate) fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"))
}
