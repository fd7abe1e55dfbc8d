//! Pods on the real node: the tests' probe as a client pod (its outcome read from the
//! pod's phase and termination message), and what the kernel says about a running
//! container (its user, root filesystem and cgroup limits, read from the host).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::node::{CGROUP_ROOT, REAL_NODE_KEY, REGISTRY};
use crate::wait;

/// The probe image `e2e/images` builds.
pub fn probe_image() -> String {
    format!("{REGISTRY}/smartregion-probe:{}", env!("CARGO_PKG_VERSION"))
}

/// The ingest image `e2e/images` builds.
pub fn ingest_image() -> String {
    format!(
        "{REGISTRY}/smartregion-ingest:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The operator image `e2e/images` builds.
pub fn operator_image() -> String {
    format!(
        "{REGISTRY}/smartregion-operator:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Operator flags that put the tenants' ingest pods on the real node with the locally
/// built image, and point them at the cluster's PostgreSQL on the node's link.
pub fn real_node_operator_flags(database_port: u16) -> Vec<String> {
    vec![
        format!("--ingest-node-selector={REAL_NODE_KEY}=true"),
        format!("--ingest-toleration={REAL_NODE_KEY}:NoSchedule"),
        format!("--ingest-image={}", ingest_image()),
        "--ingest-image-pull-policy=Never".into(),
        format!("--database-public-host={}", crate::node::HOST_ADDRESS),
        format!("--database-address={}", crate::node::HOST_ADDRESS),
        format!("--database-port={database_port}"),
    ]
}

/// A pod spec's placement and security for the real node under PSA `restricted`.
fn probe_pod(name: &str, labels: serde_json::Value, args: &[&str]) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": { REAL_NODE_KEY: "true" },
            "tolerations": [{ "key": REAL_NODE_KEY, "operator": "Exists", "effect": "NoSchedule" }],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "probe",
                "image": probe_image(),
                "imagePullPolicy": "Never",
                "args": args,
                // A small request: the node has two CPUs for every test's pods.
                "resources": {
                    "requests": { "cpu": "10m", "memory": "16Mi" },
                    "limits": { "cpu": "100m", "memory": "32Mi" },
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
        },
    }))?)
}

/// What a probe pod reported.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub succeeded: bool,
    /// The probe's one line (`ok: ...` or `failed: ...`).
    pub message: String,
}

/// Runs the probe with `args` as a pod in `namespace` on the real node, waits for it to
/// finish, deletes it and returns what it reported.
pub async fn run_probe(client: &Client, namespace: &str, args: &[&str]) -> Result<Outcome> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = crate::unique_name("probe");
    pods.create(
        &PostParams::default(),
        &probe_pod(&name, json!({ "app.kubernetes.io/name": "probe" }), args)?,
    )
    .await
    .with_context(|| format!("failed to create the probe pod in {namespace}"))?;
    let finished = wait::until(
        &format!(
            "probe pod {namespace}/{name} ({}) to finish",
            args.join(" ")
        ),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let name = name.clone();
            async move {
                let pod = pods.get(&name).await?;
                let phase = pod.status.as_ref().and_then(|status| status.phase.clone());
                Ok(matches!(phase.as_deref(), Some("Succeeded" | "Failed")).then_some(pod))
            }
        },
    )
    .await?;
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    let status = finished.status.unwrap_or_default();
    let message = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find_map(|container| container.state?.terminated?.message)
        .unwrap_or_default();
    Ok(Outcome {
        succeeded: status.phase.as_deref() == Some("Succeeded"),
        message,
    })
}

/// Starts the probe's listener (`serve --port <port>`) as a pod labelled `labels` in
/// `namespace` and waits until it runs; returns the pod's IP.
pub async fn start_listener(
    client: &Client,
    namespace: &str,
    name: &str,
    labels: serde_json::Value,
    port: u16,
) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let port = port.to_string();
    pods.create(
        &PostParams::default(),
        &probe_pod(name, labels, &["serve", "--port", &port])?,
    )
    .await?;
    wait::until(
        &format!("listener pod {namespace}/{name} to run"),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await?;
                let status = pod.status.unwrap_or_default();
                let running = status.phase.as_deref() == Some("Running")
                    && status
                        .container_statuses
                        .unwrap_or_default()
                        .iter()
                        .all(|container| container.ready);
                Ok(running.then_some(()).and(status.pod_ip))
            }
        },
    )
    .await
}

/// The id of a pod's container (`containerd://<id>` in its status).
pub fn container_id(pod: &Pod, container: &str) -> Result<String> {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|status| status.name == container))
        .and_then(|status| status.container_id.clone())
        .and_then(|id| id.strip_prefix("containerd://").map(str::to_string))
        .with_context(|| {
            format!(
                "pod {} has no running {container} container",
                pod.name_any()
            )
        })
}

