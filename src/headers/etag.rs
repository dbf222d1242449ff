//! Entity tags (RFC 9110 §8.8.3): parsing one, parsing the lists of `If-Match` and
//! `If-None-Match`, comparing them strongly or weakly, and making one from a body.
//!
//! A list element that does not parse (an unquoted tag, a stray quote) never matches: so a
//! garbled `If-None-Match` leaves a plain `200`, and a garbled `If-Match` refuses the write
//! (`412`) instead of letting it through unconditionally. Nothing here panics on any bytes.

use std::fmt;

use http::header::GetAll;
use http::HeaderValue;

/// An entity tag: an opaque validator of one representation, strong or weak (`W/`).
///
/// ```
/// use tower_bulwark::cache::EntityTag;
///
/// let strong = EntityTag::strong("v42").unwrap();
/// assert_eq!(strong.to_string(), "\"v42\"");
/// let weak: EntityTag = "W/\"v42\"".parse().unwrap();
/// assert!(weak.is_weak());
/// assert!(strong.weak_eq(&weak));
/// assert!(!strong.strong_eq(&weak));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    /// The whole header value (`"abc"` or `W/"abc"`), kept as it goes on the wire.
    value: HeaderValue,
    weak: bool,
}

/// Why a text is not an entity tag.
///
/// ```
/// use tower_bulwark::cache::EntityTag;
///
/// let err = EntityTag::strong("has\"quote").unwrap_err();
/// assert!(err.to_string().contains("entity tag"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEntityTag;

impl fmt::Display for InvalidEntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not an entity tag: expected \"opaque\" or W/\"opaque\" with no double quote, \
             control character or space inside",
        )
    }
}

impl std::error::Error for InvalidEntityTag {}

impl EntityTag {
    /// A strong tag with `opaque` between its quotes (`"opaque"`).
    ///
    /// ```
    /// let tag = tower_bulwark::cache::EntityTag::strong("7-a1b2").unwrap();
    /// assert_eq!(tag.opaque(), "7-a1b2");
    /// ```
    pub fn strong(opaque: &str) -> Result<Self, InvalidEntityTag> {
        Self::new(false, opaque)
    }

    /// A weak tag with `opaque` between its quotes (`W/"opaque"`).
    ///
    /// ```
    /// let tag = tower_bulwark::cache::EntityTag::weak("7").unwrap();
    /// assert_eq!(tag.to_string(), "W/\"7\"");
    /// ```
    pub fn weak(opaque: &str) -> Result<Self, InvalidEntityTag> {
        Self::new(true, opaque)
    }

    fn new(weak: bool, opaque: &str) -> Result<Self, InvalidEntityTag> {
        if !opaque.bytes().all(is_etagc) {
            return Err(InvalidEntityTag);
        }
        let text = if weak {
            format!("W/\"{opaque}\"")
        } else {
            format!("\"{opaque}\"")
        };
        let value = HeaderValue::from_str(&text).map_err(|_| InvalidEntityTag)?;
        Ok(Self { value, weak })
    }

