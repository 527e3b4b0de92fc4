//! kcbackup's entry point: parse, run, print the error chain once, exit.

use clap::Parser;

fn main() {
    let cli = kcbackup::cli::Cli::parse();
    init_logging();
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

/// Logs go to stderr; `KCBACKUP_LOG` sets the level (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KCBACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
