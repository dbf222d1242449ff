//! gRPC answers: recognising a gRPC request, the status codes, the trailers-only response.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

use bytes::Bytes;

use super::LayerBody;

/// True when the request is gRPC: `content-type: application/grpc`, `application/grpc+proto`,
/// `application/grpc-web...`, with or without parameters.
///
/// Media types are case-insensitive (RFC 9110 §8.3.1), so `Application/GRPC` counts too; a
/// longer subtype such as `application/grpcfoo` does not.
///
/// ```
/// use tower_bulwark::response::is_grpc;
///
/// let with = |content_type: &'static str| {
///     let mut headers = http::HeaderMap::new();
///     headers.insert("content-type", http::HeaderValue::from_static(content_type));
///     is_grpc(&headers)
/// };
/// assert!(with("application/grpc+proto"));
/// assert!(with("Application/GRPC; charset=utf-8"));
/// assert!(with("application/grpc-web-text"));
/// assert!(!with("application/grpcfoo"));
/// assert!(!with("application/json"));
/// ```
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| media_type(v.as_bytes()).is_some())
}

/// True when the request is a gRPC call: a `POST` (the only method gRPC and gRPC-Web use)
/// with a gRPC content type. The method is compared first, so other requests cost no header
/// lookup.
#[cfg(any(
    feature = "rate-limit",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "cache"
))]
pub(crate) fn is_grpc_call(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::POST && is_grpc(headers)
}

/// Which gRPC protocol a `content-type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grpc {
    /// `application/grpc`, `application/grpc+proto`, ...
    Native,
    /// `application/grpc-web`, `application/grpc-web-text`, each with an optional `+suffix`.
    Web,
}

/// The gRPC protocol a `content-type` value names, if any: the type and subtype compared
/// ASCII case-insensitively on the bytes (no allocation), parameters ignored.
fn media_type(value: &[u8]) -> Option<Grpc> {
    let rest = strip_prefix_ignore_case(value.trim_ascii_start(), b"application/grpc")?;
    if subtype_ends(rest) {
        return Some(Grpc::Native);
    }
    let rest = strip_prefix_ignore_case(rest, b"-web")?;
    if subtype_ends(rest) {
        return Some(Grpc::Web);
    }
    let rest = strip_prefix_ignore_case(rest, b"-text")?;
    subtype_ends(rest).then_some(Grpc::Web)
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = value.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

/// True when the subtype ends where `rest` starts: at the end of the value, at a `+suffix`, or
/// at the parameters (`;`, perhaps after whitespace).
fn subtype_ends(rest: &[u8]) -> bool {
    match rest.first() {
        None | Some(b'+' | b';') => true,
        Some(b' ' | b'\t') => matches!(rest.trim_ascii_start().first(), None | Some(b';')),
        Some(_) => false,
    }
}

/// gRPC status codes a layer answers with.
///
/// A layer's own refusals keep their codes: a rate limit answers `RESOURCE_EXHAUSTED`, an
/// open breaker `UNAVAILABLE`. A status the user chose (such as a missing key's
/// `MissingKey::Reject(status)`) is mapped by [`from_http`](Self::from_http).
///
/// ```
/// use tower_bulwark::response::{grpc_rejection, GrpcCode};
///
/// assert_eq!(GrpcCode::ResourceExhausted as u16, 8);
/// assert_eq!(GrpcCode::Unauthenticated as u16, 16);
/// let res = grpc_rejection::<String>(&http::HeaderMap::new(), GrpcCode::Unavailable, "shed");
/// assert_eq!(res.headers()["grpc-status"], "14");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 2 `UNKNOWN`: an error with no better code (what gRPC makes of most HTTP statuses).
    Unknown = 2,
    /// 3 `INVALID_ARGUMENT`: the request itself is unusable.
    InvalidArgument = 3,
    /// 7 `PERMISSION_DENIED`: the caller is known but may not do this (HTTP 403).
    PermissionDenied = 7,
    /// 8 `RESOURCE_EXHAUSTED`: a rate limit or quota was hit.
    ResourceExhausted = 8,
    /// 12 `UNIMPLEMENTED`: no such method (HTTP 404).
    Unimplemented = 12,
    /// 13 `INTERNAL`: the server failed (HTTP 400 and 431 also map here: the client sent what
    /// its own gRPC stack should never have produced).
    Internal = 13,
    /// 14 `UNAVAILABLE`: the service is unavailable (open breaker, shed load; HTTP 502, 503,
    /// 504 and a 429 chosen by the user).
    Unavailable = 14,
    /// 16 `UNAUTHENTICATED`: the caller did not prove who it is (HTTP 401).
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The gRPC code for an HTTP status chosen by the user, as the gRPC project maps them
    /// ("HTTP to gRPC Status Code Mapping", grpc/grpc `doc/http-grpc-status-mapping.md`):
    ///
    /// | HTTP | gRPC |
    /// |---|---|
    /// | 400, 431 | 13 `INTERNAL` |
    /// | 401 | 16 `UNAUTHENTICATED` |
    /// | 403 | 7 `PERMISSION_DENIED` |
    /// | 404 | 12 `UNIMPLEMENTED` |
    /// | 429, 502, 503, 504 | 14 `UNAVAILABLE` |
    /// | any other | 2 `UNKNOWN` |
    ///
    /// A layer's own refusals do not go through this table: a rate limit's 429 answers
    /// [`ResourceExhausted`](Self::ResourceExhausted) (8), an open breaker
    /// [`Unavailable`](Self::Unavailable) (14).
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_bulwark::response::GrpcCode;
    ///
    /// assert_eq!(GrpcCode::from_http(StatusCode::UNAUTHORIZED), GrpcCode::Unauthenticated);
    /// assert_eq!(GrpcCode::from_http(StatusCode::FORBIDDEN), GrpcCode::PermissionDenied);
    /// assert_eq!(GrpcCode::from_http(StatusCode::BAD_REQUEST), GrpcCode::Internal);
    /// assert_eq!(GrpcCode::from_http(StatusCode::SERVICE_UNAVAILABLE), GrpcCode::Unavailable);
    /// assert_eq!(GrpcCode::from_http(StatusCode::INTERNAL_SERVER_ERROR), GrpcCode::Unknown);
    /// ```
    pub fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            400 | 431 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
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
/// let res = grpc_rejection::<http_body_util::Full<bytes::Bytes>>(&request, GrpcCode::ResourceExhausted, "Too many requests: 100%");
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.headers()["content-type"], "application/grpc+proto");
/// assert_eq!(res.headers()["grpc-status"], "8");
/// assert_eq!(res.headers()["grpc-message"], "Too many requests: 100%25");
/// ```
pub fn grpc_rejection<B: LayerBody>(
    request: &HeaderMap,
    code: GrpcCode,
    message: &str,
) -> Response<B> {
    grpc_answer(request, code, message, 0).map(B::from_bytes)
}

