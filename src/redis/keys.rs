//! Redis key names: every key one call touches shares the hash tag `{prefix:key}`, so one call
//! touches one slot of a cluster; header-derived keys (API keys) are hashed, never stored in
//! clear.

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::key::Key;

/// A name for one layer in this process, told from every other instance's: 64 random bits
/// (seeded by the process id and the standard library's per-process random keys).
pub(crate) fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// The prefix of every layer's keys unless the user sets one.
pub(crate) const DEFAULT_PREFIX: &str = "bulwark";

/// Hex digits of the hash kept in a key name: 128 bits, ample against collisions between the
/// clients of one limit.
const HASH_HEX: usize = 32;

/// How one layer names its keys: its prefix, and the hasher (salted with the deployment's
/// secret, if any) that turns an API key into a name.
#[derive(Clone)]
pub(crate) struct KeyNames {
    prefix: String,
    /// SHA-256 with the domain tag and secret already absorbed: cloned per key.
    hasher: Sha256,
}

impl std::fmt::Debug for KeyNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("KeyNames")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl KeyNames {
    /// Names under `prefix`; `secret` salts the hash of API keys (the same on every instance
    /// of a fleet, or they would not share their counts).
    pub(crate) fn new(prefix: String, secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"tower-bulwark key v1\0");
        // The length first: no secret and key can run into each other's bytes.
        hasher.update((secret.len() as u64).to_le_bytes());
        hasher.update(secret);
        Self { prefix, hasher }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix:key}:`, the start of every key name one call for `key` touches.
    pub(crate) fn tagged(&self, key: &Key) -> Vec<u8> {
        let mut base = Vec::with_capacity(self.prefix.len() + 48);
        base.push(b'{');
        base.extend_from_slice(self.prefix.as_bytes());
        base.push(b':');
        self.encode_key(key, &mut base);
        base.extend_from_slice(b"}:");
        base
    }

    /// `{prefix:name}:` for a layer's own entry that no client key can produce (each key kind
    /// starts with its own tag: `ip:`, `s:`, `hk:`...).
    pub(crate) fn own(&self, name: &str) -> Vec<u8> {
        format!("{{{}:{name}}}:", self.prefix).into_bytes()
    }

    /// Writes `key` into a Redis key name: readable for IPs, numbers and text, hashed for
    /// header values (API keys, tokens), hex when text bytes could end the hash tag early.
    fn encode_key(&self, key: &Key, out: &mut Vec<u8>) {
        match key {
            Key::Global => out.extend_from_slice(b"global"),
            Key::Ip(ip) => {
                let _ = write!(out, "ip:{ip}");
            }
            Key::Int(n) => {
                let _ = write!(out, "i:{n}");
            }
            Key::Header(bytes) => {
                let digest = self.hasher.clone().chain_update(bytes).finalize();
                out.extend_from_slice(b"hk:");
                for b in digest.iter().take(HASH_HEX / 2) {
                    let _ = write!(out, "{b:02x}");
                }
            }
            Key::Text(text) => {
                let raw = text.as_bytes();
                if raw.iter().any(|b| matches!(b, b'{' | b'}' | b'\\')) {
                    // No raw text can produce `sx:`, so the two forms never meet.
                    out.extend_from_slice(b"sx:");
                    for b in raw {
                        let _ = write!(out, "{b:02x}");
                    }
                } else {
                    out.extend_from_slice(b"s:");
                    out.extend_from_slice(raw);
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(names: &KeyNames, key: &Key) -> String {
        String::from_utf8(names.tagged(key)).unwrap()
    }

    #[test]
    fn api_keys_never_appear_in_key_names() {
        let names = KeyNames::new("p".into(), b"");
        let secret_key = Key::from(http::HeaderValue::from_static("sk-live-0123456789"));
        let shown = name(&names, &secret_key);
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(
            shown.starts_with("{p:hk:") && shown.ends_with("}:"),
            "{shown}"
        );
        assert_eq!(shown.len(), "{p:hk:}:".len() + HASH_HEX);
        // The same key, the same name (instances share counts); another key, another name.
        assert_eq!(shown, name(&names, &secret_key));
        let other = Key::from(http::HeaderValue::from_static("sk-live-0123456788"));
        assert_ne!(shown, name(&names, &other));
    }

    #[test]
    fn the_secret_changes_every_hashed_name() {
        let key = Key::from(http::HeaderValue::from_static("sk-live-0123456789"));
        let plain = KeyNames::new("p".into(), b"");
        let salted = KeyNames::new("p".into(), b"deployment secret");
        assert_ne!(name(&plain, &key), name(&salted, &key));
        assert!(!format!("{salted:?}").contains("deployment"));
    }

    #[test]
    fn readable_kinds_stay_readable_and_braces_cannot_break_the_tag() {
        let names = KeyNames::new("p".into(), b"");
        assert_eq!(name(&names, &Key::Global), "{p:global}:");
        assert_eq!(name(&names, &Key::Int(7)), "{p:i:7}:");
        assert_eq!(
            name(&names, &Key::Ip("10.0.0.1".parse().unwrap())),
            "{p:ip:10.0.0.1}:"
        );
        assert_eq!(name(&names, &Key::from("tenant-7")), "{p:s:tenant-7}:");
        assert_eq!(name(&names, &Key::from("a}b")), "{p:sx:617d62}:");
        assert_eq!(names.own("overflow"), b"{p:overflow}:".to_vec());
    }
}
