//! `Vary`: names merged into a response's own, case-insensitively, never twice (the cache
//! layer's configured names, the compression layer's `Accept-Encoding`).

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
    let mut unreadable = false;
    for line in headers.get_all(VARY) {
        // A value that is not text cannot be read for names: it is kept as it is, and the
        // missing names go on a line of their own beside it.
        let Ok(text) = line.to_str() else {
            unreadable = true;
            continue;
        };
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
    if unreadable {
        if let Ok(value) = HeaderValue::from_str(&missing.join(", ")) {
            headers.append(VARY, value);
        }
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
        // A line that is not text is kept; the missing names go beside it.
        let mut headers = HeaderMap::new();
        headers.append(VARY, HeaderValue::from_bytes(b"\xffoo").unwrap());
        let names = [HeaderName::from_static("accept")];
        merge(&mut headers, &names, &render(&names));
        let lines: Vec<&[u8]> = headers.get_all(VARY).iter().map(|v| v.as_bytes()).collect();
        assert_eq!(lines, [&b"\xffoo"[..], b"accept"]);
    }
}
