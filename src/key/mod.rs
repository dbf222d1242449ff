//! Keys: which bucket a request is counted in.
//!
//! A [`KeyExtractor`] turns a request into a [`Key`]. HTTP layers hand extractors the request's
//! head ([`http::request::Parts`]), so one extractor works whatever the body type; layers for other
//! services hand them the request itself.
//!
//! | extractor | key |
//! |---|---|
//! | [`Global`] | one key for every request |
//! | [`PeerIp`] | the TCP peer's IP (axum's `ConnectInfo<SocketAddr>` or a `SocketAddr` extension) |
//! | [`TrustedProxyIp`] | the client IP behind N trusted proxies, from `X-Forwarded-For` or `Forwarded` |
//! | [`HeaderKey`] | a header's value, such as an API key |
//! | [`Ipv6Prefix`] | wraps an IP extractor: IPv6 clients by network prefix (e.g. /64) |
//! | [`from_fn`] | whatever a closure returns |
//!
//! A request for which the extractor finds nothing (no `ConnectInfo`, no API-key header) gets the
//! layer's configured answer for a missing key, never a panic.

mod extract;
mod forwarded;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::request::Parts;
use http::{Extensions, HeaderMap, Request};

pub use extract::{from_fn, Global, HeaderKey, Ipv6Prefix, KeyFn, PeerIp, TrustedProxyIp};
pub use forwarded::ForwardingHeader;

/// The identity a request is counted under.
///
/// Small (24 bytes on 64-bit targets, so more keys fit in cache) and cheap to clone: IPs and integers are inline,
/// text and header bytes are shared.
///
/// ```
/// use tower_bulwark::key::Key;
///
/// let a = Key::from("tenant-7");
/// let b = Key::from(std::net::IpAddr::from([10, 0, 0, 1]));
/// assert_eq!(a.to_string(), "s:tenant-7");
/// assert_eq!(b.to_string(), "ip:10.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The one key shared by every request.
    Global,
    /// A client IP address.
    Ip(IpAddr),
    /// A header value's bytes, such as an API key (owned, so a stored key never keeps a
    /// request's buffer alive).
    Header(Arc<[u8]>),
    /// Any text.
    Text(Arc<str>),
    /// Any number, such as a tenant id.
    Int(u64),
}

impl Key {
    /// The key for logs: header values (often API keys) show only their first four bytes and
    /// their length.
    ///
    /// ```
    /// use tower_bulwark::key::Key;
    ///
    /// let key = Key::from(http::HeaderValue::from_static("sk-live-0123456789"));
    /// assert_eq!(key.redacted().to_string(), "h:sk-l…(18 bytes)");
    /// assert_eq!(Key::Int(7).redacted().to_string(), "n:7");
    /// ```
    pub fn redacted(&self) -> impl fmt::Display + '_ {
        Redacted(self)
    }
}

struct Redacted<'a>(&'a Key);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Key::Header(bytes) => {
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(4)]);
                write!(f, "h:{shown}…({} bytes)", bytes.len())
            }
            other => other.fmt(f),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Global => f.write_str("global"),
            Key::Ip(ip) => write!(f, "ip:{ip}"),
            Key::Header(bytes) => write!(f, "h:{}", String::from_utf8_lossy(bytes)),
            Key::Text(text) => write!(f, "s:{text}"),
            Key::Int(n) => write!(f, "n:{n}"),
        }
    }
}