    /// The tag of a header value holding exactly one (an `ETag` header), or `None`.
    ///
    /// ```
    /// use http::HeaderValue;
    /// use tower_bulwark::cache::EntityTag;
    ///
    /// assert!(EntityTag::from_header(&HeaderValue::from_static("\"a\"")).is_some());
    /// assert!(EntityTag::from_header(&HeaderValue::from_static("a")).is_none());
    /// ```
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = trim(value.as_bytes());
        let (tag, rest) = parse_tag(bytes)?;
        if !trim(rest).is_empty() {
            return None;
        }
        Some(Self {
            weak: tag.weak,
            value: if bytes.len() == value.len() {
                value.clone()
            } else {
                HeaderValue::from_bytes(bytes).ok()?
            },
        })
    }

    /// A strong tag for a body: its XXH3-128 digest in hex (32 characters), or a weak one
    /// with the same digest. The same bytes give the same tag on every machine and release
    /// (XXH3 is a fixed, specified algorithm), so a fleet agrees on its tags.
    ///
    /// ```
    /// use tower_bulwark::cache::EntityTag;
    ///
    /// let a = EntityTag::of_body(b"{\"id\":7}", false);
    /// assert_eq!(a, EntityTag::of_body(b"{\"id\":7}", false));
    /// assert_ne!(a, EntityTag::of_body(b"{\"id\":8}", false));
    /// assert_eq!(a.opaque().len(), 32);
    /// ```
    #[cfg(feature = "cache")]
    pub fn of_body(body: &[u8], weak: bool) -> Self {
        let digest = xxhash_rust::xxh3::xxh3_128(body);
        let mut text = [0u8; 2 + 2 + 32 + 1];
        let start = if weak {
            text[..3].copy_from_slice(b"W/\"");
            3
        } else {
            text[0] = b'"';
            1
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, byte) in digest.to_be_bytes().iter().enumerate() {
            text[start + 2 * i] = HEX[usize::from(byte >> 4)];
            text[start + 2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        text[start + 32] = b'"';
        let len = start + 33;
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text[..len]))
            // Hex digits and quotes are always a valid header value.
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        Self { value, weak }
    }

    /// Whether the tag is weak (`W/`).
    ///
    /// ```
    /// let tag: tower_bulwark::cache::EntityTag = "W/\"1\"".parse().unwrap();
    /// assert!(tag.is_weak());
    /// ```
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The text between the quotes (empty if a tag read from a header holds bytes that are
    /// not UTF-8, which `obs-text` allows).
    pub fn opaque(&self) -> &str {
        std::str::from_utf8(self.opaque_bytes()).unwrap_or("")
    }

    /// The header value (`"opaque"` or `W/"opaque"`).
    ///
    /// ```
    /// let tag = tower_bulwark::cache::EntityTag::strong("v1").unwrap();
    /// assert_eq!(tag.header_value(), "\"v1\"");
    /// ```
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong, same opaque text. What `If-Match`
    /// and `If-Range` use.
    ///
    /// ```
    /// use tower_bulwark::cache::EntityTag;
    /// let (a, b) = (EntityTag::strong("1").unwrap(), EntityTag::weak("1").unwrap());
    /// assert!(a.strong_eq(&a) && !a.strong_eq(&b));
    /// ```
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque_bytes() == other.opaque_bytes()
    }

    /// Weak comparison: same opaque text, either may be weak. What `If-None-Match` uses.
    ///
    /// ```
    /// use tower_bulwark::cache::EntityTag;
    /// let (a, b) = (EntityTag::strong("1").unwrap(), EntityTag::weak("1").unwrap());
    /// assert!(a.weak_eq(&b));
    /// ```
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque_bytes() == other.opaque_bytes()
    }

    fn opaque_bytes(&self) -> &[u8] {
        let bytes = self.value.as_bytes();
        let start = if self.weak { 3 } else { 1 };
        bytes
            .get(start..bytes.len().saturating_sub(1))
            .unwrap_or(&[])
    }

    fn as_tag(&self) -> Tag<'_> {
        Tag {
            weak: self.weak,
            opaque: self.opaque_bytes(),
        }
    }
}

impl fmt::Debug for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.value.as_bytes()))
    }
}

impl std::str::FromStr for EntityTag {
    type Err = InvalidEntityTag;

    fn from_str(text: &str) -> Result<Self, InvalidEntityTag> {
        let value = HeaderValue::from_str(text).map_err(|_| InvalidEntityTag)?;
        Self::from_header(&value).ok_or(InvalidEntityTag)
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// A tag borrowed from a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// One entity tag at the start of `bytes` (no leading space), and what follows it.
fn parse_tag(bytes: &[u8]) -> Option<(Tag<'_>, &[u8])> {
    let (weak, rest) = match bytes {
        [b'W', b'/', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    let [b'"', rest @ ..] = rest else {
        return None;
    };
    let end = rest.iter().position(|&b| b == b'"')?;
    let opaque = &rest[..end];
    if !opaque.iter().all(|&b| is_etagc(b)) {
        return None;
    }
    Some((Tag { weak, opaque }, &rest[end + 1..]))
}

/// What an `If-Match` / `If-None-Match` field holds, read across all its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagList {
    /// `*`: any current representation.
    Any,
    /// A list of tags; `matched` says whether one of them matched the current tag.
    Tags { matched: bool },
}

/// How two tags are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Strong,
    Weak,
}

/// Reads an `If-Match` / `If-None-Match` field (all its lines) and compares each tag with
/// `current` (none: no current tag, nothing matches). `*` anywhere makes it `Any` (a `*`
/// beside tags is malformed, read generously as `*`). Elements that do not parse never match;
/// empty elements (`"a", , "b"`) are skipped, as RFC 9110 §5.6.1 asks.
pub(crate) fn read_list(
    lines: GetAll<'_, HeaderValue>,
    current: Option<&EntityTag>,
    comparison: Comparison,
) -> TagList {
    let current = current.map(EntityTag::as_tag);
    let mut matched = false;
    for line in lines {
        let mut rest = line.as_bytes();
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            if let [b'*', after @ ..] = rest {
                if matches!(skip_spaces(after), [] | [b',', ..]) {
                    return TagList::Any;
                }
            }
            match parse_tag(rest) {
                Some((tag, after)) if matches!(skip_spaces(after), [] | [b',', ..]) => {
                    if let Some(current) = current {
                        matched |= tags_match(tag, current, comparison);
                    }
                    rest = skip_spaces(after);
                }
                // Not a tag: skip to the next comma that is not inside quotes.
                _ => rest = skip_element(rest),
            }
        }
    }
    TagList::Tags { matched }
}

/// A tag added to a list by [`with_alternatives`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddedTag {
    pub(crate) weak: bool,
    pub(crate) opaque: Vec<u8>,
}

