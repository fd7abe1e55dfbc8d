//! The operator as a pod of the Helm chart's Deployment would run it, but as a host
//! process (kwok's pods run no containers): the Deployment's environment, a token of the
//! chart's ServiceAccount (so the chart's RBAC is what it works with) and the tier presets
//! from the chart's ConfigMap. Used by the chart test and by `e2e/cluster
//! start-chart-operator`, which `e2e/demo` calls.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::Cluster;
use crate::workload;

/// What a pod of the chart would get, written into the cluster's state directory.
pub struct AsChart {
    /// The Deployment's container environment, paths moved to the state directory.
    pub env: Vec<(String, String)>,
    /// A kubeconfig that authenticates as the chart's ServiceAccount.
    pub kubeconfig: PathBuf,
}

/// The release `release` in `namespace` (its resources are named
/// `<release>-smartregion-operator`, or `release` itself when it already ends so).
pub async fn as_chart(
    cluster: &Cluster,
    admin: &Client,
    namespace: &str,
    release: &str,
) -> Result<AsChart> {
    let fullname = if release.ends_with("smartregion-operator") {
        release.to_string()
    } else {
        format!("{release}-smartregion-operator")
    };
    let mut env = workload::container_env(admin, namespace, &fullname, "operator").await?;
    let tiers = cluster.state_dir.join(format!("{release}-tiers.yaml"));
    let configmap = Api::<ConfigMap>::namespaced(admin.clone(), namespace)
        .get(&format!("{fullname}-tiers"))
        .await
        .with_context(|| format!("the chart's ConfigMap {fullname}-tiers"))?;
    let data = configmap.data.unwrap_or_default();
    std::fs::write(&tiers, data.get("tiers.yaml").context("no tiers.yaml")?)?;
    let database_ca = cluster.state_dir.join(format!("{release}-database-ca.crt"));
    for (name, value) in env.iter_mut() {
        match name.as_str() {
            "SMARTREGION_TIERS_FILE" => *value = tiers.display().to_string(),
            // The chart mounts the CA Secret; the cluster's CA signed the server.
            "SMARTREGION_DATABASE_CA_FILE" => {
                std::fs::copy(&cluster.ca_cert, &database_ca)?;
                *value = database_ca.display().to_string();
            }
            // Many host processes share loopback: a free port, not the pod's 8080.
            "SMARTREGION_METRICS_ADDRESS" => *value = "127.0.0.1:0".into(),
            _ => {}
        }
    }
    let kubeconfig =
        service_account_kubeconfig(cluster, admin, namespace, &fullname, release).await?;
    Ok(AsChart { env, kubeconfig })
}

/// A kubeconfig in the state directory that authenticates with a one-day token of the
/// ServiceAccount `account` in `namespace`.
pub async fn service_account_kubeconfig(
    cluster: &Cluster,
    admin: &Client,
    namespace: &str,
    account: &str,
    file_name: &str,
) -> Result<PathBuf> {
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(
            account,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: Vec::new(),
                    expiration_seconds: Some(24 * 3600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .with_context(|| format!("a token of ServiceAccount {namespace}/{account}"))?
        .status
        .context("no token issued")?
        .token;
    let path = cluster.state_dir.join(format!("{file_name}.kubeconfig"));
    write_private(
        &path,
        &format!(
            "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://{address}:{port}
    certificate-authority: {ca}
users:
- name: {account}
  user:
    token: {token}
contexts:
- name: {account}
  context:
    cluster: local
    user: {account}
current-context: {account}
",
            address = crate::node::HOST_ADDRESS,
            port = cluster.apiserver_port,
            ca = cluster.ca_cert.display(),
        ),
    )?;
    Ok(path)
}

/// Writes `text` to `path` readable by its owner only (it holds a token).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Starts the chart's operator as a detached host process for the demo, after stopping
/// the one a previous run started (found by its pid file). Returns its pid and log.
pub async fn start_detached(
    cluster: &Cluster,
    namespace: &str,
    release: &str,
) -> Result<(u32, PathBuf)> {
    let admin = cluster.client().await?;
    let chart = as_chart(cluster, &admin, namespace, release).await?;
    let pid_file = cluster.state_dir.join("operator.pid");
    if let Ok(text) = std::fs::read_to_string(&pid_file)
        && let Ok(pid) = text.trim().parse::<u32>()
    {
        let marker = PathBuf::from(format!("{}/", cluster.state_dir.display()));
        if crate::process::is_ours(pid, &marker) {
            crate::process::stop(
                pid,
                &marker,
                crate::process::Signal::SIGTERM,
                std::time::Duration::from_secs(30),
            )?;
        }
    }
    let log = cluster.state_dir.join("operator.log");
    let mut args = vec!["run".to_string()];
    // The tiers file path (in the state directory) marks the process as this cluster's,
    // so `e2e/cluster down` stops it too.
    let env: Vec<(String, String)> = chart
        .env
        .into_iter()
        .chain([(
            "KUBECONFIG".to_string(),
            chart.kubeconfig.display().to_string(),
        )])
        .collect();
    if let Some((_, tiers)) = env
        .iter()
        .find(|(name, _)| name == "SMARTREGION_TIERS_FILE")
    {
        args.push(format!("--tiers-file={tiers}"));
    }
    let pid =
        crate::process::spawn_detached_with_env(&crate::operator::binary()?, &args, &env, &log)?;
    std::fs::write(&pid_file, pid.to_string())?;
    Ok((pid, log))
}
