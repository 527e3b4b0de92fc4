//! kcbackup's entry point: parse, run, print the error chain once, exit.

use clap::Parser;

fn main() {
    let cli = kcbackup::cli::Cli::parse();
    init_logging(cli.log_level());
    // Everything the backup writes is for root's eyes only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let code = match kcbackup::run(cli) {
        Ok(exit) => exit,
        Err(err) => {
            eprintln!("kcbackup: {err:#}");
            kcbackup::error::exit_for(&err)
        }
    };
    std::process::exit(code as i32);
}

/// Logs go to stderr, coloured only on a terminal (the journal keeps them
/// plain); `KCBACKUP_LOG` sets the level, else `-q`/`-v` (default: warnings).
fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KCBACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}
