//! The compression layer's builder: which encodings, at which levels, for which responses.

use http::HeaderName;

use super::config::Config;
use super::encoder::Levels;
use super::layer::CompressionLayer;
use super::negotiate::{Encoding, Offered};
use super::skip::DEFAULT_SKIPPED_CONTENT_TYPES;
use crate::ConfigError;

/// Bodies shorter than this are sent as they are: below ~1 KiB the gzip framing and the
/// CPU cost more than the bytes saved.
pub const DEFAULT_MIN_SIZE: u64 = 1024;

/// The DEFLATE level (gzip, deflate): 6, zlib's default and the guides', the usual knee of
/// ratio against CPU.
pub const DEFAULT_DEFLATE_LEVEL: u32 = 6;

/// Brotli's quality: 4 (as tower-http's default). Brotli's qualities are not DEFLATE's
/// levels: 4 compresses better than gzip 6 at about its cost; 6 and up cost several times it.
pub const DEFAULT_BROTLI_QUALITY: u32 = 4;

/// zstd's level: 3, the library's own default (better and faster than gzip 6).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// The request header that asks for an uncompressed answer (the guides' opt-out).
pub const DEFAULT_OPT_OUT_HEADER: &str = "x-no-compression";

/// Builds a [`CompressionLayer`]; from [`CompressionLayer::builder`].
///
/// ```
/// use tower_bulwark::compression::CompressionLayer;
///
/// let layer = CompressionLayer::builder()
///     .level(4)
///     .min_size(2048)
///     .skip_content_type("application/x-ndjson")
///     .build()?;
/// # drop(layer);
/// # Ok::<(), tower_bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CompressionLayerBuilder {
    offered: u8,
    levels: Levels,
    min_size: u64,
    skipped_types: Vec<String>,
    opt_out: Option<String>,
}

impl Default for CompressionLayerBuilder {
    fn default() -> Self {
        Self {
            offered: Encoding::PREFERENCE.iter().fold(0, |set, e| set | e.bit()),
            levels: Levels {
                deflate: DEFAULT_DEFLATE_LEVEL,
                brotli: DEFAULT_BROTLI_QUALITY,
                zstd: DEFAULT_ZSTD_LEVEL,
            },
            min_size: DEFAULT_MIN_SIZE,
            skipped_types: DEFAULT_SKIPPED_CONTENT_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            opt_out: Some(DEFAULT_OPT_OUT_HEADER.to_owned()),
        }
    }
}

impl CompressionLayerBuilder {
    fn offer(mut self, encoding: Encoding, on: bool) -> Self {
        if on {
            self.offered |= encoding.bit();
        } else {
            self.offered &= !encoding.bit();
        }
        self
    }

    /// Offers gzip (on by default).
    ///
    /// ```
    /// let only_deflate = tower_bulwark::compression::CompressionLayer::builder().gzip(false);
    /// # drop(only_deflate);
    /// ```
    pub fn gzip(self, on: bool) -> Self {
        self.offer(Encoding::Gzip, on)
    }

    /// Offers `deflate`, the zlib format (on by default).
    ///
    /// ```
    /// let gzip_only = tower_bulwark::compression::CompressionLayer::builder().deflate(false);
    /// # drop(gzip_only);
    /// ```
    pub fn deflate(self, on: bool) -> Self {
        self.offer(Encoding::Deflate, on)
    }

    /// Offers brotli, `br` (on by default with the `compression-br` feature).
    ///
    /// ```
    /// let no_br = tower_bulwark::compression::CompressionLayer::builder().br(false);
    /// # drop(no_br);
    /// ```
    #[cfg(feature = "compression-br")]
    pub fn br(self, on: bool) -> Self {
        self.offer(Encoding::Brotli, on)
    }

    /// Offers zstd (on by default with the `compression-zstd` feature).
    ///
    /// ```
    /// let no_zstd = tower_bulwark::compression::CompressionLayer::builder().zstd(false);
    /// # drop(no_zstd);
    /// ```
    #[cfg(feature = "compression-zstd")]
    pub fn zstd(self, on: bool) -> Self {
        self.offer(Encoding::Zstd, on)
    }

    /// The DEFLATE level for gzip and deflate, 0 (stored) to 9 (smallest); default
    /// [`DEFAULT_DEFLATE_LEVEL`].
    ///
    /// ```
    /// use tower_bulwark::compression::CompressionLayer;
    ///
    /// assert!(CompressionLayer::builder().level(1).build().is_ok());
    /// assert_eq!(CompressionLayer::builder().level(10).build().unwrap_err().field(), "level");
    /// ```
    pub fn level(mut self, level: u32) -> Self {
        self.levels.deflate = level;
        self
    }