/// [`grpc_rejection`] with the (empty) body still as bytes.
pub(crate) fn grpc_answer(
    request: &HeaderMap,
    code: GrpcCode,
    message: &str,
    room: usize,
) -> Response<Bytes> {
    let mut res = Response::new(Bytes::new());
    if room > 0 {
        // content-type, grpc-status, grpc-message, the caller's, and a server's content-length.
        *res.headers_mut() = HeaderMap::with_capacity(room + 4);
    }
    let headers = res.headers_mut();
    let content_type = request
        .get(CONTENT_TYPE)
        .filter(|v| media_type(v.as_bytes()).is_some())
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

/// True for gRPC-Web (`application/grpc-web`, `application/grpc-web-text`, any case, with an
/// optional `+suffix` and parameters), whose trailers travel inside the body.
#[cfg(feature = "circuit-breaker")]
pub(crate) fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| media_type(v.as_bytes()) == Some(Grpc::Web))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    const GRPC: [&str; 9] = [
        "application/grpc",
        "APPLICATION/GRPC",
        "Application/Grpc+Proto",
        "application/GRPC+json",
        "application/grpc;charset=utf-8",
        "application/grpc ; charset=utf-8",
        "  application/grpc",
        "aPpLiCaTiOn/gRpC+proto;q=1",
        "application/grpc\t",
    ];
    const GRPC_WEB: [&str; 7] = [
        "application/grpc-web",
        "APPLICATION/GRPC-WEB",
        "Application/gRPC-Web+Proto",
        "application/grpc-web-text",
        "application/GRPC-WEB-TEXT+proto",
        "application/grpc-web; charset=utf-8",
        "application/grpc-web-text;x=1",
    ];
    const NOT_GRPC: [&str; 11] = [
        "",
        "application/json",
        "application/grpcfoo",
        "APPLICATION/GRPCFOO",
        "application/grpc-",
        "application/grpc-webfoo",
        "application/grpc-web-textual",
        "application/grpc-foo",
        "application/grp",
        "application/grpc x",
        "text/application/grpc",
    ];

    #[test]
    fn http_statuses_map_as_the_grpc_project_maps_them() {
        let code = |status: u16| GrpcCode::from_http(StatusCode::from_u16(status).unwrap()) as u16;
        for (http, grpc) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (431, 13),
            (502, 14),
            (503, 14),
            (504, 14),
            (200, 2),
            (402, 2),
            (405, 2),
            (409, 2),
            (418, 2),
            (500, 2),
            (501, 2),
            (599, 2),
        ] {
            assert_eq!(code(http), grpc, "HTTP {http}");
        }
    }

    #[test]
    fn media_types_are_case_insensitive() {
        for value in GRPC.iter().chain(&GRPC_WEB) {
            assert!(is_grpc(&content_type(value)), "{value:?}");
        }
        for value in NOT_GRPC {
            assert!(!is_grpc(&content_type(value)), "{value:?}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    #[cfg(feature = "circuit-breaker")]
    fn grpc_web_media_types_are_case_insensitive() {
        for value in GRPC_WEB {
            assert!(is_grpc_web(&content_type(value)), "{value:?}");
        }
        for value in GRPC.iter().chain(&NOT_GRPC) {
            assert!(!is_grpc_web(&content_type(value)), "{value:?}");
        }
    }

    #[test]
    fn rejection_echoes_any_grpc_content_type_in_any_case() {
        for value in GRPC.iter().chain(&GRPC_WEB) {
            let res = grpc_rejection::<http_body_util::Full<Bytes>>(
                &content_type(value),
                GrpcCode::Unavailable,
                "x",
            );
            assert_eq!(res.headers()[CONTENT_TYPE], *value);
        }
        for value in NOT_GRPC {
            let res = grpc_rejection::<http_body_util::Full<Bytes>>(
                &content_type(value),
                GrpcCode::Unavailable,
                "x",
            );
            assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc", "{value:?}");
        }
    }
}
