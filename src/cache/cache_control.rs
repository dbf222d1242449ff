//! The `Cache-Control` policy a layer gives its responses (RFC 9111 §5.2.2), rendered once at
//! build time, and the few directives the layer reads back from a response it passes on.

use std::time::Duration;

use http::HeaderValue;

/// Who may store a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Visibility {
    /// Neither `public` nor `private`: the default rules of RFC 9111.
    #[default]
    Unset,
    Public,
    Private,
}

/// The directives of a policy. Rendered into one header value by [`Policy::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) max_age: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) visibility: Visibility,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) immutable: bool,
    pub(crate) no_transform: bool,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

/// The policy's `max-age` unless set otherwise: one hour (the guides' default).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_age: Some(DEFAULT_MAX_AGE),
            s_maxage: None,
            visibility: Visibility::Unset,
            no_cache: false,
            no_store: false,
            must_revalidate: false,
            proxy_revalidate: false,
            immutable: false,
            no_transform: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        }
    }
}

impl Policy {
    /// The header value: directives in a fixed order, comma-separated, seconds whole.
    pub(crate) fn render(&self) -> HeaderValue {
        let mut parts: Vec<String> = Vec::new();
        match self.visibility {
            Visibility::Public => parts.push("public".into()),
            Visibility::Private => parts.push("private".into()),
            Visibility::Unset => {}
        }
        if self.no_store {
            parts.push("no-store".into());
        }
        if self.no_cache {
            parts.push("no-cache".into());
        }
        if let Some(age) = self.max_age {
            parts.push(format!("max-age={}", age.as_secs()));
        }
        if let Some(age) = self.s_maxage {
            parts.push(format!("s-maxage={}", age.as_secs()));
        }
        if self.must_revalidate {
            parts.push("must-revalidate".into());
        }
        if self.proxy_revalidate {
            parts.push("proxy-revalidate".into());
        }
        if self.no_transform {
            parts.push("no-transform".into());
        }
        if self.immutable {
            parts.push("immutable".into());
        }
        if let Some(age) = self.stale_while_revalidate {
            parts.push(format!("stale-while-revalidate={}", age.as_secs()));
        }
        if let Some(age) = self.stale_if_error {
            parts.push(format!("stale-if-error={}", age.as_secs()));
        }
        // Directive names and digits: always a valid header value.
        HeaderValue::from_str(&parts.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// What `Expires` says under this policy: `0` (already expired) for `no-store`, now plus
    /// `max-age` when it has one, nothing otherwise.
    pub(crate) fn expires(&self) -> Expires {
        if self.no_store {
            return Expires::Zero;
        }
        match self.max_age {
            Some(age) => Expires::After(age),
            None => Expires::None,
        }
    }
}

/// What a policy writes into `Expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expires {
    None,
    Zero,
    After(Duration),
}

/// How long a response may be stored and reused without asking its origin, read from its
/// `Cache-Control`: `None` when it must not be (`no-store`, `no-cache`, and `private`: the
/// store is shared by every user of a URI) or says no lifetime. `max-age` counts; a shared cache's `s-maxage`
/// does too when shorter.
pub(crate) fn freshness(cache_control: Option<&HeaderValue>) -> Option<Duration> {
    let value = cache_control?.to_str().ok()?;
    let mut lifetime: Option<u64> = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = match directive.split_once('=') {
            Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store")
            || name.eq_ignore_ascii_case("no-cache")
            || name.eq_ignore_ascii_case("private")
        {
            return None;
        }
        if name.eq_ignore_ascii_case("max-age") || name.eq_ignore_ascii_case("s-maxage") {
            // A malformed number makes the response stale (RFC 9111 §4.2.1): no lifetime.
            let secs = arg?.parse::<u64>().ok()?;
            lifetime = Some(lifetime.map_or(secs, |l| l.min(secs)));
        }
    }
    lifetime.filter(|&l| l > 0).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_directive_in_order() {
        let policy = Policy {
            max_age: Some(Duration::from_secs(60)),
            s_maxage: Some(Duration::from_secs(600)),
            visibility: Visibility::Public,
            no_cache: true,
            no_store: false,
            must_revalidate: true,
            proxy_revalidate: true,
            immutable: true,
            no_transform: true,
            stale_while_revalidate: Some(Duration::from_secs(30)),
            stale_if_error: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(
            policy.render(),
            "public, no-cache, max-age=60, s-maxage=600, must-revalidate, proxy-revalidate, \
             no-transform, immutable, stale-while-revalidate=30, stale-if-error=86400"
        );
        assert_eq!(Policy::default().render(), "max-age=3600");
    }

    #[test]
    fn freshness_is_the_shortest_lifetime_and_none_when_not_storable() {
        let read = |v: &'static str| freshness(Some(&HeaderValue::from_static(v)));
        assert_eq!(read("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(
            read("max-age=600, s-maxage=60"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(read("MAX-AGE=\"5\""), Some(Duration::from_secs(5)));
        assert_eq!(read("max-age=60, no-cache"), None);
        assert_eq!(read("no-store"), None);
        assert_eq!(read("private, max-age=60"), None);
        assert_eq!(read("max-age=0"), None);
        assert_eq!(read("max-age=abc"), None);
        assert_eq!(read("public"), None);
        assert_eq!(freshness(None), None);
    }
}
