//! `Vary` as the cache layer reads it: which of a request's header values pick a stored
//! variant, and whether a response varies only on those (merging names into a response's
//! `Vary` is the shared `headers::vary`).

use std::hash::{Hash, Hasher};

use http::header::VARY;
use http::{HeaderMap, HeaderName};

/// Whether a response's `Vary` names only headers among `names` (so the variant a request's
/// values of `names` pick is the right one), and not `*`.
pub(crate) fn covered_by(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    for line in headers.get_all(VARY) {
        let Ok(text) = line.to_str() else {
            return false;
        };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !names.iter().any(|n| n.as_str().eq_ignore_ascii_case(token)) {
                return false;
            }
        }
    }
    true
}

/// Which variant of a resource a request asks for: a hash of its query, of the names and of
/// the request's values for them (all lines, in order). The same on every instance (a fixed
/// hasher), so a fleet's shared store agrees.
pub(crate) fn variant(query: Option<&str>, request: &HeaderMap, names: &[HeaderName]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    match query {
        Some(query) => {
            hasher.write_u8(1);
            query.hash(&mut hasher);
        }
        None => hasher.write_u8(0),
    }
    for name in names {
        name.as_str().hash(&mut hasher);
        for value in request.get_all(name) {
            hasher.write(value.as_bytes());
            hasher.write_u8(0xff);
        }
        hasher.write_u8(0xfe);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn variants_differ_by_value_and_coverage_is_checked() {
        let names = [HeaderName::from_static("accept-language")];
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", HeaderValue::from_static("fr"));
        assert_ne!(variant(None, &en, &names), variant(None, &fr, &names));
        assert_eq!(
            variant(None, &en, &names),
            variant(None, &en.clone(), &names)
        );
        assert_ne!(
            variant(Some("a=1"), &en, &names),
            variant(None, &en, &names)
        );
        assert_ne!(variant(Some(""), &en, &names), variant(None, &en, &names));
        let mut response = HeaderMap::new();
        assert!(covered_by(&response, &names));
        response.insert(VARY, HeaderValue::from_static("Accept-Language"));
        assert!(covered_by(&response, &names));
        response.insert(VARY, HeaderValue::from_static("accept-language, cookie"));
        assert!(!covered_by(&response, &names));
        response.insert(VARY, HeaderValue::from_static("*"));
        assert!(!covered_by(&response, &names));
    }
}
