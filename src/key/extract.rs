//! The built-in extractors: global, peer IP, client IP behind trusted proxies, IPv6 prefix,
//! header, closure.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::HeaderName;
use http::request::Parts;
use http::Request;

use super::forwarded::{self, ForwardingHeader};
use super::{Key, KeyExtractor, RequestHead};

/// The `extract_request` of an extractor that reads a `Request` as well as its `Parts`: it
/// reads the request where it is (written once for the extractors below).
macro_rules! read_requests_in_place {
    () => {
        #[inline]
        fn extract_request<B>(&self, req: &mut Request<B>) -> Option<Key>
        where
            Self: KeyExtractor<Parts>,
        {
            KeyExtractor::<Request<B>>::extract(self, req)
        }
    };
}

/// One key for every request: a single limit for the whole service.
///
/// ```
/// use tower_bulwark::key::{Global, Key, KeyExtractor};
///
/// assert_eq!(Global.extract(&"any request"), Some(Key::Global));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl<Req> KeyExtractor<Req> for Global {
    fn extract(&self, _req: &Req) -> Option<Key> {
        Some(Key::Global)
    }

    read_requests_in_place!();
}

/// The IP of the TCP peer.
///
/// Read from axum's `ConnectInfo<SocketAddr>` (**needs this crate's `axum` feature**; serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`) or from a plain `SocketAddr` request
/// extension. Without either every request has no key, gets the layer's
/// [`MissingKey`](crate::rate_limit::MissingKey) answer (default 500), and a warning is logged
/// once. Behind a proxy the peer is the proxy: use [`TrustedProxyIp`] there.
///
/// ```
/// use std::net::SocketAddr;
/// use tower_bulwark::key::{Key, KeyExtractor, PeerIp};
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 5555)));
/// let (parts, ()) = req.into_parts();
/// assert_eq!(PeerIp.extract(&parts), Some(Key::Ip([192, 0, 2, 1].into())));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIp;

impl PeerIp {
    fn addr(req: &impl RequestHead) -> Option<IpAddr> {
        let extensions = req.extensions();
        #[cfg(feature = "axum")]
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
            return Some(info.0.ip());
        }
        let addr = extensions.get::<SocketAddr>().map(SocketAddr::ip);
        if addr.is_none() {
            warn_no_peer_once();
        }
        addr
    }
}

/// A missing peer address is a set-up mistake, not a client's: say so once, loudly.
fn warn_no_peer_once() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "key::PeerIp found no peer address on a request: serve axum with \
             `into_make_service_with_connect_info::<SocketAddr>()` and enable tower-bulwark's \
             `axum` feature, or insert a `SocketAddr` extension; such requests get the layer's \
             missing-key answer"
        );
    }
}

impl<R: RequestHead> KeyExtractor<R> for PeerIp {
    fn extract(&self, req: &R) -> Option<Key> {
        Self::addr(req).map(Key::Ip)
    }

    read_requests_in_place!();
}

/// The client IP behind a known number of trusted reverse proxies.
///
/// Each proxy appends the address it received the request from, so with `hops` trusted proxies
/// the client is the `hops`-th entry **from the right**. Entries further left were written by
/// the client and are never trusted: a client cannot choose its own key by sending a forged
/// header. When the header is missing, has fewer entries than `hops`, or the chosen entry is not
/// an IP address, the key falls back to the TCP peer's IP (as [`PeerIp`]).
///
/// Trust is by position only: this is right when every request reaches the service through
/// exactly `hops` proxies that each **append** to the header read here (nginx's
/// `$proxy_add_x_forwarded_for`, Envoy, cloud load balancers). If clients can also reach the
/// service directly, or the proxies write the other header, a client can choose its key.
///
/// ```
/// use tower_bulwark::key::{Key, KeyExtractor, TrustedProxyIp};
///
/// // Two proxies (a CDN, then our load balancer) sit in front of the service.
/// let key = TrustedProxyIp::new(2);
/// let (parts, ()) = http::Request::get("/")
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2") // 6.6.6.6 is forged
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(key.extract(&parts), Some(Key::Ip([203, 0, 113, 9].into())));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TrustedProxyIp {
    hops: usize,
    header: ForwardingHeader,
}

impl TrustedProxyIp {
    /// Trust `hops` proxies in front of the service, reading `X-Forwarded-For`.
    ///
    /// `hops = 0` means no proxy is trusted: the key is the peer IP.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use tower_bulwark::key::{Key, KeyExtractor, TrustedProxyIp};
    ///
    /// let mut req = http::Request::get("/").header("x-forwarded-for", "6.6.6.6").body(()).unwrap();
    /// req.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 1], 443)));
    /// assert_eq!(TrustedProxyIp::new(1).extract(&req), Some(Key::Ip([6, 6, 6, 6].into())));
    /// assert_eq!(TrustedProxyIp::new(0).extract(&req), Some(Key::Ip([10, 0, 0, 1].into())));
    /// ```
    pub fn new(hops: usize) -> Self {
        Self {
            hops,
            header: ForwardingHeader::XForwardedFor,
        }
    }

