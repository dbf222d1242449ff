//! Which responses are compressed: the guides' rules, in the order they are cheapest to check.

use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::response::Parts;
use http::StatusCode;
use http_body::SizeHint;

use super::config::Config;

/// Media types that are already compressed (or streamed event by event): compressing them
/// costs CPU for nothing, or delays events. Prefixes; `image/svg+xml` is text and is
/// compressed. A user's own go beside these (`skip_content_type`).
pub const DEFAULT_SKIPPED_CONTENT_TYPES: &[&str] = &[
    "image/",
    "audio/",
    "video/",
    "font/woff",
    "application/grpc",
    "text/event-stream",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/pdf",
];

/// Whether a response (its head and its body's size hint) is to be compressed.
pub(crate) fn compressible(parts: &Parts, size: SizeHint, config: &Config) -> bool {
    let status = parts.status;
    // No body (1xx, 204, 304), or a part of the identity body (206): never.
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
    {
        return false;
    }
    let headers = &parts.headers;
    if headers.contains_key(CONTENT_ENCODING) || headers.contains_key(CONTENT_RANGE) {
        return false;
    }
    // The body's length: its `Content-Length`, else what the body says of itself. A stream
    // of unknown length is compressed (it may be long).
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| size.exact());
    if length.is_some_and(|len| len < config.min_size) {
        return false;
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let content_type = content_type.as_bytes();
        if config.skipped_types.iter().any(|skipped| {
            content_type.len() >= skipped.len()
                && content_type[..skipped.len()].eq_ignore_ascii_case(skipped.as_bytes())
        }) && !is_svg(content_type)
        {
            return false;
        }
    }
    !headers
        .get_all(CACHE_CONTROL)
        .iter()
        .any(|line| has_no_transform(line.as_bytes()))
}

fn is_svg(content_type: &[u8]) -> bool {
    const SVG: &[u8] = b"image/svg+xml";
    content_type.len() >= SVG.len() && content_type[..SVG.len()].eq_ignore_ascii_case(SVG)
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6): the response must reach the client as
/// it is. A directive among others, any case; a quoted argument of another directive that
/// happens to read `no-transform` is not it.
fn has_no_transform(line: &[u8]) -> bool {
    let mut quoted = false;
    let mut start = 0;
    for i in 0..=line.len() {
        let b = line.get(i).copied();
        match b {
            Some(b'"') => quoted = !quoted,
            Some(b',') | None if !quoted => {
                let directive = line[start..i].trim_ascii();
                let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
                if name.trim_ascii().eq_ignore_ascii_case(b"no-transform") {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_transform_is_read_as_a_directive() {
        assert!(has_no_transform(b"no-transform"));
        assert!(has_no_transform(b"public, No-Transform, max-age=60"));
        assert!(has_no_transform(b" max-age=1 ,no-transform"));
        assert!(!has_no_transform(b"no-transformed"));
        assert!(!has_no_transform(b"private=\"x, no-transform\""));
        assert!(!has_no_transform(b""));
    }
}
