//! `Vary`: the layer's names merged into a response's own, case-insensitively, never twice;
//! and which of a request's header values pick a stored variant.

use std::hash::{Hash, Hasher};

use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Adds `names` (lower case, as `HeaderName`s are) to the response's `Vary`. A `Vary: *`
/// stays as it is; a response without `Vary` gets `rendered` (the names, pre-joined).
pub(crate) fn merge(headers: &mut HeaderMap, names: &[HeaderName], rendered: &HeaderValue) {
    if names.is_empty() {
        return;
    }
    if !headers.contains_key(VARY) {
        headers.insert(VARY, rendered.clone());
        return;
    }
    let mut present: Vec<String> = Vec::new();
    for line in headers.get_all(VARY) {
        // A value that is not text cannot name a header: keep it and add nothing it names.
        let Ok(text) = line.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token == "*" {
                return;
            }
            present.push(token.to_ascii_lowercase());
        }
    }
    let missing: Vec<&str> = names
        .iter()
        .map(HeaderName::as_str)
        .filter(|name| !present.iter().any(|p| p == name))
        .collect();
    if missing.is_empty() {
        return;
    }
    // One line holding the old names and the new: never a second `Vary` line.
    let mut joined = String::new();
    for name in present.iter().map(String::as_str).chain(missing) {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(name);
    }
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(VARY, value);
    }
}

/// The names joined as one `Vary` value.
pub(crate) fn render(names: &[HeaderName]) -> HeaderValue {
    let joined = names
        .iter()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&joined).unwrap_or_else(|_| HeaderValue::from_static(""))
}

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

    fn merged(existing: &[&'static str], names: &[&'static str]) -> Vec<String> {
        let names: Vec<HeaderName> = names.iter().map(|n| HeaderName::from_static(n)).collect();
        let mut headers = HeaderMap::new();
        for v in existing {
            headers.append(VARY, HeaderValue::from_static(v));
        }
        merge(&mut headers, &names, &render(&names));
        headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn merges_without_duplicates() {
        assert_eq!(merged(&[], &["accept-encoding"]), ["accept-encoding"]);
        assert_eq!(
            merged(
                &["Accept-Encoding"],
                &["accept-encoding", "accept-language"]
            ),
            ["accept-encoding, accept-language"]
        );
        assert_eq!(
            merged(&["origin", " cookie ,"], &["cookie"]),
            ["origin", " cookie ,"]
        );
        assert_eq!(merged(&["*"], &["accept"]), ["*"]);
        assert_eq!(
            merged(&["origin", "cookie"], &["accept"]),
            ["origin, cookie, accept"]
        );
        assert_eq!(merged(&["origin"], &[]), ["origin"]);
    }

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