    /// Read `header` instead of `X-Forwarded-For`.
    ///
    /// ```
    /// use tower_bulwark::key::{ForwardingHeader, Key, KeyExtractor, TrustedProxyIp};
    ///
    /// let key = TrustedProxyIp::new(1).header(ForwardingHeader::Forwarded);
    /// let (parts, ()) = http::Request::get("/")
    ///     .header("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// assert_eq!(key.extract(&parts), Some(Key::Ip("2001:db8::7".parse().unwrap())));
    /// ```
    pub fn header(mut self, header: ForwardingHeader) -> Self {
        self.header = header;
        self
    }

    fn client_ip(&self, req: &impl RequestHead) -> Option<IpAddr> {
        forwarded::client_ip(req.headers(), self.header, self.hops)
    }
}

impl<R: RequestHead> KeyExtractor<R> for TrustedProxyIp {
    fn extract(&self, req: &R) -> Option<Key> {
        self.client_ip(req)
            .or_else(|| PeerIp::addr(req))
            .map(Key::Ip)
    }

    read_requests_in_place!();
}

/// Counts IPv6 clients by network prefix rather than by full address.
///
/// One IPv6 client usually holds a whole /64 (often a /56 or /48): keyed by full address it can
/// rotate addresses to escape its limit and to fill the key store. Wrap an IP extractor to key
/// IPv6 clients by their first `bits` bits; IPv4 keys, and IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`, which become plain IPv4), are left whole.
///
/// ```
/// use std::net::SocketAddr;
/// use tower_bulwark::key::{Ipv6Prefix, Key, KeyExtractor, PeerIp};
///
/// let key = Ipv6Prefix::new(PeerIp, 64);
/// let from = |addr: &str| {
///     let mut req = http::Request::new(());
///     req.extensions_mut().insert(addr.parse::<SocketAddr>().unwrap());
///     key.extract(&req.into_parts().0)
/// };
/// assert_eq!(from("[2001:db8:1:2:aaaa::1]:443"), from("[2001:db8:1:2:bbbb::9]:443"));
/// assert_eq!(from("[2001:db8:1:2::1]:443"), Some(Key::Ip("2001:db8:1:2::".parse().unwrap())));
/// assert_eq!(from("[::ffff:192.0.2.7]:443"), Some(Key::Ip("192.0.2.7".parse().unwrap())));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Prefix<E> {
    inner: E,
    bits: u8,
}

impl<E> Ipv6Prefix<E> {
    /// Keys IPv6 addresses from `inner` by their first `bits` bits (at most 128).
    pub fn new(inner: E, bits: u8) -> Self {
        Self {
            inner,
            bits: bits.min(128),
        }
    }
}

impl<R, E: KeyExtractor<R>> KeyExtractor<R> for Ipv6Prefix<E> {
    fn extract(&self, req: &R) -> Option<Key> {
        self.inner.extract(req).map(|key| match key {
            Key::Ip(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => Key::Ip(IpAddr::V4(v4)),
                None => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(self.bits))
                        .unwrap_or(0);
                    Key::Ip(IpAddr::V6((u128::from(ip) & mask).into()))
                }
            },
            other => other,
        })
    }
}

/// The value of a request header, such as an API key.
///
/// An empty value, or one of only spaces and tabs, is no key: the request gets the layer's
/// missing-key answer rather than a limit shared by everyone who sends the header empty.
///
/// ```
/// use tower_bulwark::key::{HeaderKey, Key, KeyExtractor};
///
/// let key = HeaderKey::new(http::HeaderName::from_static("x-api-key"));
/// let (parts, ()) = http::Request::get("/")
///     .header("x-api-key", "k-123")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(key.extract(&parts), Some(Key::Header(b"k-123"[..].into())));
/// let empty = http::Request::get("/").header("x-api-key", "").body(()).unwrap();
/// assert_eq!(key.extract(&empty), None);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
    max_len: usize,
}

impl HeaderKey {
    /// The longest value accepted by default, in bytes.
    ///
    /// ```
    /// use tower_bulwark::key::{HeaderKey, KeyExtractor};
    ///
    /// let key = HeaderKey::new(http::HeaderName::from_static("x-api-key"));
    /// let long = "k".repeat(HeaderKey::DEFAULT_MAX_LEN + 1);
    /// let req = http::Request::get("/").header("x-api-key", long).body(()).unwrap();
    /// assert_eq!(key.extract(&req), None); // too long to be a key
    /// ```
    pub const DEFAULT_MAX_LEN: usize = 256;

    /// Key requests by the first value of header `name`.
    ///
    /// ```
    /// use tower_bulwark::key::{HeaderKey, Key, KeyExtractor};
    ///
    /// let key = HeaderKey::new(http::header::AUTHORIZATION);
    /// let req = http::Request::get("/").header("authorization", "Bearer t0k").body(()).unwrap();
    /// assert_eq!(key.extract(&req), Some(Key::from(http::HeaderValue::from_static("Bearer t0k"))));
    /// assert_eq!(key.extract(&http::Request::new(())), None);
    /// ```
    pub fn new(name: HeaderName) -> Self {
        Self {
            name,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }

    /// The longest value used as a key (default [`DEFAULT_MAX_LEN`](Self::DEFAULT_MAX_LEN)
    /// bytes); a longer value counts as no key, so that stored keys stay small.
    ///
    /// ```
    /// use tower_bulwark::key::{HeaderKey, KeyExtractor};
    ///
    /// let key = HeaderKey::new(http::HeaderName::from_static("x-api-key")).max_len(4);
    /// let (parts, ()) = http::Request::get("/")
    ///     .header("x-api-key", "too-long")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// assert_eq!(key.extract(&parts), None);
    /// ```
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }
}

