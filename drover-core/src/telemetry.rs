//! Logging setup shared by the programs: structured `tracing` output on stderr.

/// Installs the global subscriber: `RUST_LOG` filters (default `info`); `DROVER_LOG_FORMAT=json`
/// switches to JSON lines. Secrets never reach the log: URLs are logged through
/// [`crate::config::Redacted`].
pub fn init(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = std::env::var("DROVER_LOG_FORMAT").is_ok_and(|v| v == "json");
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// A program's exit: success, or its error's first line on stderr (`program: error`) and 1.
pub fn exit<E: std::fmt::Display>(program: &str, result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {}", e.to_string().lines().next().unwrap_or(""));
            std::process::ExitCode::from(1)
        }
    }
}
