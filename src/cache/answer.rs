//! The layer's own answers: `304 Not Modified` (exactly the headers RFC 9110 §15.4.5 asks
//! for, no body) and `412 Precondition Failed` (a JSON body).

use bytes::Bytes;
use http::header::{DATE, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, Response, StatusCode};

use super::store::NOT_MODIFIED_HEADERS;
use crate::response::{json_response, LayerBody};

/// A `304` carrying `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires` and `Vary`
/// from `from` (and `Last-Modified` only when there is no `ETag`), with an empty body and no
/// `Content-Length` of the full body. One walk over `from`, its values moved, not copied.
pub(crate) fn not_modified<B: LayerBody>(from: HeaderMap) -> Response<B> {
    let mut res = Response::new(B::from_bytes(Bytes::new()));
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    let has_etag = from.contains_key(ETAG);
    let headers = res.headers_mut();
    headers.reserve(NOT_MODIFIED_HEADERS.len() + 1);
    let mut current: Option<HeaderName> = None;
    for (name, value) in from {
        // `None`: another value of the name before it.
        if let Some(name) = name {
            current = Some(name);
        }
        let Some(name) = current.as_ref() else {
            continue;
        };
        let kept = (*name == DATE || NOT_MODIFIED_HEADERS.contains(name))
            && !(*name == LAST_MODIFIED && has_etag);
        if kept {
            headers.append(name.clone(), value);
        }
    }
    res
}

const PRECONDITION_FAILED: &str =
    "{\"error\":\"precondition_failed\",\"message\":\"a precondition \
(If-Match, If-Unmodified-Since or If-None-Match) does not hold for the current representation: \
fetch it again, then retry with its ETag\"}";

/// A `412` with a JSON body saying why.
pub(crate) fn precondition_failed<B: LayerBody>() -> Response<B> {
    json_response(
        StatusCode::PRECONDITION_FAILED,
        Bytes::from_static(PRECONDITION_FAILED.as_bytes()),
    )
}