impl<R: RequestHead> KeyExtractor<R> for HeaderKey {
    fn extract(&self, req: &R) -> Option<Key> {
        req.headers()
            .get(&self.name)
            .filter(|value| value.len() <= self.max_len && !is_blank(value.as_bytes()))
            .map(Key::from)
    }

    read_requests_in_place!();
}

/// True for a value that is empty or only optional whitespace (RFC 9110 §5.6.3: spaces, tabs).
fn is_blank(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b' ' || b == b'\t')
}

/// An extractor from a closure; see [`from_fn`].
///
/// ```
/// use tower_bulwark::key::{from_fn, Key, KeyExtractor, KeyFn};
///
/// let by_len: KeyFn<_, String> = from_fn(|s: &String| Some(Key::Int(s.len() as u64)));
/// assert_eq!(by_len.extract(&"four".to_owned()), Some(Key::Int(4)));
/// ```
pub struct KeyFn<F, Req> {
    f: F,
    _req: PhantomData<fn(&Req)>,
}

impl<F: Clone, Req> Clone for KeyFn<F, Req> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _req: PhantomData,
        }
    }
}

impl<F, Req> fmt::Debug for KeyFn<F, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn").finish_non_exhaustive()
    }
}

/// Keys requests with a closure.
///
/// ```
/// use tower_bulwark::key::{from_fn, Key, KeyExtractor};
///
/// // One key per HTTP method.
/// let by_method = from_fn(|req: &http::request::Parts| Some(Key::from(req.method.as_str())));
/// let (parts, ()) = http::Request::post("/").body(()).unwrap().into_parts();
/// assert_eq!(by_method.extract(&parts), Some(Key::from("POST")));
/// ```
pub fn from_fn<F, Req>(f: F) -> KeyFn<F, Req>
where
    F: Fn(&Req) -> Option<Key> + Send + Sync + 'static,
{
    KeyFn {
        f,
        _req: PhantomData,
    }
}

impl<F, Req> KeyExtractor<Req> for KeyFn<F, Req>
where
    F: Fn(&Req) -> Option<Key> + Send + Sync + 'static,
    Req: 'static,
{
    fn extract(&self, req: &Req) -> Option<Key> {
        (self.f)(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::test_support::{parts, PEER};

    #[test]
    fn too_few_entries_fall_back_to_the_peer() {
        let key = TrustedProxyIp::new(3);
        let req = parts(&[("x-forwarded-for", "1.2.3.4, 5.6.7.8")], Some(PEER));
        assert_eq!(key.extract(&req), Some(Key::Ip(PEER.into())));
    }

    #[test]
    fn zero_hops_uses_the_peer() {
        let req = parts(&[("x-forwarded-for", "1.2.3.4")], Some(PEER));
        assert_eq!(
            TrustedProxyIp::new(0).extract(&req),
            Some(Key::Ip(PEER.into()))
        );
    }

    #[test]
    fn header_key_missing_is_none() {
        let key = HeaderKey::new(HeaderName::from_static("x-api-key"));
        assert_eq!(key.extract(&parts(&[], None)), None);
    }

    #[test]
    fn header_key_empty_or_blank_is_none() {
        let key = HeaderKey::new(HeaderName::from_static("x-api-key"));
        for blank in ["", " ", "\t", " \t  "] {
            assert_eq!(
                key.extract(&parts(&[("x-api-key", blank)], None)),
                None,
                "{blank:?}"
            );
        }
        assert_eq!(
            key.extract(&parts(&[("x-api-key", " k ")], None)),
            Some(Key::Header(b" k "[..].into()))
        );
    }

    #[test]
    fn ipv6_prefix_edges() {
        let v6 = |s: &str| Key::Ip(s.parse().unwrap());
        let key = |bits: u8, peer: &str| {
            let mut req = http::Request::new(());
            req.extensions_mut()
                .insert(SocketAddr::new(peer.parse().unwrap(), 1));
            Ipv6Prefix::new(PeerIp, bits).extract(&req.into_parts().0)
        };
        assert_eq!(key(0, "2001:db8::1"), Some(v6("::")));
        assert_eq!(key(128, "2001:db8::1"), Some(v6("2001:db8::1")));
        assert_eq!(key(200, "2001:db8::1"), Some(v6("2001:db8::1")));
        assert_eq!(
            key(48, "2001:db8:abcd:1234::1"),
            Some(v6("2001:db8:abcd::"))
        );
        assert_eq!(key(64, "192.0.2.1"), Some(v6("192.0.2.1")));
    }
}