    /// Brotli's quality, 0 to 11; default [`DEFAULT_BROTLI_QUALITY`].
    ///
    /// ```
    /// use tower_bulwark::compression::CompressionLayer;
    ///
    /// assert_eq!(CompressionLayer::builder().br_quality(12).build().unwrap_err().field(), "br_quality");
    /// ```
    #[cfg(feature = "compression-br")]
    pub fn br_quality(mut self, quality: u32) -> Self {
        self.levels.brotli = quality;
        self
    }

    /// zstd's level, 1 to 22; default [`DEFAULT_ZSTD_LEVEL`].
    ///
    /// ```
    /// use tower_bulwark::compression::CompressionLayer;
    ///
    /// assert_eq!(CompressionLayer::builder().zstd_level(0).build().unwrap_err().field(), "zstd_level");
    /// ```
    #[cfg(feature = "compression-zstd")]
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.levels.zstd = level;
        self
    }

    /// Bodies known to be shorter than this (by `Content-Length` or their size hint) are
    /// sent as they are; default [`DEFAULT_MIN_SIZE`]. A body of unknown length (a stream)
    /// is compressed.
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::builder().min_size(0).build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// Adds a media type (or a prefix of one, like `"model/"`) whose responses are sent as
    /// they are, beside [`DEFAULT_SKIPPED_CONTENT_TYPES`].
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::builder()
    ///     .skip_content_type("application/x-protobuf")
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn skip_content_type(mut self, media_type: impl Into<String>) -> Self {
        self.skipped_types.push(media_type.into());
        self
    }

    /// The request header whose presence asks for an uncompressed answer; default
    /// [`DEFAULT_OPT_OUT_HEADER`]. The header is read by name only; `Accept-Encoding` is then
    /// removed from the request, so that nothing behind this layer compresses either.
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::builder()
    ///     .opt_out_header("x-raw")
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn opt_out_header(mut self, name: impl Into<String>) -> Self {
        self.opt_out = Some(name.into());
        self
    }

    /// No opt-out header: every client that accepts an encoding gets it.
    ///
    /// ```
    /// let layer = tower_bulwark::compression::CompressionLayer::builder()
    ///     .no_opt_out_header()
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), tower_bulwark::ConfigError>(())
    /// ```
    pub fn no_opt_out_header(mut self) -> Self {
        self.opt_out = None;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// ```
    /// use tower_bulwark::compression::CompressionLayer;
    ///
    /// let err = CompressionLayer::builder().gzip(false).deflate(false);
    /// # #[cfg(feature = "compression-br")]
    /// # let err = err.br(false);
    /// # #[cfg(feature = "compression-zstd")]
    /// # let err = err.zstd(false);
    /// assert_eq!(err.build().unwrap_err().field(), "encodings");
    /// ```
    pub fn build(self) -> Result<CompressionLayer, ConfigError> {
        if self.offered == 0 {
            return Err(ConfigError::new(
                "encodings",
                "must offer at least one encoding (gzip, deflate, br, zstd)",
            ));
        }
        if self.levels.deflate > 9 {
            return Err(ConfigError::new(
                "level",
                format!("must be 0 to 9, got {}", self.levels.deflate),
            ));
        }
        if self.levels.brotli > 11 {
            return Err(ConfigError::new(
                "br_quality",
                format!("must be 0 to 11, got {}", self.levels.brotli),
            ));
        }
        if !(1..=22).contains(&self.levels.zstd) {
            return Err(ConfigError::new(
                "zstd_level",
                format!("must be 1 to 22, got {}", self.levels.zstd),
            ));
        }
        let mut skipped_types = Vec::with_capacity(self.skipped_types.len());
        for media_type in self.skipped_types {
            let trimmed = media_type.trim();
            if trimmed.is_empty() || !trimmed.is_ascii() {
                return Err(ConfigError::new(
                    "skip_content_type",
                    format!("must be a media type or a prefix of one, got {media_type:?}"),
                ));
            }
            skipped_types.push(trimmed.to_ascii_lowercase().into_boxed_str());
        }
        let opt_out = match self.opt_out {
            None => None,
            Some(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(
                    "opt_out_header",
                    format!("must be a header name, got {name:?}"),
                )
            })?),
        };
        let mut vary_names = vec![http::header::ACCEPT_ENCODING];
        vary_names.extend(opt_out.clone());
        let vary_value = crate::headers::vary::render(&vary_names);
        Ok(CompressionLayer::from_config(Config {
            offered: Offered(self.offered),
            levels: self.levels,
            min_size: self.min_size,
            skipped_types,
            opt_out,
            vary: vary_names,
            vary_value,
            counts: Default::default(),
        }))
    }
}
