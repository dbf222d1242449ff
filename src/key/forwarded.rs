//! The forwarding headers: `X-Forwarded-For` and `Forwarded` (RFC 7239), read from the right.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderName, FORWARDED};
use http::HeaderMap;

/// Which forwarding header [`TrustedProxyIp`](super::TrustedProxyIp) reads.
///
/// ```
/// use tower_bulwark::key::{ForwardingHeader, Key, KeyExtractor, TrustedProxyIp};
///
/// assert_eq!(ForwardingHeader::default(), ForwardingHeader::XForwardedFor);
/// let key = TrustedProxyIp::new(1).header(ForwardingHeader::Forwarded);
/// let req = http::Request::get("/").header("forwarded", "for=192.0.2.60").body(()).unwrap();
/// assert_eq!(key.extract(&req), Some(Key::Ip([192, 0, 2, 60].into())));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de-facto standard).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The client IP `hops` entries from the right of the `header` list, or `None` when there are
/// fewer entries, the entry does not parse, or `hops` is 0.
pub(super) fn client_ip(
    headers: &HeaderMap,
    header: ForwardingHeader,
    hops: usize,
) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let (name, parse): (&HeaderName, fn(&str) -> Option<IpAddr>) = match header {
        ForwardingHeader::XForwardedFor => (&X_FORWARDED_FOR, parse_node),
        ForwardingHeader::Forwarded => (&FORWARDED, parse_forwarded_element),
    };
    // Several header lines form one list, in order (RFC 9110 §5.3); walk it from the right.
    // Split the raw bytes: junk a client put on the left (even non-UTF-8) must not spoil the
    // entries the proxies appended on the right.
    let mut seen = 0;
    for line in headers.get_all(name).iter().rev() {
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            seen += 1;
            if seen == hops {
                return std::str::from_utf8(entry).ok().and_then(parse);
            }
        }
    }
    None
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_node(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        let port_ok = port.is_empty() || port.strip_prefix(':')?.parse::<u16>().is_ok();
        return if port_ok { ip.parse().ok() } else { None };
    }
    entry.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

/// One `Forwarded` element: `for=1.2.3.4;proto=https;by=...`; obfuscated or `unknown` nodes
/// give `None`.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("for") {
            parse_node(value)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::key::test_support::{parts, PEER};
    use crate::key::{Key, KeyExtractor, TrustedProxyIp};

    #[test]
    fn forged_entries_left_of_trusted_hops_cannot_change_the_key() {
        let key = TrustedProxyIp::new(1);
        let honest = parts(&[("x-forwarded-for", "198.51.100.4")], Some(PEER));
        let forged = parts(
            &[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 198.51.100.4")],
            Some(PEER),
        );
        assert_eq!(key.extract(&honest), key.extract(&forged));
        assert_eq!(
            key.extract(&forged),
            Some(Key::Ip([198, 51, 100, 4].into()))
        );
    }

    #[test]
    fn several_header_lines_form_one_list() {
        let key = TrustedProxyIp::new(2);
        let req = parts(
            &[
                ("x-forwarded-for", "7.7.7.7, 203.0.113.1"),
                ("x-forwarded-for", "10.0.0.1"),
            ],
            Some(PEER),
        );
        assert_eq!(key.extract(&req), Some(Key::Ip([203, 0, 113, 1].into())));
    }

    #[test]
    fn malformed_headers_fall_back_to_the_peer_without_panicking() {
        let key = TrustedProxyIp::new(1);
        for bad in [
            "",
            ",",
            "not-an-ip",
            "999.1.1.1",
            "[::1",
            "]:80",
            "1.2.3.4:99999",
            "\"",
            "unknown",
        ] {
            let req = parts(&[("x-forwarded-for", bad)], Some(PEER));
            assert_eq!(key.extract(&req), Some(Key::Ip(PEER.into())), "{bad:?}");
        }
        let fwd = TrustedProxyIp::new(1).header(ForwardingHeader::Forwarded);
        for bad in [
            "for",
            "for=",
            "for=_hidden",
            "for=unknown",
            "by=1.2.3.4",
            ";;;",
            "for=\"[::1",
        ] {
            let req = parts(&[("forwarded", bad)], Some(PEER));
            assert_eq!(fwd.extract(&req), Some(Key::Ip(PEER.into())), "{bad:?}");
        }
        // Not even a peer: the key is missing, not a panic.
        let req = parts(&[("x-forwarded-for", "garbage")], None);
        assert_eq!(key.extract(&req), None);
    }

    #[test]
    fn non_utf8_forwarding_header_falls_back() {
        let mut req = parts(&[], Some(PEER));
        req.headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe1.2.3.4").unwrap(),
        );
        assert_eq!(
            TrustedProxyIp::new(1).extract(&req),
            Some(Key::Ip(PEER.into()))
        );
    }

    #[test]
    fn forwarded_header_entries_with_ports_and_ipv6() {
        let key = TrustedProxyIp::new(2).header(ForwardingHeader::Forwarded);
        let req = parts(
            &[(
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=192.0.2.43:80;by=10.0.0.1",
            )],
            Some(PEER),
        );
        assert_eq!(
            key.extract(&req),
            Some(Key::Ip("2001:db8:cafe::17".parse().unwrap()))
        );
    }
}
