use clap::Parser;
use smartregion_operator::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", smartregion_operator::crd_yaml()?),
    }
    Ok(())
}
