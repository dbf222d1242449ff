//! Conditional requests, evaluated exactly in the order of RFC 9110 §13.2.2:
//! `If-Match` → `If-Unmodified-Since` → `If-None-Match` → `If-Modified-Since` → `If-Range`.
//!
//! Pure: request headers, method and what is known of the current representation in, a
//! verdict out. Malformed dates are ignored (as if the field were absent); malformed tags
//! never match (see [`super::etag`]).

use std::time::{Duration, SystemTime};

use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, HeaderValue, Method};

use crate::headers::etag::{if_range_tag, read_list, Comparison, EntityTag, TagList};

/// What is known of the resource's current representation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current<'a> {
    /// Whether there is a current representation at all (`If-Match: *` needs one).
    pub(crate) exists: bool,
    pub(crate) etag: Option<&'a EntityTag>,
    /// Last modification, whole seconds since the Unix epoch.
    pub(crate) last_modified: Option<u64>,
}

/// What the preconditions say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// All true (or none present): perform the method.
    Proceed,
    /// All true, but `If-Range` failed: perform the `GET` ignoring its `Range`.
    IgnoreRange,
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    PreconditionFailed,
}

/// Whether the request carries any precondition at all (the common request carries none and
/// skips everything else). One walk over the request's few header names, each compared as a
/// standard header (an integer compare), instead of five hashed lookups.
pub(crate) fn has_preconditions(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        name == IF_MATCH
            || name == IF_NONE_MATCH
            || name == IF_MODIFIED_SINCE
            || name == IF_UNMODIFIED_SINCE
            || name == IF_RANGE
    })
}

/// An HTTP-date in any of its three forms (IMF-fixdate, RFC 850, asctime), as whole seconds
/// since the Unix epoch; `None` when malformed or when the field is repeated.
pub(crate) fn http_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<u64> {
    let mut lines = headers.get_all(name).iter();
    let value = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    date_of(value)
}

pub(crate) fn date_of(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?.trim();
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// An HTTP-date header value for `unix` (IMF-fixdate).
pub(crate) fn date_value(unix: Duration) -> HeaderValue {
    let text = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + unix);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn is_get_or_head(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// RFC 9110 §13.2.2, steps 1 to 5.
pub(crate) fn evaluate(method: &Method, headers: &HeaderMap, current: Current<'_>) -> Verdict {
    // 1. If-Match (strong comparison); else 2. If-Unmodified-Since.
    let if_match = headers.get_all(IF_MATCH);
    if if_match.iter().next().is_some() {
        let holds = match read_list(if_match, current.etag, Comparison::Strong) {
            TagList::Any => current.exists,
            TagList::Tags { matched } => current.exists && matched,
        };
        if !holds {
            return Verdict::PreconditionFailed;
        }
    } else if let (Some(since), Some(modified)) = (
        http_date(headers, IF_UNMODIFIED_SINCE),
        current.last_modified,
    ) {
        if modified > since {
            return Verdict::PreconditionFailed;
        }
    }

    // 3. If-None-Match (weak comparison); else 4. If-Modified-Since, for GET and HEAD only.
    let if_none_match = headers.get_all(IF_NONE_MATCH);
    if if_none_match.iter().next().is_some() {
        let matched = match read_list(if_none_match, current.etag, Comparison::Weak) {
            TagList::Any => current.exists,
            TagList::Tags { matched } => matched,
        };
        if matched {
            return if is_get_or_head(method) {
                Verdict::NotModified
            } else {
                Verdict::PreconditionFailed
            };
        }
    } else if is_get_or_head(method) {
        if let (Some(since), Some(modified)) =
            (http_date(headers, IF_MODIFIED_SINCE), current.last_modified)
        {
            if modified <= since {
                return Verdict::NotModified;
            }
        }
    }

    // 5. If-Range, for a GET with a Range: strong comparison of a tag, or the exact date.
    if *method == Method::GET && headers.contains_key(RANGE) {
        if let Some(value) = headers.get(IF_RANGE) {
            let holds = match if_range_tag(value) {
                Some(tag) => current.etag.is_some_and(|etag| etag.strong_eq(&tag)),
                None => date_of(value)
                    .zip(current.last_modified)
                    .is_some_and(|(date, modified)| date == modified),
            };
            if !holds {
                return Verdict::IgnoreRange;
            }
        }
    }
    Verdict::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_date_forms_are_read_and_malformed_ones_are_not() {
        let read = |v: &'static str| date_of(&HeaderValue::from_static(v));
        let t = Some(784_111_777);
        assert_eq!(read("Sun, 06 Nov 1994 08:49:37 GMT"), t);
        assert_eq!(read("Sunday, 06-Nov-94 08:49:37 GMT"), t);
        assert_eq!(read("Sun Nov  6 08:49:37 1994"), t);
        assert_eq!(read("Sun, 06 Nov 1994 08:49:37"), None);
        assert_eq!(read("yesterday"), None);
        assert_eq!(read(""), None);
        assert_eq!(
            date_value(Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
