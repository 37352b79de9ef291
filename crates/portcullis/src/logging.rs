//! Log output: human-readable text or one JSON object per line, on stdout.
//!
//! Log lines carry what clients and identity providers sent (user names, emails,
//! groups). In text format a line break or terminal escape sequence in such a value
//! would start a forged log line or rewrite the operator's terminal, so every control
//! character in a text line, except the newline that ends it, is written escaped
//! (`\n`, `\u{1b}`). JSON lines escape them already.

use std::io::Write;

use portcullis_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Starts logging. `RUST_LOG`, when set, overrides the configured level.
pub(crate) fn init(config: &LogConfig) -> anyhow::Result<()> {
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
        .with_target(false);
    let result = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // The colours are escape sequences of their own; escaping is what matters for
        // logs that are stored and read later, which are not terminals.
        LogFormat::Text if ansi => builder.with_ansi(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .with_writer(EscapedStdout)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Standard output, with control characters in log lines escaped.
struct EscapedStdout;

impl<'a> MakeWriter<'a> for EscapedStdout {
    type Writer = Escaping<std::io::StdoutLock<'a>>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(std::io::stdout().lock())
    }
}

/// Writes each buffer (one formatted log line) with its control characters escaped,
/// keeping the final newline.
struct Escaping<W>(W);

/// The text of `line` with every control character (C0, DEL, C1 and the Unicode line
/// and paragraph separators) escaped, except a newline at its very end.
fn escape_line(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let risky = |c: char| c.is_control() && c != '\t' || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.contains(risky) && matches!(text, std::borrow::Cow::Borrowed(_)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if risky(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(end);
    std::borrow::Cow::Owned(bytes)
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_break_or_escape_in_a_value_cannot_forge_a_line() {
        let line =
            "WARN User not allowed: alice\n2026-01-01 INFO login succeeded user=admin\u{1b}[2J\n";
        let escaped = String::from_utf8(escape_line(line.as_bytes()).into_owned()).unwrap();
        assert_eq!(escaped.matches('\n').count(), 1, "{escaped}");
        assert!(escaped.ends_with('\n'));
        assert!(escaped.contains("alice\\n2026"), "{escaped}");
        assert!(escaped.contains("\\u{1b}[2J"), "{escaped}");
        assert!(!escaped.contains('\u{1b}'));
    }

    #[test]
    fn ordinary_lines_pass_unchanged() {
        let line = b"INFO listening on 127.0.0.1:8080 tls=false\n";
        assert!(matches!(escape_line(line), std::borrow::Cow::Borrowed(_)));
        let unicode = "INFO login succeeded user=zoë\tok\n";
        assert_eq!(escape_line(unicode.as_bytes()).as_ref(), unicode.as_bytes());
        let separators = "user=a\u{2028}b\u{85}c\n";
        let escaped = String::from_utf8(escape_line(separators.as_bytes()).into_owned()).unwrap();
        assert_eq!(escaped, "user=a\\u{2028}b\\u{85}c\n");
    }
}
