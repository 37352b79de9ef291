//! Log output: human-readable text or one JSON object per line, on stdout.

use portcullis_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Starts logging. `RUST_LOG`, when set, overrides the configured level.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&config.level).map_err(|e| {
            anyhow::anyhow!(
                "log_level (LOG_LEVEL): `{}` is not a log level ({e}). Fix: write error, warn, info, debug or trace",
                config.level
            )
        })?,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let result = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
