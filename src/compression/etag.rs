//! Entity tags across encodings. A strong tag promises byte-for-byte identity, and the
//! compressed bytes are not the identity body's: so a compressed response's strong tag gets
//! the coding appended (`"abc"` becomes `"abc-gzip"`), a tag of its own. It stays strong when
//! the body's length was known up front (a whole body, compressed in one go: the same bytes
//! for the same body, level and codec build); a streamed body is flushed whenever it pauses,
//! which depends on timing, so its derived tag is weak (`W/"abc-gzip"`). Weak tags already
//! promise only equivalence, which compression keeps: they pass unchanged.
//!
//! The service behind this layer knows only its own tags, so on the way in the suffix-less
//! tag is *added* beside each suffixed one (the original stays: a service whose own tags end
//! in `-gzip` still finds them): `If-None-Match: "abc-gzip"` reaches it as
//! `"abc-gzip", "abc"` when this request would be answered in gzip again, and a `304` whose
//! tag is one of those added goes out with the suffix again. `If-Match` gains the tag
//! without any of the layer's suffixes (a write judged against the state the client saw,
//! whatever the coding it saw it in). `If-Range` is left alone: a range is of the identity
//! bytes, so a compressed tag there must not match.

use http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use http::HeaderMap;

use super::negotiate::{Encoding, Offered};
use crate::headers::etag::{with_alternatives, AddedTag, EntityTag};

/// Gives a response's strong `ETag` the coding's suffix, strong or `weak`. A weak tag, a
/// malformed one, or none is left as it is.
pub(crate) fn derive(headers: &mut HeaderMap, encoding: Encoding, weak: bool) {
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
    let derived = if weak {
        EntityTag::weak(&opaque)
    } else {
        EntityTag::strong(&opaque)
    };
    if let Ok(derived) = derived {
        headers.insert(ETAG, derived.header_value().clone());
    }
}

/// A `304`'s tag, if it is one this layer added to the request's `If-None-Match`: then it
/// gets the suffix back (weak if the client's tag was weak).
pub(crate) fn derive_revalidated(headers: &mut HeaderMap, encoding: Encoding, added: &[AddedTag]) {
    let Some(tag) = headers.get(ETAG).and_then(EntityTag::from_header) else {
        return;
    };
    if let Some(added) = added.iter().find(|a| a.opaque == tag.opaque().as_bytes()) {
        derive(headers, encoding, added.weak);
    }
}

/// Adds the suffix-less tags to the request's preconditions. Returns the tags added to
/// `If-None-Match` (those of `negotiated`'s suffix), for the `304`.
pub(crate) fn strip(
    headers: &mut HeaderMap,
    negotiated: Encoding,
    offered: Offered,
) -> Vec<AddedTag> {
    let mut added_none_match = Vec::new();
    if negotiated != Encoding::Identity && headers.contains_key(IF_NONE_MATCH) {
        let token = negotiated.token().as_bytes();
        // Weak tags too: `If-None-Match` compares weakly, and caches weaken tags.
        let rewritten = with_alternatives(headers.get_all(IF_NONE_MATCH), true, |opaque| {
            without_suffix(opaque, token)
        });
        if let Some((value, added)) = rewritten {
            headers.insert(IF_NONE_MATCH, value);
            added_none_match = added;
        }
    }
    if headers.contains_key(IF_MATCH) {
        // Strong tags only: a weak one never matches `If-Match`.
        let rewritten = with_alternatives(headers.get_all(IF_MATCH), false, |opaque| {
            Encoding::PREFERENCE
                .iter()
                .filter(|e| offered.contains(**e))
                .find_map(|e| without_suffix(opaque, e.token().as_bytes()))
        });
        if let Some((value, _)) = rewritten {
            headers.insert(IF_MATCH, value);
        }
    }
    added_none_match
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
        derive(&mut headers, Encoding::Gzip, false);
        assert_eq!(headers[ETAG], "\"abc-gzip\"");
        headers.insert(ETAG, HeaderValue::from_static("\"abc\""));
        derive(&mut headers, Encoding::Gzip, true);
        assert_eq!(headers[ETAG], "W/\"abc-gzip\"");
        headers.insert(ETAG, HeaderValue::from_static("W/\"abc\""));
        derive(&mut headers, Encoding::Gzip, false);
        assert_eq!(headers[ETAG], "W/\"abc\"");
        headers.insert(ETAG, HeaderValue::from_static("garbage"));
        derive(&mut headers, Encoding::Deflate, false);
        assert_eq!(headers[ETAG], "garbage");
    }

    #[test]
    fn preconditions_gain_the_suffixless_tag_as_the_coding_allows() {
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
        let added = strip(&mut headers, Encoding::Gzip, offered);
        // Only the coding this answer would be in: another coding's tag must not match.
        assert_eq!(headers[IF_NONE_MATCH], "\"a-gzip\", \"a\", \"b-deflate\"");
        assert_eq!(headers[IF_MATCH], "\"a-deflate\", \"a\", \"-gzip\"");
        assert_eq!(added.len(), 1);

        // The 304's tag gets the suffix back only if it is one that was added.
        let mut res = HeaderMap::new();
        res.insert(ETAG, HeaderValue::from_static("\"a\""));
        derive_revalidated(&mut res, Encoding::Gzip, &added);
        assert_eq!(res[ETAG], "\"a-gzip\"");
        res.insert(ETAG, HeaderValue::from_static("\"other\""));
        derive_revalidated(&mut res, Encoding::Gzip, &added);
        assert_eq!(res[ETAG], "\"other\"");

        let mut identity = HeaderMap::new();
        identity.insert(IF_NONE_MATCH, HeaderValue::from_static("\"a-gzip\""));
        assert!(strip(&mut identity, Encoding::Identity, offered).is_empty());
        assert_eq!(identity[IF_NONE_MATCH], "\"a-gzip\"");
    }
}