/// The container's cgroup directory in the v1 hierarchy of `controller`.
pub fn container_cgroup(controller: &str, id: &str) -> Result<PathBuf> {
    let root = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(CGROUP_ROOT);
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy() == id {
                return Ok(entry.path());
            }
            stack.push(entry.path());
        }
    }
    bail!("no cgroup {id} under {}", root.display())
}

/// The container's main process, as the host sees it.
pub fn container_pid(id: &str) -> Result<u32> {
    let procs = std::fs::read_to_string(container_cgroup("pids", id)?.join("cgroup.procs"))?;
    procs
        .lines()
        .filter_map(|pid| pid.trim().parse().ok())
        .min()
        .with_context(|| format!("container {id} has no process"))
}

/// The real uid of a process (`Uid:` in `/proc/<pid>/status`).
pub fn process_uid(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .context("no Uid line")?
        .parse()
        .context("a Uid that is not a number")
}

/// Tries to create a file at the root of the process's root filesystem, as root on the
/// host: only a read-only mount refuses it. Returns the error the kernel gave.
pub fn write_into_root(pid: u32) -> std::io::Result<()> {
    let path = format!("/proc/{pid}/root/smartregion-write-test");
    std::fs::write(&path, b"x")?;
    std::fs::remove_file(&path)
}

/// A long-running probe pod (its listener on [`CLIENT_PORT`]) that tests run probe
/// commands in, once kube-router has put it under its namespace's NetworkPolicies.
pub struct ClientPod {
    client: Client,
    pub namespace: String,
    pub name: String,
    pub ip: String,
}

/// The port every [`ClientPod`] listens on.
pub const CLIENT_PORT: u16 = 9000;

impl ClientPod {
    /// Starts the pod and waits until it runs and, when `policed`, until the node's
    /// firewall knows its address (kube-router writes a new pod's rules and address sets
    /// a moment after it starts; until then its namespace's policies do not hold for it).
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        labels: serde_json::Value,
        policed: bool,
    ) -> Result<ClientPod> {
        let ip = start_listener(client, namespace, name, labels, CLIENT_PORT).await?;
        if policed {
            wait::until(
                &format!("kube-router to police pod {namespace}/{name} ({ip})"),
                Duration::from_secs(60),
                || {
                    let ip = ip.clone();
                    async move { Ok(firewall_knows(&ip)?.then_some(())) }
                },
            )
            .await?;
        }
        Ok(ClientPod {
            client: client.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            ip,
        })
    }

    /// Runs `smartregion-probe <args>` in the pod; its outcome line and exit status.
    pub async fn probe(&self, args: &[&str]) -> Result<Outcome> {
        use kube::api::AttachParams;
        use tokio::io::AsyncReadExt;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut command = vec![
            "/usr/local/bin/smartregion-probe",
            "--message-file",
            "/dev/null",
        ];
        command.extend_from_slice(args);
        let mut attached = pods
            .exec(
                &self.name,
                command,
                &AttachParams::default().stdout(true).stderr(false),
            )
            .await
            .with_context(|| format!("failed to exec in {}/{}", self.namespace, self.name))?;
        let mut stdout = attached.stdout().context("no stdout")?;
        let status = attached.take_status().context("no status")?;
        let mut text = String::new();
        stdout.read_to_string(&mut text).await?;
        let status = status.await.context("the exec ended without a status")?;
        attached.join().await?;
        Ok(Outcome {
            succeeded: status.status.as_deref() == Some("Success"),
            message: text.trim().to_string(),
        })
    }

    /// Deletes the pod (at once: it holds nothing).
    pub async fn delete(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        pods.delete(&self.name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// A TCP connection from the pod to `target` (2 s timeout).
    pub async fn connect(&self, target: &str) -> Result<Outcome> {
        self.probe(&["connect", target, "--timeout-ms", "2000"])
            .await
    }
}

/// The node's firewall has rules for `ip` and has it in an address set: kube-router has
/// synced since the pod started.
fn firewall_knows(ip: &str) -> Result<bool> {
    let netns = |program: &str, args: &[&str]| -> Result<String> {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", crate::node::NETNS, program])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    };
    let rules = netns("iptables-save", &["-t", "filter"])?;
    let sets = netns("ipset", &["list"])?;
    let mentions = |text: &str| {
        text.lines()
            .any(|line| line.split([' ', '/']).any(|word| word == ip))
    };
    Ok(mentions(&rules) && mentions(&sets))
}
