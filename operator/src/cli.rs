//! Command line of the `smartregion-operator` binary. Every setting has a flag and an
//! environment variable, so the Helm chart configures the operator through env.

use clap::{Parser, Subcommand};

/// Kubernetes operator for Smart Region Toscana tenants.
#[derive(Parser, Debug)]
#[command(name = "smartregion-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the SmartRegionTenant CustomResourceDefinition as YAML.
    Crd,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
