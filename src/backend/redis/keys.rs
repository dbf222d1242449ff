//! Redis key names: every key of one decision shares the hash tag `{prefix:key}`, so one
//! call touches one slot of a cluster.

use crate::error::ConfigError;
use crate::key::Key;

/// `{prefix:key}:`, the start of every key name one decision for `key` touches.
pub(crate) fn tagged(prefix: &str, key: &Key) -> Vec<u8> {
    let mut base = Vec::with_capacity(prefix.len() + 48);
    base.push(b'{');
    base.extend_from_slice(prefix.as_bytes());
    base.push(b':');
    encode_key(key, &mut base);
    base.extend_from_slice(b"}:");
    base
}

/// A prefix must not end the hash tag early.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err(ConfigError::new(
            "prefix",
            format!(
                "must be non-empty and hold no braces (they delimit the hash tag), got {prefix:?}"
            ),
        ));
    }
    Ok(())
}

/// Writes `key` into a Redis key name: readable for the usual kinds, hex when the bytes could
/// end the hash tag early or be mistaken for another kind.
fn encode_key(key: &Key, out: &mut Vec<u8>) {
    use std::io::Write;
    let raw: &[u8] = match key {
        Key::Global => return out.extend_from_slice(b"global"),
        Key::Ip(ip) => {
            let _ = write!(out, "ip:{ip}");
            return;
        }
        Key::Int(n) => {
            let _ = write!(out, "i:{n}");
            return;
        }
        Key::Header(bytes) => {
            out.extend_from_slice(b"h:");
            bytes
        }
        Key::Text(text) => {
            out.extend_from_slice(b"s:");
            text.as_bytes()
        }
    };
    if raw.iter().any(|b| matches!(b, b'{' | b'}' | b'\\')) {
        // `h:` becomes `hx:`, `s:` becomes `sx:`: no raw value can produce these forms.
        out.pop();
        out.extend_from_slice(b"x:");
        for b in raw {
            let _ = write!(out, "{b:02x}");
        }
    } else {
        out.extend_from_slice(raw);
    }
}
