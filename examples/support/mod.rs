//! What every example shares.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// The crate reports through `tracing` (state changes, Redis warnings): without a subscriber
/// its warnings go nowhere. Prints them on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::builder()
                .with_default_directive(LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
}
