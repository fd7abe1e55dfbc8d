use std::process::ExitCode;

use clap::Parser;
use smartregion_ingest::config::Cli;

fn main() -> ExitCode {
    // `smartregion-ingest read ...` is the read service, the image's other mode.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    if args.get(1).is_some_and(|mode| mode == "read") {
        args.remove(1);
        let cli = smartregion_ingest::read::Cli::parse_from(args);
        smartregion_contract::logging::init(cli.log_format);
        return exit(
            runtime.block_on(smartregion_ingest::read::run(cli)),
            "read service",
        );
    }
    let cli = Cli::parse_from(args);
    smartregion_contract::logging::init(cli.log_format);
    exit(runtime.block_on(smartregion_ingest::run(cli)), "ingest")
}

fn exit(result: anyhow::Result<()>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{what} stopped");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