/// Adds alternatives to the tags of an `If-Match` / `If-None-Match` field (all its lines):
/// `alternative` gets each tag's opaque part (strong tags only, unless `weak_too`) and may
/// give another to list beside it, as strong or weak as the one it came from. Every element
/// is kept as it was (`*`, malformed ones too): the field only gains tags. If a tag was
/// added, the field comes back as one line (elements joined by `, `) with the tags added;
/// else `None`.
pub(crate) fn with_alternatives<'a>(
    lines: GetAll<'a, HeaderValue>,
    weak_too: bool,
    mut alternative: impl FnMut(&'a [u8]) -> Option<&'a [u8]>,
) -> Option<(HeaderValue, Vec<AddedTag>)> {
    let mut out = Vec::new();
    let mut added = Vec::new();
    for line in lines {
        let mut rest = line.as_bytes();
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            match parse_tag(rest) {
                Some((tag, after)) if matches!(skip_spaces(after), [] | [b',', ..]) => {
                    out.extend_from_slice(&rest[..rest.len() - after.len()]);
                    let other = (weak_too || !tag.weak)
                        .then(|| alternative(tag.opaque))
                        .flatten();
                    if let Some(opaque) = other {
                        out.extend_from_slice(if tag.weak { b", W/\"" } else { b", \"" });
                        out.extend_from_slice(opaque);
                        out.push(b'"');
                        added.push(AddedTag {
                            weak: tag.weak,
                            opaque: opaque.to_vec(),
                        });
                    }
                    rest = skip_spaces(after);
                }
                _ => {
                    let after = skip_element(rest);
                    out.extend_from_slice(trim(&rest[..rest.len() - after.len()]));
                    rest = after;
                }
            }
        }
    }
    if added.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out)
        .ok()
        .map(|value| (value, added))
}

fn tags_match(a: Tag<'_>, b: Tag<'_>, comparison: Comparison) -> bool {
    match comparison {
        Comparison::Strong => !a.weak && !b.weak && a.opaque == b.opaque,
        Comparison::Weak => a.opaque == b.opaque,
    }
}

fn skip_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn skip_separators(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b',', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// Past a malformed element: to the next comma outside quotes, or the end.
fn skip_element(bytes: &[u8]) -> &[u8] {
    let mut quoted = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => return &bytes[i..],
            _ => {}
        }
    }
    &[]
}

