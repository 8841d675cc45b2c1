//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info` for the controller,
//! nothing for the commands people read the output of), plain or JSON.
//!
//! Nothing here logs a kubeconfig, a token or a client configuration; keep it that way.

use tracing_subscriber::{EnvFilter, filter::LevelFilter};

use crate::{Error, Result, cli::LogFormat};

/// Installs the global subscriber. Fails if `RUST_LOG` does not parse, so a typo is not silently
/// ignored.
pub fn init(format: LogFormat, default_level: LevelFilter) -> Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(default_level.into())
        .from_env()?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(Error::Telemetry)
}
