//! Which content coding a request accepts (`Accept-Encoding`, RFC 9110 §12.5.3): the highest
//! `q` among the encodings the layer offers, ties broken by the layer's order of preference.

use http::header::ACCEPT_ENCODING;
use http::HeaderMap;

/// A content coding the layer can apply, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Deflate,
    #[cfg(feature = "compression-br")]
    Brotli,
    #[cfg(feature = "compression-zstd")]
    Zstd,
}

impl Encoding {
    /// Every coding this build knows, in the layer's order of preference when a client
    /// weighs several alike: zstd and brotli compress better than gzip at a lower cost;
    /// `deflate` last (the zlib format, which old clients read as raw DEFLATE).
    pub(crate) const PREFERENCE: &'static [Encoding] = &[
        #[cfg(feature = "compression-zstd")]
        Encoding::Zstd,
        #[cfg(feature = "compression-br")]
        Encoding::Brotli,
        Encoding::Gzip,
        Encoding::Deflate,
    ];

    /// The token in `Content-Encoding` and `Accept-Encoding`.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            #[cfg(feature = "compression-br")]
            Encoding::Brotli => "br",
            #[cfg(feature = "compression-zstd")]
            Encoding::Zstd => "zstd",
        }
    }

    /// One bit per coding, for sets of them.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Deflate => 1 << 1,
            #[cfg(feature = "compression-br")]
            Encoding::Brotli => 1 << 2,
            #[cfg(feature = "compression-zstd")]
            Encoding::Zstd => 1 << 3,
        }
    }

    fn from_token(token: &[u8]) -> Option<Token> {
        let is = |t: &[u8]| token.eq_ignore_ascii_case(t);
        // RFC 9110 §8.4.1.3: `x-gzip` is gzip.
        if is(b"gzip") || is(b"x-gzip") {
            return Some(Token::Coding(Encoding::Gzip));
        }
        if is(b"deflate") {
            return Some(Token::Coding(Encoding::Deflate));
        }
        #[cfg(feature = "compression-br")]
        if is(b"br") {
            return Some(Token::Coding(Encoding::Brotli));
        }
        #[cfg(feature = "compression-zstd")]
        if is(b"zstd") {
            return Some(Token::Coding(Encoding::Zstd));
        }
        if is(b"identity") {
            return Some(Token::Identity);
        }
        is(b"*").then_some(Token::Any)
    }

    /// The slot of an offered coding's weight (identity has none).
    fn slot(self) -> Option<usize> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(0),
            Encoding::Deflate => Some(1),
            #[cfg(feature = "compression-br")]
            Encoding::Brotli => Some(2),
            #[cfg(feature = "compression-zstd")]
            Encoding::Zstd => Some(3),
        }
    }
}

enum Token {
    Coding(Encoding),
    Identity,
    Any,
}

/// A set of codings (the ones a layer offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offered(pub(crate) u8);

impl Offered {
    pub(crate) fn contains(self, encoding: Encoding) -> bool {
        encoding != Encoding::Identity && self.0 & encoding.bit() != 0
    }
}

/// The coding to answer `headers`' request in. No `Accept-Encoding`, an empty one, or one that
/// accepts none of the offered codings gives `Identity`: the body goes as it is. (Even when
/// the client also refuses `identity`: an uncompressed answer it may not read loses less than
/// a `406` it certainly cannot.)
pub(crate) fn negotiate(headers: &HeaderMap, offered: Offered) -> Encoding {
    // Weights in thousandths (`q` has at most three decimals): per offered coding, the
    // explicit weight if the coding is named, else the wildcard's.
    let mut named = [None::<u16>; 4];
    let mut any = None::<u16>;
    let mut identity = None::<u16>;
    let mut seen = false;
    for line in headers.get_all(ACCEPT_ENCODING) {
        seen = true;
        for element in line.as_bytes().split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let token = parts.next().unwrap_or_default().trim_ascii();
            if token.is_empty() {
                continue;
            }
            let Some(weight) = weight(parts) else {
                // A malformed weight: the element says nothing we can trust.
                continue;
            };
            match Encoding::from_token(token) {
                Some(Token::Coding(encoding)) => {
                    if let Some(slot) = encoding.slot().and_then(|i| named.get_mut(i)) {
                        // Named twice: the higher weight (a client that says both meant one).
                        *slot = Some(slot.map_or(weight, |w| w.max(weight)));
                    }
                }
                Some(Token::Identity) => {
                    identity = Some(identity.map_or(weight, |w| w.max(weight)))
                }
                Some(Token::Any) => any = Some(any.map_or(weight, |w| w.max(weight))),
                None => {}
            }
        }
    }
    if !seen {
        return Encoding::Identity;
    }
    let mut best = (Encoding::Identity, 0u16);
    for &encoding in Encoding::PREFERENCE {
        if !offered.contains(encoding) {
            continue;
        }
        let weight = encoding
            .slot()
            .and_then(|i| named.get(i).copied().flatten())
            .or(any)
            .unwrap_or(0);
        // Strictly greater: an equal weight keeps the earlier (preferred) coding.
        if weight > best.1 {
            best = (encoding, weight);
        }
    }
    // A client that weighs `identity` above every coding it accepts prefers the body as
    // it is.
    if identity.is_some_and(|w| w > best.1) {
        return Encoding::Identity;
    }
    best.0
}

