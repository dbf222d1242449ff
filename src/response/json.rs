//! JSON answers and the small pieces every refusal shares.

use bytes::Bytes;
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
use bytes::{BufMut, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::LayerBody;

/// A JSON response with the given status.
///
/// ```
/// use bytes::Bytes;
/// use tower_bulwark::response::json_response;
///
/// let res = json_response::<http_body_util::Full<Bytes>>(http::StatusCode::TOO_MANY_REQUESTS, Bytes::from("{}"));
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["content-type"], "application/json");
/// ```
pub fn json_response<B: LayerBody>(status: StatusCode, json: Bytes) -> Response<B> {
    json_bytes(status, json, 0).map(B::from_bytes)
}

/// [`json_response`] with the body still as bytes: what a layer stores until it knows the
/// body type it answers in.
///
/// `room`: how many headers the caller adds, so that the map is allocated once, at its size.
pub(crate) fn json_bytes(status: StatusCode, json: Bytes, room: usize) -> Response<Bytes> {
    let mut res = Response::new(json);
    if room > 0 {
        // Its own content-type, the caller's headers, and the content-length a server adds.
        *res.headers_mut() = http::HeaderMap::with_capacity(room + 2);
    }
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Whole seconds, rounded up, for `Retry-After` and reset headers.
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
pub(crate) fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `{"error":"<error>","retryAfter":<secs>}` with `content-type: application/json`: the body
/// of every refusal that tells the client when to come back (429, 503). Bodies for waits
/// under [`CACHED_NUMBERS`] seconds come from `cache`, a table made on the first refusal
/// (about 80 KB per message with its handles, for the process's life): a refusal then
/// allocates no body. `cache` belongs to `error`: one static per message (`Refusal` keeps
/// one per kind), since the table is made from whichever call fills it.
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
pub(crate) fn retry_json(
    status: StatusCode,
    error: &'static str,
    retry_after_secs: u64,
    cache: &'static std::sync::OnceLock<Box<[Bytes]>>,
    room: usize,
) -> Response<Bytes> {
    let body = usize::try_from(retry_after_secs)
        .ok()
        .filter(|&secs| secs < CACHED_NUMBERS as usize)
        .map(|secs| {
            let table = cache.get_or_init(|| {
                let bodies: Vec<Vec<u8>> = (0..CACHED_NUMBERS)
                    .map(|n| retry_body(error, n).to_vec())
                    .collect();
                let ends: Vec<usize> = bodies
                    .iter()
                    .scan(0, |end, body| {
                        *end += body.len();
                        Some(*end)
                    })
                    .collect();
                let text: &'static [u8] = Box::leak(bodies.concat().into_boxed_slice());
                let mut start = 0;
                ends.into_iter()
                    .map(|end| {
                        let body = Bytes::from_static(&text[start..end]);
                        start = end;
                        body
                    })
                    .collect()
            });
            table[secs].clone()
        })
        .unwrap_or_else(|| retry_body(error, retry_after_secs));
    json_bytes(status, body, room)
}

#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
fn retry_body(error: &str, retry_after_secs: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(40 + error.len());
    body.put_slice(br#"{"error":""#);
    body.put_slice(error.as_bytes());
    body.put_slice(br#"","retryAfter":"#);
    put_u64(&mut body, retry_after_secs);
    body.put_u8(b'}');
    body.freeze()
}

/// Writes `n` in decimal, without going through `core::fmt`: two digits per division, from a
/// table of the hundred pairs (as the `itoa` crate does).
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
pub(crate) fn put_u64(buf: &mut BytesMut, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        // `n % 100` is below 100, so the index is in the table and the cast cannot truncate.
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    buf.put_slice(&digits[at..]);
}

/// What an HTTP layer's response future answers when polled again after it completed: a 500,
/// rather than a panic on a request path or a second poll of the inner future. (A generic
/// layer's future fails with [`PolledAfterCompletion`] instead.)
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "cache"))]
pub(crate) fn polled_after_completion<B: LayerBody>() -> Response<B> {
    let mut response = Response::new(B::from_bytes(Bytes::new()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The error of every generic (non-HTTP) layer's future when it is polled again after it
/// completed, in place of a panic or a second poll of the inner future. (An HTTP layer's
/// future answers a 500 instead.)
///
/// ```
/// let err = tower_bulwark::response::PolledAfterCompletion;
/// assert_eq!(err.to_string(), "a response future was polled after it completed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolledAfterCompletion;

impl std::fmt::Display for PolledAfterCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a response future was polled after it completed")
    }
}

impl std::error::Error for PolledAfterCompletion {}

#[cfg(any(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
const CACHED_NUMBERS: u64 = 1024;

/// `n` as a header value. Numbers below [`CACHED_NUMBERS`] (most remaining counts and resets in
/// seconds) come from a table built once, whose values point at static bytes: cloning one
/// allocates nothing and touches no shared reference count.
#[cfg(any(feature = "rate-limit", feature = "circuit-breaker"))]
pub(crate) fn number(n: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut text = BytesMut::new();
        let mut ends = Vec::with_capacity(CACHED_NUMBERS as usize);
        for n in 0..CACHED_NUMBERS {
            put_u64(&mut text, n);
            ends.push(text.len());
        }
        // About 4 KB of digits and 40 KB of values, made once per process and kept for its life.
        let text: &'static [u8] = Box::leak(text.to_vec().into_boxed_slice());
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let value = HeaderValue::from_maybe_shared(Bytes::from_static(&text[start..end]));
                start = end;
                value.unwrap_or(HeaderValue::from_static("0"))
            })
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(all(test, any(feature = "rate-limit", feature = "circuit-breaker")))]
mod tests {
    use bytes::BytesMut;

    use super::put_u64;

    #[test]
    fn put_u64_writes_what_display_writes() {
        let edges = [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1_000,
            65_535,
            999_999_999,
        ];
        let powers = (0..20).map(|e| 10u64.pow(e));
        let around = powers.flat_map(|p| [p - 1, p, p + 1]);
        for n in edges
            .into_iter()
            .chain(around)
            .chain([u64::MAX - 1, u64::MAX])
        {
            let mut buf = BytesMut::new();
            put_u64(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes(), "{n}");
        }
    }
}