/// The tag in an `If-Range` field, if it holds one (else it is a date, or malformed).
pub(crate) fn if_range_tag(value: &HeaderValue) -> Option<EntityTag> {
    let bytes = trim(value.as_bytes());
    if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
        return EntityTag::from_header(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header::IF_NONE_MATCH, HeaderMap};

    fn list(lines: &[&[u8]], current: &str, comparison: Comparison) -> TagList {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(IF_NONE_MATCH, HeaderValue::from_bytes(line).unwrap());
        }
        let current: EntityTag = current.parse().unwrap();
        read_list(headers.get_all(IF_NONE_MATCH), Some(&current), comparison)
    }

    const YES: TagList = TagList::Tags { matched: true };
    const NO: TagList = TagList::Tags { matched: false };

    #[test]
    fn alternatives_are_added_beside_their_tags_and_nothing_is_lost() {
        let mut headers = HeaderMap::new();
        headers.append(
            IF_NONE_MATCH,
            HeaderValue::from_static("\"a-gzip\" , W/\"b-gzip\""),
        );
        headers.append(
            IF_NONE_MATCH,
            HeaderValue::from_static("bad, \"c\",, \"d-gzip\""),
        );
        fn strip(opaque: &[u8]) -> Option<&[u8]> {
            opaque.strip_suffix(b"-gzip")
        }
        let (value, added) =
            with_alternatives(headers.get_all(IF_NONE_MATCH), false, strip).unwrap();
        assert_eq!(
            value,
            "\"a-gzip\", \"a\", W/\"b-gzip\", bad, \"c\", \"d-gzip\", \"d\""
        );
        assert_eq!(added.len(), 2);
        let (value, added) =
            with_alternatives(headers.get_all(IF_NONE_MATCH), true, strip).unwrap();
        assert!(value.to_str().unwrap().contains("W/\"b-gzip\", W/\"b\""));
        assert!(added.contains(&AddedTag {
            weak: true,
            opaque: b"b".to_vec()
        }));
        let mut plain = HeaderMap::new();
        plain.insert(IF_NONE_MATCH, HeaderValue::from_static("\"a\", *"));
        assert_eq!(
            with_alternatives(plain.get_all(IF_NONE_MATCH), true, strip),
            None
        );
    }

    #[test]
    fn lists_with_odd_spacing_quoted_commas_and_empty_elements() {
        let weak = Comparison::Weak;
        assert_eq!(list(&[b"\"a\",\"b\""], "\"b\"", weak), YES);
        assert_eq!(list(&[b"  \"a\" ,\t \"b\"  "], "\"b\"", weak), YES);
        assert_eq!(list(&[b",, \"a\", , W/\"b\",,"], "\"b\"", weak), YES);
        // A comma inside the quotes is part of the tag.
        assert_eq!(list(&[b"\"a,b\""], "\"a,b\"", weak), YES);
        assert_eq!(list(&[b"\"a,b\""], "\"a\"", weak), NO);
        assert_eq!(list(&[b"\"x\"", b"\"y\", \"z\""], "\"z\"", weak), YES);
        assert_eq!(list(&[b" * "], "\"z\"", weak), TagList::Any);
        assert_eq!(list(&[b"\"q\"", b"*"], "\"z\"", weak), TagList::Any);
    }

    #[test]
    fn malformed_elements_never_match_but_do_not_hide_good_ones() {
        let weak = Comparison::Weak;
        assert_eq!(list(&[b"a"], "\"a\"", weak), NO);
        assert_eq!(list(&[b"\"a"], "\"a\"", weak), NO);
        assert_eq!(list(&[b"\"a\"x"], "\"a\"", weak), NO);
        assert_eq!(list(&[b"junk \"q,r\", \"a\""], "\"a\"", weak), YES);
        assert_eq!(list(&[b"w/\"a\""], "\"a\"", weak), NO);
        assert_eq!(list(&[b"**"], "\"a\"", weak), NO);
    }

    #[test]
    fn strong_and_weak_comparison_on_both_sides() {
        // RFC 9110 §8.8.3.2's table.
        let cases = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in cases {
            let (x, y): (EntityTag, EntityTag) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(x.strong_eq(&y), strong, "{a} {b}");
            assert_eq!(x.weak_eq(&y), weak, "{a} {b}");
            let line = a.as_bytes();
            assert_eq!(
                list(&[line], b, Comparison::Strong),
                TagList::Tags { matched: strong }
            );
            assert_eq!(
                list(&[line], b, Comparison::Weak),
                TagList::Tags { matched: weak }
            );
        }
    }

    #[cfg(feature = "cache")]
    #[test]
    fn body_tags_are_fixed_xxh3_digests() {
        // XXH3-128 of the empty input, from the reference implementation.
        let empty = EntityTag::of_body(b"", false);
        assert_eq!(empty.to_string(), "\"99aa06d3014798d86001c324468d497f\"");
        let weak = EntityTag::of_body(b"", true);
        assert_eq!(weak.to_string(), "W/\"99aa06d3014798d86001c324468d497f\"");
        assert!(weak.weak_eq(&empty) && !weak.strong_eq(&empty));
    }

    #[test]
    fn single_tags_parse_or_are_refused() {
        assert!("\"\"".parse::<EntityTag>().is_ok());
        assert!(" \"a\" ".parse::<EntityTag>().is_ok());
        for bad in ["", "a", "\"a", "\"a\" \"b\"", "W/a", "\"a b\""] {
            assert!(bad.parse::<EntityTag>().is_err(), "{bad}");
        }
        assert_eq!(EntityTag::strong("a\"b"), Err(InvalidEntityTag));
        assert_eq!(EntityTag::strong("a b"), Err(InvalidEntityTag));
    }
}