/// The `q` of an element's parameters, in thousandths; `None` if it is malformed. No `q`
/// is 1; other parameters are ignored.
fn weight<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<u16> {
    let mut weight = 1000;
    for param in params {
        let param = param.trim_ascii();
        let Some(value) = param
            .strip_prefix(b"q=")
            .or_else(|| param.strip_prefix(b"Q="))
        else {
            continue;
        };
        weight = qvalue(value.trim_ascii())?;
    }
    Some(weight)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(text: &[u8]) -> Option<u16> {
    let (whole, fraction) = match text {
        [w, b'.', rest @ ..] => (*w, rest),
        [w] => (*w, &[][..]),
        _ => return None,
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + fraction.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match whole {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALL: Offered = Offered(0xff);

    fn pick(lines: &[&'static str], offered: Offered) -> &'static str {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_static(line));
        }
        negotiate(&headers, offered).token()
    }

    #[test]
    fn weights_pick_and_ties_go_to_the_preference() {
        assert_eq!(pick(&[], ALL), "identity");
        assert_eq!(pick(&[""], ALL), "identity");
        assert_eq!(pick(&["gzip"], ALL), "gzip");
        assert_eq!(pick(&["GZIP ; q=0.5"], ALL), "gzip");
        assert_eq!(pick(&["x-gzip"], ALL), "gzip");
        assert_eq!(pick(&["deflate, gzip"], ALL), "gzip");
        assert_eq!(pick(&["deflate;q=1, gzip;q=0.9"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=0.001"], ALL), "gzip");
        assert_eq!(pick(&["gzip;q=0", "deflate"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=0, deflate;q=0"], ALL), "identity");
        assert_eq!(pick(&["*"], Offered(Encoding::Deflate.bit())), "deflate");
        assert_eq!(pick(&["*;q=0.5, gzip;q=0"], Offered(1 | 2)), "deflate");
        assert_eq!(pick(&["identity"], ALL), "identity");
        assert_eq!(pick(&["identity;q=0"], ALL), "identity");
        assert_eq!(pick(&["gzip;q=0.1, identity"], ALL), "identity");
        assert_eq!(pick(&["gzip, identity;q=0.5"], ALL), "gzip");
        assert_eq!(pick(&["gzip;q=0.5, identity;q=0.5"], ALL), "gzip");
        assert_eq!(
            pick(&["gzip"], Offered(Encoding::Deflate.bit())),
            "identity"
        );
        assert_eq!(pick(&["compress, unknown"], ALL), "identity");
    }

    #[test]
    fn malformed_weights_drop_only_their_element() {
        assert_eq!(pick(&["gzip;q=2, deflate"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=1.5, deflate;q=0.1"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=0.1234, deflate;q=0.1"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=, deflate;q=0.1"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=-1, deflate;q=0.1"], ALL), "deflate");
        assert_eq!(pick(&["gzip;q=1.000"], ALL), "gzip");
        assert_eq!(pick(&["gzip;level=9"], ALL), "gzip");
        assert_eq!(pick(&[",, ,gzip,"], ALL), "gzip");
    }

    #[test]
    fn qvalues_in_thousandths() {
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"0.05"), Some(50));
        assert_eq!(qvalue(b"0.999"), Some(999));
        assert_eq!(qvalue(b"1."), Some(1000));
        assert_eq!(qvalue(b"1.001"), None);
        assert_eq!(qvalue(b".5"), None);
    }

    #[cfg(feature = "compression-full")]
    #[test]
    fn every_coding_is_read() {
        assert_eq!(pick(&["gzip, deflate, br, zstd"], ALL), "zstd");
        assert_eq!(pick(&["gzip, deflate, br"], ALL), "br");
        assert_eq!(pick(&["br;q=0.8, gzip"], ALL), "gzip");
        assert_eq!(pick(&["zstd"], Offered(Encoding::Brotli.bit())), "identity");
    }
}
