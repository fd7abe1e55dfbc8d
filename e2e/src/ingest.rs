//! The ingest service as a host process, started with exactly the environment the
//! operator's Deployment gives its pods (Secret references resolved, as the kubelet
//! would), and a small HTTP client to talk to it.
//!
//! Pods never run on the kwok nodes; this is how the tests prove the Deployment runnable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Cluster;
pub use crate::control_plane::free_port;

/// The environment of the Deployment's `ingest` container, with every `secretKeyRef`
/// replaced by the Secret's value.
pub async fn deployment_env(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<(String, String)>> {
    crate::workload::container_env(client, namespace, "ingest", "ingest").await
}

/// What a started `smartregion-ingest` serves: ingest, or reads (`smartregion-ingest
/// read`, the image's other mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ingest,
    Read,
}

/// A running `smartregion-ingest`, killed when dropped.
pub struct Ingest {
    child: Child,
    /// The `smartregion-ingest` executable it runs.
    program: PathBuf,
    mode: Mode,
    pub port: u16,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    /// The `cgroup.procs` files it runs in, if constrained.
    cgroup: Option<Vec<PathBuf>>,
}

/// The `smartregion-ingest` binary of the same build as the running executable.
pub fn binary() -> Result<PathBuf> {
    crate::paths::workspace_binary("smartregion-ingest")
}

impl Ingest {
    /// Starts the service with `env` (the Deployment's), listening on a free loopback port
    /// instead of the pod's 0.0.0.0:8080 — the one difference from a pod.
    pub fn start(cluster: &Cluster, env: Vec<(String, String)>) -> Result<Ingest> {
        Self::start_with(cluster, Mode::Ingest, env, None)
    }

    /// The read service with `env`, on a free loopback port.
    pub fn start_read(cluster: &Cluster, env: Vec<(String, String)>) -> Result<Ingest> {
        Self::start_with(cluster, Mode::Read, env, None)
    }

    /// As [`Ingest::start`], inside `cgroup` (its pod's limits) from its first
    /// instruction: a shell joins the cgroup, then execs the service, as runc starts a
    /// container's process. A restart runs in it too.
    pub fn start_in(
        cluster: &Cluster,
        env: Vec<(String, String)>,
        cgroup: &crate::cgroup::Cgroup,
    ) -> Result<Ingest> {
        Self::start_with(cluster, Mode::Ingest, env, Some(cgroup.procs_files()))
    }

    /// As [`Ingest::start`] or [`Ingest::start_in`], running `program` (another build of
    /// `smartregion-ingest`, for benchmarks that compare builds).
    pub fn start_program(
        cluster: &Cluster,
        program: &Path,
        env: Vec<(String, String)>,
        cgroup: Option<&crate::cgroup::Cgroup>,
    ) -> Result<Ingest> {
        let procs = cgroup.map(crate::cgroup::Cgroup::procs_files);
        Self::start_program_with(cluster, program.to_path_buf(), Mode::Ingest, env, procs)
    }

    fn start_with(
        cluster: &Cluster,
        mode: Mode,
        env: Vec<(String, String)>,
        cgroup: Option<Vec<PathBuf>>,
    ) -> Result<Ingest> {
        Self::start_program_with(cluster, binary()?, mode, env, cgroup)
    }

    fn start_program_with(
        cluster: &Cluster,
        program: PathBuf,
        mode: Mode,
        env: Vec<(String, String)>,
        cgroup: Option<Vec<PathBuf>>,
    ) -> Result<Ingest> {
        let port = free_port()?;
        let log = cluster.state_dir.join(format!("ingest-{port}.log"));
        let child = Self::spawn(&program, mode, &log, port, &env, cgroup.as_deref())?;
        Ok(Ingest {
            child,
            program,
            mode,
            port,
            log,
            env,
            cgroup,
        })
    }

    fn spawn(
        program: &Path,
        mode: Mode,
        log: &PathBuf,
        port: u16,
        env: &[(String, String)],
        cgroup: Option<&[PathBuf]>,
    ) -> Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = match cgroup {
            None => Command::new(program),
            Some(procs) => {
                // sh's own pid is the service's after exec.
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg(r#"for procs in "$@"; do echo $$ > "$procs" || exit 1; done; exec "$0""#)
                    .arg(program)
                    .args(procs);
                command
            }
        };
        let listen = match mode {
            Mode::Ingest => smartregion_contract::env::LISTEN,
            Mode::Read => {
                command.arg("read");
                smartregion_contract::env::READ_LISTEN
            }
        };
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(listen, format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("failed to start smartregion-ingest")
    }

    /// SIGKILL, as an OOM kill or a node loss would end the pod.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts it again on the same port, as the Deployment would replace the pod.
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            &self.program,
            self.mode,
            &self.log,
            self.port,
            &self.env,
            self.cgroup.as_deref(),
        )?;
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` answers 200 (the database is reachable).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let http = HttpClient::new();
        let url = self.url("/readyz");
        let log = self.log.clone();
        let result = crate::wait::until("ingest to be ready", timeout, || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let response = http.get(&url).await?;
                Ok((response.status == 200).then_some(()))
            }
        })
        .await;
        if result.is_err() || !self.running() {
            bail!(
                "ingest did not become ready ({result:?}); last lines of {}:\n{}",
                log.display(),
                crate::process::log_tail(&log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use crate::http::{Answer, HttpClient};

/// An NGSI-v2 notification just under the 8 MiB body limit, as Orion sends them for
/// entities with long text attributes: `entities` entities, each one number (sensor
/// `<prefix>-<n>`) and text filling the rest.
pub fn near_limit_notification(prefix: &str, entities: usize) -> String {
    let text = "t".repeat(8 * 1024 * 1024 / entities - 512);
    let data: Vec<serde_json::Value> = (0..entities)
        .map(|n| {
            serde_json::json!({
                "id": format!("{prefix}-{n}"),
                "type": "AirQualityObserved",
                "NO2": {"type": "Number", "value": n,
                        "metadata": {"TimeInstant": {"type": "DateTime", "value": "2026-11-23T10:00:00Z"}}},
                "description": {"type": "Text", "value": text},
            })
        })
        .collect();
    let body = serde_json::json!({ "subscriptionId": "sub-memory", "data": data }).to_string();
    assert!(body.len() < 8 * 1024 * 1024, "{} bytes", body.len());
    body
}
