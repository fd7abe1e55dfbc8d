use std::process::ExitCode;

use clap::Parser;
use smartregion_ingest::config::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    smartregion_contract::logging::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(smartregion_ingest::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "ingest stopped");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
