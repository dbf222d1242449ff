//! The compression layer: built once, cloned freely, one [`CompressionService`] per inner
//! service.

use std::sync::Arc;

use tower_layer::Layer;

use super::builder::CompressionLayerBuilder;
use super::config::{Config, Count};
use super::service::CompressionService;

/// Compresses response bodies in the encoding the client prefers (gzip, deflate; brotli and
/// zstd with their features), with the guides' defaults, and keeps entity tags and
/// conditional requests right across encodings. See the [module docs](super).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_bulwark::compression::CompressionLayer;
///
/// let app: Router = Router::new()
///     .route("/api/report", get(|| async { "{\"rows\":[]}".repeat(200) }))
///     .layer(CompressionLayer::new());
/// # drop(app);
/// ```
#[derive(Debug, Clone)]
pub struct CompressionLayer {
    config: Arc<Config>,
}

impl CompressionLayer {
    /// The layer with every default: every encoding this build has, level 6 (gzip,
    /// deflate), bodies of 1 KiB and more, the `x-no-compression` opt-out.
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::new();
    /// assert_eq!(layer.stats().compressed, 0);
    /// ```
    pub fn new() -> Self {
        match CompressionLayerBuilder::default().build() {
            Ok(layer) => layer,
            // The defaults are valid (a test builds them); this arm is never taken.
            Err(err) => unreachable!("the default compression settings are valid: {err}"),
        }
    }

    /// A builder, to choose encodings, levels and which responses are compressed.
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::builder().level(9).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn builder() -> CompressionLayerBuilder {
        CompressionLayerBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// What the layer has done so far, counted across its services.
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::new();
    /// let stats = layer.stats();
    /// assert_eq!((stats.compressed, stats.bytes_in, stats.bytes_out), (0, 0, 0));
    /// ```
    pub fn stats(&self) -> CompressionStats {
        let counts = self.config.counts.get();
        CompressionStats {
            compressed: counts[Count::Compressed as usize],
            passed: counts[Count::Passed as usize],
            bytes_in: counts[Count::BytesIn as usize],
            bytes_out: counts[Count::BytesOut as usize],
        }
    }
}

impl Default for CompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts of what a [`CompressionLayer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressionStats {
    /// Responses compressed.
    pub compressed: u64,
    /// Responses to requests that accepted an encoding, sent as they were (too small, a
    /// skipped type, `no-transform`, already encoded, no body).
    pub passed: u64,
    /// Bytes of compressed responses' bodies before compression, counted when a body ends.
    pub bytes_in: u64,
    /// The same bodies' bytes after compression.
    pub bytes_out: u64,
}

impl<S> Layer<S> for CompressionLayer {
    type Service = CompressionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CompressionService::new(inner, self.config.clone())
    }
}
