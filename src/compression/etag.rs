//! Entity tags across encodings. A strong tag promises byte-for-byte identity, and the
//! compressed bytes are not the identity body's: so a compressed response's strong tag gets
//! the coding appended (`"abc"` becomes `"abc-gzip"`), a tag of its own, still strong (the
//! compressed bytes are fixed for a given body, level and codec build). Weak tags already
//! promise only equivalence, which compression keeps: they pass unchanged.
//!
//! The service behind this layer knows only its own tags, so the suffix comes off on the way
//! in: an `If-None-Match: "abc-gzip"` reaches it as `"abc"` when this request would be
//! answered in gzip again (and its `304` goes out with `"abc-gzip"`); an `If-Match` loses any
//! of the layer's suffixes (a write judged against the state the client saw, whatever the
//! coding it saw it in). `If-Range` is left alone: a range is of the identity bytes, so a
//! compressed tag there must not match.

use http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use http::HeaderMap;

use super::negotiate::{Encoding, Offered};
use crate::headers::etag::{rewrite_strong, EntityTag};

/// Gives a response's strong `ETag` the coding's suffix. A weak tag, a malformed one, or none
/// is left as it is.
pub(crate) fn derive(headers: &mut HeaderMap, encoding: Encoding) {
    let Some(tag) = headers.get(ETAG).and_then(EntityTag::from_header) else {
        return;
    };
    if tag.is_weak() {
        return;
    }
    let mut opaque = String::with_capacity(tag.opaque().len() + 8);
    opaque.push_str(tag.opaque());
    opaque.push('-');
    opaque.push_str(encoding.token());
    if let Ok(derived) = EntityTag::strong(&opaque) {
        headers.insert(ETAG, derived.header_value().clone());
    }
}

/// Takes the layer's suffixes off the request's preconditions. Returns whether an
/// `If-None-Match` tag lost `negotiated`'s suffix (then a `304` gets it back).
pub(crate) fn strip(headers: &mut HeaderMap, negotiated: Encoding, offered: Offered) -> bool {
    let mut stripped_none_match = false;
    if negotiated != Encoding::Identity && headers.contains_key(IF_NONE_MATCH) {
        let token = negotiated.token().as_bytes();
        let rewritten = rewrite_strong(headers.get_all(IF_NONE_MATCH), |opaque| {
            without_suffix(opaque, token)
        });
        if let Some(value) = rewritten {
            headers.insert(IF_NONE_MATCH, value);
            stripped_none_match = true;
        }
    }
    if headers.contains_key(IF_MATCH) {
        let rewritten = rewrite_strong(headers.get_all(IF_MATCH), |opaque| {
            Encoding::PREFERENCE
                .iter()
                .filter(|e| offered.contains(**e))
                .find_map(|e| without_suffix(opaque, e.token().as_bytes()))
        });
        if let Some(value) = rewritten {
            headers.insert(IF_MATCH, value);
        }
    }
    stripped_none_match
}

fn without_suffix<'a>(opaque: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
    let rest = opaque.strip_suffix(token)?.strip_suffix(b"-")?;
    // `"-gzip"` alone was never one of ours (ours have a body tag before the dash).
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strong_tags_get_the_suffix_weak_ones_do_not() {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"abc\""));
        derive(&mut headers, Encoding::Gzip);
        assert_eq!(headers[ETAG], "\"abc-gzip\"");
        headers.insert(ETAG, HeaderValue::from_static("W/\"abc\""));
        derive(&mut headers, Encoding::Gzip);
        assert_eq!(headers[ETAG], "W/\"abc\"");
        headers.insert(ETAG, HeaderValue::from_static("garbage"));
        derive(&mut headers, Encoding::Deflate);
        assert_eq!(headers[ETAG], "garbage");
    }

    #[test]
    fn preconditions_lose_the_suffix_as_the_coding_allows() {
        let offered = Offered(Encoding::Gzip.bit() | Encoding::Deflate.bit());
        let mut headers = HeaderMap::new();
        headers.insert(
            IF_NONE_MATCH,
            HeaderValue::from_static("\"a-gzip\", \"b-deflate\""),
        );
        headers.insert(
            IF_MATCH,
            HeaderValue::from_static("\"a-deflate\", \"-gzip\""),
        );
        assert!(strip(&mut headers, Encoding::Gzip, offered));
        // Only the coding this answer would be in: another coding's tag must not match.
        assert_eq!(headers[IF_NONE_MATCH], "\"a\", \"b-deflate\"");
        assert_eq!(headers[IF_MATCH], "\"a\", \"-gzip\"");

        let mut identity = HeaderMap::new();
        identity.insert(IF_NONE_MATCH, HeaderValue::from_static("\"a-gzip\""));
        assert!(!strip(&mut identity, Encoding::Identity, offered));
        assert_eq!(identity[IF_NONE_MATCH], "\"a-gzip\"");
    }
}
