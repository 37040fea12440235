//! Logging for every command: to stderr, as text for a terminal, text without colours or
//! timestamps under journald (it adds its own), or JSON lines.

use crate::config::LogFormat;

/// Standard error for log lines, dropping write errors. tracing-subscriber reports a
/// failed write with `eprintln!`, which panics when stderr is a closed pipe: the task
/// that logged would die. A log line must never stop the daemon.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Sets up logging once per process; `IEWATCH_LOG` takes an EnvFilter directive, else
/// `default_level` (with sqlx and hyper at warn).
pub(super) fn init(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("IEWATCH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},sqlx=warn,hyper=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if under_journald => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if let Err(e) = result {
        errln!("warning: logging not set up: {e}");
    }
}
