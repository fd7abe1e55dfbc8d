//! smartregion-ingest: the per-tenant ingest service (HTTP and MQTT in, PostgreSQL out).
//!
//! Not built yet: this binary only answers `--version` and `--help`, so the workspace,
//! packaging and CI are in place before the service itself arrives.

use clap::Parser;

/// Per-tenant ingest service of the Smart Region Toscana platform (not implemented yet).
#[derive(Parser, Debug)]
#[command(name = "smartregion-ingest", version, about, long_about = None)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!("error: smartregion-ingest is not implemented yet; only --help and --version work");
    std::process::ExitCode::FAILURE
}
