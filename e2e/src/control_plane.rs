//! The Kubernetes components: how each is started and how we know it is working.
//!
//! Every component listens on loopback only. Readiness is always observed through the
//! API, never assumed after a delay: etcd answers `/health`, the API server `/readyz`,
//! the controller-manager and scheduler hold their leader Leases, kwok's Nodes are Ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pki::Pki;
use crate::process::{is_ours, log_tail, spawn_detached};

/// Nodes the harness creates for kwok to manage. Three, so spreading and
/// PodDisruptionBudgets behave as on a small real cluster.
pub const NODES: [&str; 3] = ["kwok-node-0", "kwok-node-1", "kwok-node-2"];
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A free TCP port on loopback. The port is released before the component binds it, which
/// leaves a small window for another process to take it; the component then fails to start
/// with "address already in use" in its log, which `cluster up` shows.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// One started component: its name, pid and log file.
pub struct Started {
    pub name: &'static str,
    pub pid: u32,
    pub log: PathBuf,
}

/// Where the components find their binaries, certificates and run directory.
pub struct Layout<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub pki: &'a Pki,
}

impl Layout<'_> {
    fn start(&self, name: &'static str, args: Vec<String>) -> Result<Started> {
        let log = self.dir.join(format!("{name}.log"));
        let pid = spawn_detached(&self.bin.join(name), &args, &log, None)?;
        Ok(Started { name, pid, log })
    }

    /// Starts `program` in the real node's network namespace (`nsenter` execs it, so the
    /// pid is the program's).
    pub fn start_in_netns(
        &self,
        name: &'static str,
        program: &Path,
        args: Vec<String>,
    ) -> Result<Started> {
        let log = self.dir.join(format!("{name}.log"));
        let mut all = vec![
            format!("--net=/run/netns/{}", crate::node::NETNS),
            "--".to_string(),
            program.display().to_string(),
        ];
        all.extend(args);
        let pid = spawn_detached(Path::new("/usr/bin/nsenter"), &all, &log, None)?;
        // nsenter execs the program: while the kernel loads it, the command line is empty
        // and the process would look gone. Wait for the program's own command line.
        let deadline = Instant::now() + Duration::from_secs(30);
        let program = program.display().to_string();
        loop {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"));
            match cmdline {
                Ok(bytes) if bytes.split(|b| *b == 0).next() == Some(program.as_bytes()) => break,
                // Gone: the caller's readiness check reports it with the log.
                Err(_) => break,
                Ok(_) if Instant::now() >= deadline => {
                    bail!("{name} (pid {pid}) did not start {program} within 30s")
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Ok(Started { name, pid, log })
    }

    /// A kubeconfig for one of the node's components, with its own client certificate.
    pub fn write_client_kubeconfig(
        &self,
        file: &str,
        apiserver_port: u16,
        cert: &Path,
        key: &Path,
    ) -> Result<PathBuf> {
        let path = self.dir.join("node").join(file);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(
            &path,
            kubeconfig_text(apiserver_port, &self.pki.ca_cert, cert, key),
        )?;
        Ok(path)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn start_etcd(&self, client_port: u16, peer_port: u16) -> Result<Started> {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        self.start(
            "etcd",
            vec![
                "--name=smartregion-e2e".into(),
                format!("--data-dir={}", self.dir.join("etcd").display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=smartregion-e2e={peer}"),
                // Throwaway data: durability buys nothing and fsync dominates on slow disks.
                "--unsafe-no-fsync".into(),
                "--quota-backend-bytes=4294967296".into(),
                "--log-level=warn".into(),
            ],
        )
    }

    pub fn start_apiserver(&self, port: u16, etcd_client_port: u16) -> Result<Started> {
        let pki = self.pki;
        self.start(
            "kube-apiserver",
            vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client_port}"),
                // The host end of the real node's link: reachable from the machine and
                // from the node's pods (through the `kubernetes` Service), nowhere else.
                format!("--advertise-address={}", crate::node::HOST_ADDRESS),
                format!("--bind-address={}", crate::node::HOST_ADDRESS),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", pki.apiserver_cert.display()),
                format!("--tls-private-key-file={}", pki.apiserver_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_public_key.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                // Logs, exec and port-forward reach the kubelet by its InternalIP, with
                // a client certificate, verifying the kubelet's own.
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
                format!("--kubelet-client-key={}", pki.admin_key.display()),
                format!("--kubelet-certificate-authority={}", pki.ca_cert.display()),
                "--allow-privileged=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )
    }

    pub fn start_controller_manager(&self) -> Result<Started> {
        let pki = self.pki;
        let kubeconfig = self.kubeconfig();
        self.start(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                // No health port: readiness is the leader Lease, and two clusters on one
                // machine (demo and tests) would fight over a fixed port.
                "--secure-port=0".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    pki.service_account_key.display()
                ),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
                format!("--cluster-signing-key-file={}", pki.ca_key.display()),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
                "--allocate-node-cidrs=false".into(),
                "--leader-elect=true".into(),
                // Quota usage and namespace deletion show up within seconds in tests.
                "--resource-quota-sync-period=10s".into(),
                "--v=1".into(),
            ],
        )
    }

    pub fn start_scheduler(&self) -> Result<Started> {
        let kubeconfig = self.kubeconfig();
        self.start(
            "kube-scheduler",
            vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--leader-elect=true".into(),
                "--v=1".into(),
            ],
        )
    }

    pub fn start_kwok(&self) -> Result<Started> {
        let config = self.dir.join("kwok.yaml");
        // An explicit (empty) configuration, so a ~/.kwok/kwok.yaml on the machine cannot
        // change the behaviour; kwok then uses its default node and pod stages.
        std::fs::write(
            &config,
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n",
        )?;
        self.start(
            "kwok",
            vec![
                format!("--kubeconfig={}", self.kubeconfig().display()),
                format!("--config={}", config.display()),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                // The lower half of the pod range; the real node has 10.244.128.0/24.
                "--cidr=10.244.0.0/17".into(),
                "--node-ip=127.0.0.1".into(),
                // Node Leases renewed every 10 s. Without them kwok's status heartbeat is
                // slower than the node controller's grace period, and Nodes flap NotReady
                // (with an Event each time) about once a minute.
                "--node-lease-duration-seconds=40".into(),
            ],
        )
    }

    /// An admin kubeconfig that refers to the certificate files (no secrets inlined).
    pub fn write_kubeconfig(&self, apiserver_port: u16) -> Result<PathBuf> {
        let pki = self.pki;
        let path = self.kubeconfig();
        std::fs::write(
            &path,
            kubeconfig_text(
                apiserver_port,
                &pki.ca_cert,
                &pki.admin_cert,
                &pki.admin_key,
            ),
        )?;
        Ok(path)
    }
}

fn kubeconfig_text(apiserver_port: u16, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: smartregion-e2e
  cluster:
    server: https://{address}:{apiserver_port}
    certificate-authority: {ca}
users:
- name: smartregion-e2e-admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: smartregion-e2e
  context:
    cluster: smartregion-e2e
    user: smartregion-e2e-admin
current-context: smartregion-e2e
",
        address = crate::node::HOST_ADDRESS,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// A client for the admin kubeconfig.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

pub async fn client_as(kubeconfig: &Path, user: &str, groups: &[&str]) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read {}", kubeconfig.display()))?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Ok(Client::try_from(config)?)
}

/// Waits until `check` answers `Some` while `started` keeps running; fails at once, with
/// the component's log tail, if it exits, and after [`START_TIMEOUT`] otherwise.
pub async fn ready<T, F, Fut>(
    started: &Started,
    marker: &Path,
    what: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last_error = None;
    loop {
        if !is_ours(started.pid, marker) {
            bail!(
                "{} exited during start-up; last lines of {}:\n{}",
                started.name,
                started.log.display(),
                log_tail(&started.log, 30)
            );
        }
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            let last = last_error
                .map(|error| format!(" (last error: {error:#})"))
                .unwrap_or_default();
            bail!(
                "{} did not become ready within {START_TIMEOUT:?}: waited for {what}{last}; last lines of {}:\n{}",
                started.name,
                started.log.display(),
                log_tail(&started.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_etcd(started: &Started, marker: &Path, client_port: u16) -> Result<()> {
    ready(started, marker, "etcd /health", || async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", client_port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response.contains("\"health\":\"true\"").then_some(()))
    })
    .await
}

pub async fn wait_apiserver(started: &Started, marker: &Path, client: &Client) -> Result<()> {
    ready(started, marker, "kube-apiserver /readyz", || async move {
        Ok(readyz(client).await.ok())
    })
    .await
}

/// `Ok` when the API server answers `/readyz` with "ok".
pub async fn readyz(client: &Client) -> Result<()> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let body = client.request_text(request).await?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        bail!("/readyz answered {body:?}")
    }
}

/// Waits for a leader Lease held by `started` (controller-manager and scheduler).
pub async fn wait_leader(started: &Started, marker: &Path, client: &Client) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    ready(started, marker, "its leader Lease in kube-system", || {
        let leases = leases.clone();
        async move {
            let lease = leases.get_opt(started.name).await?;
            Ok(lease
                .and_then(|lease| lease.spec?.holder_identity)
                .map(|_| ()))
        }
    })
    .await
}

/// The controller-manager's service-account controller has created `default/default`.
pub async fn wait_default_service_account(
    started: &Started,
    marker: &Path,
    client: &Client,
) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    ready(started, marker, "ServiceAccount default/default", || {
        let accounts = accounts.clone();
        async move { Ok(accounts.get_opt("default").await?.map(|_| ())) }
    })
    .await
}

/// Creates the kwok Nodes (if missing) and waits until kwok reports them Ready.
pub async fn create_nodes(started: &Started, marker: &Path, client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in NODES {
        if nodes.get_opt(name).await?.is_some() {
            continue;
        }
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": { KWOK_NODE_ANNOTATION: "fake" },
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            // Room for the onboarding benchmark's 200 tenants, each with its ingest and
            // read pods (400 pods of 250m): kubelet's default of 110 pods on 3 nodes
            // left 70 Pending.
            "status": {
                "allocatable": { "cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti" },
                "capacity": { "cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti" },
            },
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    ready(started, marker, "kwok to report every Node Ready", || {
        let nodes = nodes.clone();
        async move {
            for name in NODES {
                let node = nodes.get(name).await?;
                let ready = node
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True");
                if !ready {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await
}
