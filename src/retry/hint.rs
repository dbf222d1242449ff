//! What a response says about when to come back: `Retry-After` (RFC 9110 §10.2.3) and gRPC's
//! `grpc-retry-pushback-ms`. Read defensively: a malformed value is ignored (or, for gRPC
//! pushback, means "do not retry", as the gRPC retry design says), never a panic.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// What the server asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// Nothing: the backoff decides.
    None,
    /// `Retry-After`: wait at least this long (already capped).
    After(Duration),
    /// gRPC pushback: wait exactly this long, instead of the backoff (already capped).
    Pushback(Duration),
    /// The server said not to retry (a negative or malformed gRPC pushback).
    Stop,
}

/// The wait a `Retry-After` value asks for, read at wall-clock time `now`: delta-seconds, or
/// an HTTP-date in any of its three formats (through `httpdate`). A date in the past means
/// no wait; a negative number, garbage or an empty value means no hint (`None`). A number too
/// large for a `u64` is read as `u64::MAX` seconds (the caller caps it).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderValue;
/// use tower_bulwark::retry::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// let read = |v: &'static str| parse_retry_after(&HeaderValue::from_static(v), now);
/// assert_eq!(read("120"), Some(Duration::from_secs(120)));
/// assert_eq!(read("Sun, 06 Nov 1994 08:49:47 GMT"), Some(Duration::from_secs(10)));
/// assert_eq!(read("Sunday, 06-Nov-94 08:49:47 GMT"), Some(Duration::from_secs(10))); // RFC 850
/// assert_eq!(read("Sun Nov  6 08:49:47 1994"), Some(Duration::from_secs(10))); // asctime
/// assert_eq!(read("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO)); // in the past
/// assert_eq!(read("-5"), None);
/// assert_eq!(read("soon"), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: a number, however long.
        return Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The hint of a response's headers: gRPC pushback first (for a gRPC call), else
/// `Retry-After`, capped at `cap`.
pub(crate) fn hint(headers: &HeaderMap, grpc: bool, now: SystemTime, cap: Duration) -> Hint {
    if grpc {
        if let Some(value) = headers.get(PUSHBACK) {
            return match pushback(value) {
                Some(wait) => Hint::Pushback(wait.min(cap)),
                None => Hint::Stop,
            };
        }
    }
    match headers
        .get(http::header::RETRY_AFTER)
        .and_then(|value| parse_retry_after(value, now))
    {
        Some(wait) => Hint::After(wait.min(cap)),
        None => Hint::None,
    }
}

/// `grpc-retry-pushback-ms`: a non-negative decimal number of milliseconds; anything else
/// (negative, garbage) is `None`, which the gRPC design reads as "do not retry".
fn pushback(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_millis(
        text.parse::<u64>().unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn retry_after_is_capped_and_garbage_ignored() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let read =
            |value: &'static [u8]| hint(&headers(&[("retry-after", value)]), false, now, CAP);
        assert_eq!(read(b"3"), Hint::After(Duration::from_secs(3)));
        assert_eq!(read(b" 3 "), Hint::After(Duration::from_secs(3)));
        assert_eq!(read(b"86400"), Hint::After(CAP));
        assert_eq!(read(b"99999999999999999999999999"), Hint::After(CAP));
        assert_eq!(read(b"Fri, 31 Dec 9999 23:59:59 GMT"), Hint::After(CAP));
        assert_eq!(
            read(b"Thu, 01 Jan 1970 00:00:00 GMT"),
            Hint::After(Duration::ZERO)
        );
        for garbage in [
            &b"-1"[..],
            b"1.5",
            b"",
            b"0x10",
            b"\xff\xfe",
            b"Mon, 32 Foo 2020",
        ] {
            assert_eq!(read(garbage), Hint::None, "{garbage:?}");
        }
        assert_eq!(hint(&HeaderMap::new(), false, now, CAP), Hint::None);
    }

    #[test]
    fn grpc_pushback_wins_and_a_bad_one_stops() {
        let now = UNIX_EPOCH;
        let both = headers(&[("grpc-retry-pushback-ms", b"250"), ("retry-after", b"9")]);
        assert_eq!(
            hint(&both, true, now, CAP),
            Hint::Pushback(Duration::from_millis(250))
        );
        // Not a gRPC call: the pushback header means nothing.
        assert_eq!(
            hint(&both, false, now, CAP),
            Hint::After(Duration::from_secs(9))
        );
        for bad in [&b"-1"[..], b"abc", b"", b"1e3"] {
            let map = headers(&[("grpc-retry-pushback-ms", bad)]);
            assert_eq!(hint(&map, true, now, CAP), Hint::Stop, "{bad:?}");
        }
        let huge = headers(&[("grpc-retry-pushback-ms", b"999999999999999999999")]);
        assert_eq!(hint(&huge, true, now, CAP), Hint::Pushback(CAP));
    }
}