impl From<IpAddr> for Key {
    fn from(ip: IpAddr) -> Self {
        Key::Ip(ip)
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Self {
        Key::Text(Arc::from(text))
    }
}

impl From<String> for Key {
    fn from(text: String) -> Self {
        Key::Text(Arc::from(text))
    }
}

impl From<u64> for Key {
    fn from(n: u64) -> Self {
        Key::Int(n)
    }
}

impl From<HeaderValue> for Key {
    fn from(value: HeaderValue) -> Self {
        Key::from(&value)
    }
}

impl From<&HeaderValue> for Key {
    fn from(value: &HeaderValue) -> Self {
        Key::Header(Arc::from(value.as_bytes()))
    }
}

/// The head of an HTTP request: what the built-in HTTP extractors read.
///
/// Implemented for [`http::request::Parts`] (what HTTP layers hand extractors) and for
/// [`http::Request`] (so the same extractors work with
/// [`build_generic`](crate::rate_limit::RateLimitBuilder::build_generic) over HTTP requests).
/// Sealed: it cannot be implemented outside this crate.
///
/// ```
/// use tower_bulwark::key::RequestHead;
///
/// fn has_token(req: &impl RequestHead) -> bool {
///     req.headers().contains_key("authorization")
/// }
/// let req = http::Request::get("/").header("authorization", "Bearer t").body(()).unwrap();
/// assert!(has_token(&req));
/// assert!(has_token(&req.into_parts().0)); // the head alone works too
/// ```
pub trait RequestHead: sealed::Sealed {
    /// The request's headers.
    fn headers(&self) -> &HeaderMap;
    /// The request's extensions.
    fn extensions(&self) -> &Extensions;
}

impl RequestHead for Parts {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
}

impl<B> RequestHead for Request<B> {
    fn headers(&self) -> &HeaderMap {
        Request::headers(self)
    }
    fn extensions(&self) -> &Extensions {
        Request::extensions(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for http::request::Parts {}
    impl<B> Sealed for http::Request<B> {}
}

/// Turns a request into the [`Key`] it is counted under, or `None` when it has none.
///
/// HTTP layers call it with the request head (`Req = http::request::Parts`).
///
/// ```
/// use tower_bulwark::key::{Key, KeyExtractor};
///
/// /// Counts requests per tenant, read from the path `/tenants/{id}/...`.
/// #[derive(Clone)]
/// struct Tenant;
///
/// impl KeyExtractor<http::request::Parts> for Tenant {
///     fn extract(&self, req: &http::request::Parts) -> Option<Key> {
///         let id = req.uri.path().strip_prefix("/tenants/")?.split('/').next()?;
///         id.parse::<u64>().ok().map(Key::Int)
///     }
/// }
///
/// let (parts, ()) = http::Request::get("/tenants/42/orders").body(()).unwrap().into_parts();
/// assert_eq!(Tenant.extract(&parts), Some(Key::Int(42)));
/// ```
pub trait KeyExtractor<Req>: Send + Sync + 'static {
    /// The key for `req`, or `None` when the request carries none.
    fn extract(&self, req: &Req) -> Option<Key>;

    /// The key of a whole request, which is what the HTTP layers hold. A `Request` lends its
    /// head only in pieces, so the default moves them into a `Parts` for
    /// [`extract`](Self::extract) and back. This crate's extractors read the request where
    /// it is; override it only to spare those moves, with the same answer as `extract`.
    ///
    /// ```
    /// use tower_bulwark::key::{self, HeaderKey, Key, KeyExtractor};
    ///
    /// let mut req = http::Request::get("/a").header("x-api-key", "k-1").body(()).unwrap();
    /// let header = HeaderKey::new(http::HeaderName::from_static("x-api-key"));
    /// let key = KeyExtractor::<http::request::Parts>::extract_request(&header, &mut req);
    /// assert!(matches!(key, Some(Key::Header(_))));
    ///
    /// // The default, for an extractor of `Parts`: the same answer, the request unchanged.
    /// let by_path = key::from_fn(|parts: &http::request::Parts| Some(Key::from(parts.uri.path())));
    /// assert_eq!(by_path.extract_request(&mut req), Some(Key::from("/a")));
    /// assert_eq!(req.uri(), "/a");
    /// assert_eq!(req.headers()["x-api-key"], "k-1");
    /// ```
    #[inline]
    fn extract_request<B>(&self, req: &mut Request<B>) -> Option<Key>
    where
        Self: KeyExtractor<Parts>,
    {
        with_parts(req, |parts| KeyExtractor::<Parts>::extract(self, parts))
    }
}

/// Calls `f` with the head of `req` as `Parts` (which a `Request` does not lend whole): its
/// fields are moved into an empty `Parts` and back, the request left as it was.
pub(crate) fn with_parts<B, T>(req: &mut Request<B>, f: impl FnOnce(&Parts) -> T) -> T {
    fn swap<B>(parts: &mut Parts, req: &mut Request<B>) {
        std::mem::swap(&mut parts.method, req.method_mut());
        std::mem::swap(&mut parts.uri, req.uri_mut());
        std::mem::swap(&mut parts.version, req.version_mut());
        std::mem::swap(&mut parts.headers, req.headers_mut());
        std::mem::swap(&mut parts.extensions, req.extensions_mut());
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    swap(&mut parts, req);
    let answer = f(&parts);
    swap(&mut parts, req);
    answer
}

#[cfg(test)]
mod test_support {
    use std::net::SocketAddr;

    use http::request::Parts;

    pub(super) fn parts(headers: &[(&str, &str)], peer: Option<[u8; 4]>) -> Parts {
        let mut builder = http::Request::get("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(()).unwrap();
        if let Some(peer) = peer {
            req.extensions_mut().insert(SocketAddr::from((peer, 1)));
        }
        req.into_parts().0
    }

    pub(super) const PEER: [u8; 4] = [10, 9, 9, 9];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn keys_stay_small() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }
}
