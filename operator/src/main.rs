use std::process::ExitCode;

use clap::Parser;
use smartregion_operator::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(Box::new(cli.run))) {
        Command::Crd { write } => match smartregion_operator::write_crds(write.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Onboard(args) => match smartregion_operator::onboard::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // With its causes: "failed to read x: No such file or directory".
                eprintln!("error: {:#}", anyhow::Error::new(error));
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            smartregion_contract::logging::init(args.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime");
            match runtime.block_on(smartregion_operator::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "operator stopped");
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
