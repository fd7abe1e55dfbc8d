//! `e2e/cluster`: start, inspect and stop the local Kubernetes control plane and PostgreSQL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use smartregion_e2e::Cluster;

/// A local, real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler, kwok with fake Nodes) and a throwaway PostgreSQL, as host processes.
#[derive(Parser)]
#[command(name = "e2e/cluster")]
struct Cli {
    /// Directory for certificates, data, logs and pids of this cluster.
    #[arg(long, env = "SMARTREGION_E2E_STATE", default_value_os_t = smartregion_e2e::paths::default_state_dir())]
    state_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the cluster, or reuse it when it is already running; print its environment.
    Up {
        /// PostgreSQL with TimescaleDB preloaded and the extension in the database
        /// (TimescaleDB must be installed for the machine's PostgreSQL).
        #[arg(long, env = "SMARTREGION_TIMESCALEDB", value_parser = clap::builder::BoolishValueParser::new())]
        timescaledb: bool,
    },
    /// Stop every process of the cluster and remove its state directory.
    Down,
    /// Say whether the cluster is running and healthy; print its environment if so.
    Status,
    /// Run the operator of the Helm release as one of its pods would (its Deployment's
    /// environment, its ServiceAccount's token, its tier presets), as a host process
    /// that `down` stops too; a previous one started this way is stopped first.
    StartChartOperator {
        /// Namespace of the release.
        #[arg(long, default_value = "smartregion-system")]
        namespace: String,
        /// Name of the release.
        #[arg(long, default_value = "smartregion-operator")]
        release: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Up { timescaledb } => {
            let engine = if timescaledb {
                smartregion_e2e::Engine::TimescaleDb
            } else {
                smartregion_e2e::Engine::Plain
            };
            let cluster = runtime.block_on(Cluster::up(&cli.state_dir, engine))?;
            print!("{}", cluster.exports());
            eprintln!(
                "cluster: use it with `eval \"$(e2e/cluster status)\"`, then kubectl or psql \"$DATABASE_URL\""
            );
        }
        Command::Down => {
            let stopped = Cluster::down(&cli.state_dir)?;
            eprintln!(
                "cluster: stopped {stopped} processes; removed {}",
                cli.state_dir.display()
            );
        }
        Command::StartChartOperator { namespace, release } => {
            let cluster = runtime.block_on(Cluster::running(&cli.state_dir))?;
            let (pid, log) = runtime.block_on(smartregion_e2e::chart_operator::start_detached(
                &cluster, &namespace, &release,
            ))?;
            eprintln!(
                "operator started (pid {pid}) as system:serviceaccount:{namespace}:{release}; \
                 its log: {}",
                log.display()
            );
        }
        Command::Status => match runtime.block_on(Cluster::running(&cli.state_dir)) {
            Ok(cluster) => {
                eprintln!(
                    "cluster: running and healthy in {}",
                    cli.state_dir.display()
                );
                print!("{}", cluster.exports());
            }
            Err(error) => {
                eprintln!("cluster: not running: {error:#}");
                return Ok(ExitCode::from(3));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
