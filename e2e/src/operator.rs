//! The operator as a host process, started by a test against the shared cluster.
//!
//! Each test runs its own operator that only reconciles tenants carrying the test's
//! shard label, so tests run in parallel without two operators fighting over a tenant.
//! The process is killed when the [`Operator`] is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Cluster;
use crate::control_plane::free_port;

/// Label that assigns a tenant to one test's operator.
pub const SHARD_LABEL: &str = "smartregion.toscana.it/shard";

pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub shard: String,
    killed: bool,
}

/// The `smartregion-operator` binary of the same build as the running executable.
pub fn binary() -> Result<PathBuf> {
    crate::paths::workspace_binary("smartregion-operator")
}

impl Operator {
    /// Starts an operator for tenants labelled `SHARD_LABEL=<shard>`, with extra flags.
    pub fn start(cluster: &Cluster, shard: &str, extra: &[&str]) -> Result<Operator> {
        Self::start_with_env(cluster, shard, Vec::new(), extra)
    }

    /// [`Operator::start`] with an environment on top of the harness's own (e.g. the
    /// chart's Deployment's, see [`crate::workload::container_env`]); flags still win.
    pub fn start_with_env(
        cluster: &Cluster,
        shard: &str,
        env: Vec<(String, String)>,
        extra: &[&str],
    ) -> Result<Operator> {
        let metrics_port = free_port()?;
        let log = cluster
            .state_dir
            .join(format!("operator-{shard}-{metrics_port}.log"));
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(binary()?);
        command
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("SMARTREGION_DATABASE_URL", &cluster.operator_database_url)
            // As in production: the server authenticated against the cluster's CA (every
            // PostgreSQL of the harness serves a certificate it signed).
            .env("SMARTREGION_DATABASE_SSLMODE", "verify-full")
            .env("SMARTREGION_DATABASE_CA_FILE", &cluster.ca_cert)
            .env("RUST_LOG", "info,smartregion_operator=debug")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .arg("run")
            .arg("--log-format=json")
            .arg(format!("--tenant-selector={SHARD_LABEL}={shard}"))
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let elects = extra.iter().any(|arg| arg.starts_with("--leader-election"))
            || env
                .iter()
                .any(|(name, _)| name == "SMARTREGION_LEADER_ELECTION");
        if !elects {
            // Tests run several operators at once, each for its own shard.
            command.arg("--leader-election=false");
        }
        let child = command
            .spawn()
            .context("failed to start smartregion-operator")?;
        Ok(Operator {
            child,
            log,
            metrics_port,
            shard: shard.to_string(),
            killed: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub fn kill(&mut self) -> Result<()> {
        self.killed = true;
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's own /metrics text.
    pub async fn metrics(&self) -> Result<String> {
        http_get(self.metrics_port, "/metrics").await
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        crate::wait::until("the operator to exit", timeout, || {
            let status = self.child.try_wait();
            async move { Ok(status?) }
        })
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let (false, Ok(Some(status))) = (self.killed, self.child.try_wait()) {
            // It ended by itself: whatever the test reports, the reason is in its log.
            eprintln!(
                "operator (shard {}) exited with {status}; last lines of {}:\n{}",
                self.shard,
                self.log.display(),
                crate::process::log_tail(&self.log, 20)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use crate::http::http_get;
