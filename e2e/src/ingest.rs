//! The ingest service as a host process, started with exactly the environment the
//! operator's Deployment gives its pods (Secret references resolved, as the kubelet
//! would), and a small HTTP client to talk to it.
//!
//! Pods never run on the kwok nodes; this is how the tests prove the Deployment runnable.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

/// A running `smartregion-ingest`, killed when dropped.
pub struct Ingest {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

/// The `smartregion-ingest` binary of the same build as the running executable.
pub fn binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("unexpected executable location")?;
    for candidate in [Some(dir), dir.parent()].into_iter().flatten() {
        let binary = candidate.join("smartregion-ingest");
        if binary.is_file() {
            return Ok(binary);
        }
    }
    bail!(
        "smartregion-ingest not found next to {}; build it first with \
         `cargo build -p smartregion-ingest` (e2e/test does)",
        exe.display()
    )
}

impl Ingest {
    /// Starts the service with `env` (the Deployment's), listening on a free loopback port
    /// instead of the pod's 0.0.0.0:8080 — the one difference from a pod.
    pub fn start(cluster: &Cluster, env: Vec<(String, String)>) -> Result<Ingest> {
        let port = free_port()?;
        let log = cluster.state_dir.join(format!("ingest-{port}.log"));
        let child = Self::spawn(&log, port, &env)?;
        Ok(Ingest {
            child,
            port,
            log,
            env,
        })
    }

    fn spawn(log: &PathBuf, port: u16, env: &[(String, String)]) -> Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Command::new(binary()?)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                smartregion_contract::env::LISTEN,
                format!("127.0.0.1:{port}"),
            )
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
        self.child = Self::spawn(&self.log, self.port, &self.env)?;
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

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A plain HTTP/1.1 client (connections are reused, as a sensor gateway would).
#[derive(Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn get(&self, url: &str) -> Result<Answer> {
        let request = http::Request::get(url).body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    /// POSTs `body` with the given headers (`Authorization`, `Fiware-Service`, ...).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer> {
        let mut request = http::Request::post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(body.into()))?).await
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<Answer> {
        let response = self.0.request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}
