//! The real node: containerd, runc and the CNI plugins from Debian, kubelet and kube-proxy
//! from the Kubernetes wrapper module, kube-router enforcing NetworkPolicies and CoreDNS
//! as a pod, all in a network namespace of their own.
//!
//! The machine is shared, so the node is built to change as little of it as possible and
//! to give everything back:
//! - Its network lives in the namespace [`NETNS`], joined to the machine by one veth pair
//!   (`srt-host` 10.250.250.1 - `srt-node` 10.250.250.2). The API server and PostgreSQL
//!   listen on the host end; the pods' routes, kube-proxy's and kube-router's iptables
//!   chains and ipsets, and the forwarding sysctl are the namespace's own.
//! - No pod packet can leave the machine: the namespace has no default route, and before
//!   any pod starts a rule drops whatever a pod sends that is not for the node's link,
//!   the pod range or the service range ([`POD_EGRESS_CHAIN`]). IPv6 is off in it.
//! - A canary namespace ([`CANARY_NETNS`], 10.250.251.1), routed from the node but outside
//!   the allowed set, lets a test prove that rule without aiming at any real address.
//! - kubelet sets machine-wide sysctls (`vm.overcommit_memory`, `kernel.panic`, ...): their
//!   values before it starts are saved and put back by [`teardown`] (`cluster down`).
//! - Some of the node's software makes directories of the machine the first time it runs
//!   there ([`FIRST_RUN_PATHS`]: `ip netns add` mounts [`RUN_NETNS`] onto itself,
//!   containerd's shims, CNI's cache, kubelet's device plugins, mount's `utab`): which of
//!   them did not exist is recorded before the node starts, and those are removed (and
//!   unmounted) once it is stopped, so every run starts from the state a fresh machine is
//!   in.
//! - containerd's and kubelet's files, mounts and logs stay under the state directory,
//!   its cgroups under [`CGROUP_ROOT`].
//!
//! One real node per machine (the sysctls are the machine's): [`claim`] refuses a second.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use crate::control_plane::{Layout, Started};
use crate::process::{self, Signal};

pub const NETNS: &str = "smartregion-node";
pub const CANARY_NETNS: &str = "smartregion-canary";
const HOST_LINK: &str = "srt-host";
const NODE_LINK: &str = "srt-node";
const CANARY_LINK: &str = "srt-canary";
/// The host end of the node's link: the API server and PostgreSQL listen here.
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 250, 250, 1);
/// The node's own address (its InternalIP; kubelet listens here).
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 250, 250, 2);
pub const LINK_CIDR: &str = "10.250.250.0/30";
/// The canary: routed from the node, outside what pods may reach.
pub const CANARY_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 250, 251, 1);
const CANARY_NODE_ADDRESS: &str = "10.250.251.2";
/// The real node's pods (kwok's fake pods use the lower half of 10.244.0.0/16).
pub const POD_CIDR: &str = "10.244.128.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
pub const NODE_NAME: &str = "smartregion-node";
/// Label and taint of the real node: only pods that tolerate it land there, so tests
/// decide where every pod runs.
pub const REAL_NODE_KEY: &str = "smartregion.local/real-node";
/// Chain (table `mangle`, hook POSTROUTING, in the node's namespace) that drops pod
/// traffic to anything but the allowed ranges.
pub const POD_EGRESS_CHAIN: &str = "SMARTREGION-POD-EGRESS";
/// Parent of every cgroup the node's pods get (cgroupfs driver).
pub const CGROUP_ROOT: &str = "smartregion-node";
/// Where the owner of the machine's real node is written (its state directory).
const OWNER_FILE: &str = "/run/smartregion-node.owner";
/// The kernel settings kubelet changes on the whole machine.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// The images every node imports (built by the `images` command into
/// [`crate::paths::images_dir`]).
pub const IMAGES: [&str; 5] = [
    "pause",
    "smartregion-ingest",
    "smartregion-operator",
    "smartregion-probe",
    "coredns",
];
pub const REGISTRY: &str = "smartregion.local";

/// Files of the node under the cluster's state directory.
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Self {
        Paths {
            dir: state_dir.join("node"),
        }
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    fn sysctls(&self) -> PathBuf {
        self.dir.join("saved-sysctls.json")
    }
    fn first_run_paths(&self) -> PathBuf {
        self.dir.join("created-on-the-machine.json")
    }
}

/// Where `ip netns` keeps its named namespaces (a bind mount of itself, made shared).
pub const RUN_NETNS: &str = "/run/netns";

/// Paths outside the state directory that the node's software creates on a machine where
/// they do not exist, none of which can be moved by configuration: `ip netns`' mount
/// point, containerd's shim sockets (`/run/containerd/s`), libcni's result cache,
/// kubelet's device-plugin socket and container log links, and libmount's `utab`
/// (kubelet mounts volumes with mount(8)). (kubectl's discovery cache is moved into the
/// state directory with `KUBECACHEDIR` instead: a user's `~/.kube` is never touched.)
pub const FIRST_RUN_PATHS: [&str; 7] = [
    RUN_NETNS,
    "/run/containerd",
    "/run/mount",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
];

/// Which of [`FIRST_RUN_PATHS`] the node created (they did not exist before it started),
/// and whether [`RUN_NETNS`] was a mount point.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
struct CreatedOnTheMachine {
    paths: Vec<String>,
    run_netns_mount: bool,
}

/// What the node changed on the machine, saved before the change.
#[derive(Serialize, Deserialize, Debug, Default)]
struct Saved {
    sysctls: Vec<(String, String)>,
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// `program args` inside the node's network namespace.
fn in_node(program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", NETNS, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn in_canary(program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", CANARY_NETNS, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn netns_exists(name: &str) -> bool {
    Path::new(RUN_NETNS).join(name).exists()
}

/// Whether `path` is a mount point in this process's mount table.
fn is_mount_point(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .any(|point| Path::new(&point.replace("\\040", " ")) == path)
}

/// Refuses when another cluster's real node runs on this machine; clears what a node
/// whose cluster is gone left behind.
pub fn claim(state_dir: &Path) -> Result<()> {
    let owner = std::fs::read_to_string(OWNER_FILE).ok().map(PathBuf::from);
    if let Some(owner) = owner
        && owner != state_dir
    {
        let marker = PathBuf::from(format!("{}/", owner.display()));
        if !process::find_all(&marker).is_empty() {
            bail!(
                "the cluster in {} runs this machine's real node (only one can: kubelet sets \
                 machine-wide kernel settings); stop it first with `e2e/cluster --state-dir {} down`",
                owner.display(),
                owner.display()
            );
        }
        eprintln!(
            "cluster: clearing the real node left by the cluster in {}",
            owner.display()
        );
        teardown(&owner)?;
    } else if netns_exists(NETNS) {
        teardown(state_dir)?;
    }
    std::fs::write(OWNER_FILE, state_dir.display().to_string())
        .with_context(|| format!("failed to write {OWNER_FILE}"))?;
    Ok(())
}

/// The node's network: namespaces, links, addresses, routes, the egress rule.
pub fn network_up(paths: &Paths) -> Result<()> {
    // Recorded before anything of the node runs, so teardown gives back only what this
    // node created (another program's namespaces may live in /run/netns too).
    let created = CreatedOnTheMachine {
        paths: FIRST_RUN_PATHS
            .iter()
            .filter(|path| !Path::new(path).exists())
            .map(|path| path.to_string())
            .collect(),
        run_netns_mount: !is_mount_point(Path::new(RUN_NETNS)),
    };
    std::fs::create_dir_all(&paths.dir)?;
    std::fs::write(
        paths.first_run_paths(),
        serde_json::to_vec_pretty(&created)?,
    )?;
    run("ip", &["netns", "add", NETNS])?;
    run("ip", &["netns", "add", CANARY_NETNS])?;
    // IPv6 off before any link exists in the namespace; forwarding on (both per namespace).
    for (key, value) in [
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
        ("net.ipv4.ip_forward", "1"),
    ] {
        in_node("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
    }
    for (key, value) in [
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
    ] {
        in_canary("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
    }
    // The rule first: nothing a pod sends gets past the node unless it is for the link,
    // the pods or a Service (before DNAT). It sits in mangle/POSTROUTING, which every
    // forwarded packet crosses after the filter table's verdicts (kube-router ACCEPTs
    // what NetworkPolicies allow; that ends only the filter table's walk).
    in_node("iptables", &["-w", "-t", "mangle", "-N", POD_EGRESS_CHAIN])?;
    for allowed in [POD_CIDR, LINK_CIDR, SERVICE_CIDR] {
        in_node(
            "iptables",
            &[
                "-w",
                "-t",
                "mangle",
                "-A",
                POD_EGRESS_CHAIN,
                "-d",
                allowed,
                "-j",
                "RETURN",
            ],
        )?;
    }
    in_node(
        "iptables",
        &["-w", "-t", "mangle", "-A", POD_EGRESS_CHAIN, "-j", "DROP"],
    )?;
    in_node(
        "iptables",
        &[
            "-w",
            "-t",
            "mangle",
            "-I",
            "POSTROUTING",
            "1",
            "-s",
            POD_CIDR,
            "-j",
            POD_EGRESS_CHAIN,
        ],
    )?;
    in_node("ip6tables", &["-w", "-P", "FORWARD", "DROP"])?;

    run(
        "ip",
        &[
            "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK, "netns", NETNS,
        ],
    )?;
    let host = format!("{HOST_ADDRESS}/30");
    run("ip", &["addr", "add", &host, "dev", HOST_LINK])?;
    run("ip", &["link", "set", HOST_LINK, "up"])?;
    in_node("ip", &["link", "set", "lo", "up"])?;
    let node = format!("{NODE_ADDRESS}/30");
    in_node("ip", &["addr", "add", &node, "dev", NODE_LINK])?;
    in_node("ip", &["link", "set", NODE_LINK, "up"])?;
    // The host reaches pods and Services through the node (tests, the API server).
    let via = NODE_ADDRESS.to_string();
    for range in [POD_CIDR, SERVICE_CIDR] {
        run(
            "ip",
            &["route", "add", range, "via", &via, "dev", HOST_LINK],
        )?;
    }

    // The canary, routed from the node.
    in_node(
        "ip",
        &[
            "link",
            "add",
            CANARY_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            CANARY_NETNS,
        ],
    )?;
    in_node(
        "ip",
        &[
            "addr",
            "add",
            &format!("{CANARY_NODE_ADDRESS}/30"),
            "dev",
            CANARY_LINK,
        ],
    )?;
    in_node("ip", &["link", "set", CANARY_LINK, "up"])?;
    in_canary("ip", &["link", "set", "lo", "up"])?;
    in_canary(
        "ip",
        &[
            "addr",
            "add",
            &format!("{CANARY_ADDRESS}/30"),
            "dev",
            "eth0",
        ],
    )?;
    in_canary("ip", &["link", "set", "eth0", "up"])?;
    in_canary(
        "ip",
        &["route", "add", POD_CIDR, "via", CANARY_NODE_ADDRESS],
    )?;
    Ok(())
}

/// Reads a sysctl of the machine.
fn sysctl(key: &str) -> Result<String> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?
        .trim()
        .to_string())
}

fn set_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("failed to write {}", path.display()))
}

/// Saves the machine-wide values kubelet is about to change.
fn save_sysctls(paths: &Paths) -> Result<()> {
    let saved = Saved {
        sysctls: KUBELET_SYSCTLS
            .iter()
            .map(|key| Ok((key.to_string(), sysctl(key)?)))
            .collect::<Result<_>>()?,
    };
    std::fs::write(paths.sysctls(), serde_json::to_vec_pretty(&saved)?)?;
    Ok(())
}

/// containerd, with its own configuration, socket, root and state under the state dir.
pub(crate) fn start_containerd(layout: &Layout, paths: &Paths) -> Result<Started> {
    std::fs::create_dir_all(paths.dir.join("cni"))?;
    let cni = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "smartregion",
        "plugins": [{
            // Point-to-point links: every packet between pods is routed through the node,
            // where kube-proxy and kube-router see it (no bridge, no br_netfilter).
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": POD_CIDR }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": paths.dir.join("cni-ipam"),
            },
        }],
    });
    std::fs::write(
        paths.dir.join("cni/10-smartregion.conflist"),
        serde_json::to_vec_pretty(&cni)?,
    )?;
    let config = format!(
        r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{dir}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{REGISTRY}/pause:{pause}"
  # root here lacks CAP_SYS_RESOURCE: never lower an oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{dir}/runc"
        SystemdCgroup = false
"#,
        dir = paths.dir.display(),
        pause = crate::image::PAUSE_VERSION,
    );
    let file = paths.dir.join("containerd.toml");
    std::fs::write(&file, config)?;
    layout.start_in_netns(
        "containerd",
        Path::new("/usr/bin/containerd"),
        vec![format!("--config={}", file.display())],
    )
}

/// Waits for containerd's socket, then imports every image of [`IMAGES`].
pub(crate) async fn import_images(started: &Started, marker: &Path, paths: &Paths) -> Result<()> {
    let socket = paths.containerd_socket();
    crate::control_plane::ready(started, marker, "containerd's socket", || {
        let socket = socket.clone();
        async move {
            Ok(run(
                "ctr",
                &["--address", &socket.display().to_string(), "version"],
            )
            .ok()
            .map(|_| ()))
        }
    })
    .await?;
    let images = crate::paths::images_dir();
    for name in IMAGES {
        let archive = images.join(format!("{name}.tar"));
        ensure!(
            archive.is_file(),
            "{} is missing: build the images first with `e2e/images` (e2e/test and e2e/demo do)",
            archive.display()
        );
        run(
            "ctr",
            &[
                "--address",
                &socket.display().to_string(),
                "--namespace",
                "k8s.io",
                "images",
                "import",
                "--no-unpack",
                &archive.display().to_string(),
            ],
        )
        .with_context(|| format!("failed to import {}", archive.display()))?;
    }
    Ok(())
}

/// kubelet: Node authorizer identity, cgroupfs under [`CGROUP_ROOT`], the taint and
/// label [`REAL_NODE_KEY`], everything it writes under the state directory.
pub(crate) fn start_kubelet(
    layout: &Layout,
    paths: &Paths,
    apiserver_port: u16,
) -> Result<Started> {
    save_sysctls(paths)?;
    create_cgroup_root()?;
    let pki = layout.pki;
    let kubeconfig = layout.write_client_kubeconfig(
        "kubelet.kubeconfig",
        apiserver_port,
        &pki.kubelet_client_cert,
        &pki.kubelet_client_key,
    )?;
    let dir = &paths.dir;
    std::fs::write(dir.join("resolv.conf"), "")?;
    let config = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_ADDRESS.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": pki.ca_cert },
        },
        "authorization": { "mode": "Webhook" },
        "tlsCertFile": pki.kubelet_cert,
        "tlsPrivateKeyFile": pki.kubelet_key,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": format!("/{CGROUP_ROOT}"),
        "failSwapOn": false,
        "failCgroupV1": false,
        "containerRuntimeEndpoint": format!("unix://{}", paths.containerd_socket().display()),
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": dir.join("resolv.conf"),
        "podLogsDir": dir.join("pod-logs"),
        "volumePluginDir": dir.join("volume-plugins"),
        "registerWithTaints": [{ "key": REAL_NODE_KEY, "value": "true", "effect": "NoSchedule" }],
        // The images are imported, never pulled: keep them whatever the disk holds.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": { "memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%" },
        "maxPods": 110,
        "serializeImagePulls": false,
        "shutdownGracePeriod": "0s",
    });
    let file = dir.join("kubelet.yaml");
    std::fs::write(&file, serde_json::to_vec_pretty(&config)?)?;
    layout.start_in_netns(
        "kubelet",
        &layout.bin.join("kubelet"),
        vec![
            format!("--config={}", file.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", dir.join("kubelet").display()),
            format!("--cert-dir={}", dir.join("kubelet-pki").display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_ADDRESS}"),
            format!("--node-labels={REAL_NODE_KEY}=true"),
            "--v=1".into(),
        ],
    )
}

/// kube-proxy (iptables mode) serving ClusterIP Services in the node's namespace; it
/// leaves conntrack's machine-wide limits alone.
pub(crate) fn start_kube_proxy(
    layout: &Layout,
    paths: &Paths,
    apiserver_port: u16,
) -> Result<Started> {
    let pki = layout.pki;
    let kubeconfig = layout.write_client_kubeconfig(
        "kube-proxy.kubeconfig",
        apiserver_port,
        &pki.kube_proxy_cert,
        &pki.kube_proxy_key,
    )?;
    let config = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig },
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_ADDRESS.to_string(),
        // The node namespace's own loopback: no port of the machine is taken.
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [format!("{NODE_ADDRESS}/32")],
        "conntrack": { "maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s" },
        "iptables": { "localhostNodePorts": false },
        "oomScoreAdj": 0,
    });
    let file = paths.dir.join("kube-proxy.yaml");
    std::fs::write(&file, serde_json::to_vec_pretty(&config)?)?;
    layout.start_in_netns(
        "kube-proxy",
        &layout.bin.join("kube-proxy"),
        vec![format!("--config={}", file.display()), "--v=1".into()],
    )
}

/// kube-router as a NetworkPolicy firewall only (no routing, no service proxy).
pub(crate) fn start_kube_router(layout: &Layout, apiserver_port: u16) -> Result<Started> {
    let pki = layout.pki;
    let kubeconfig = layout.write_client_kubeconfig(
        "kube-router.kubeconfig",
        apiserver_port,
        &pki.kube_router_cert,
        &pki.kube_router_key,
    )?;
    layout.start_in_netns(
        "kube-router",
        &layout.bin.join("kube-router"),
        vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--run-firewall=true".into(),
            "--run-router=false".into(),
            "--run-service-proxy=false".into(),
            "--enable-ipv6=false".into(),
            format!("--hostname-override={NODE_NAME}"),
            "--metrics-port=0".into(),
            "--health-port=0".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--v=1".into(),
        ],
    )
}

/// Waits until the real node is Ready.
pub(crate) async fn wait_ready(started: &Started, marker: &Path, client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    crate::control_plane::ready(started, marker, "the real node to be Ready", || {
        let nodes = nodes.clone();
        async move {
            let Some(node) = nodes.get_opt(NODE_NAME).await? else {
                return Ok(None);
            };
            Ok(node
                .status
                .and_then(|status| status.conditions)
                .unwrap_or_default()
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
                .then_some(()))
        }
    })
    .await
}

/// Stops the node and gives back everything it took from the machine. Safe to run on a
/// node that never fully started, or twice.
pub fn teardown(state_dir: &Path) -> Result<()> {
    let owner = std::fs::read_to_string(OWNER_FILE).ok();
    if owner
        .as_deref()
        .is_some_and(|owner| owner != state_dir.display().to_string())
    {
        // Another cluster's node: this one has none to take down.
        return Ok(());
    }
    let paths = Paths::new(state_dir);
    let marker = PathBuf::from(format!("{}/", state_dir.display()));
    let mut problems = Vec::new();
    let mut note = |result: Result<()>| {
        if let Err(error) = result {
            problems.push(format!("{error:#}"));
        }
    };
    // kubelet first, so it restarts nothing; then every process in the pods' cgroups
    // (containers and sandboxes), containerd, and the shims it leaves.
    for name in ["kubelet", "kube-router", "kube-proxy"] {
        note(stop_named(&marker, name));
    }
    note(kill_cgroup_members());
    note(stop_named(&marker, "containerd"));
    note(stop_named(&marker, "containerd-shim-runc-v2"));
    note(unmount_under(state_dir));
    note(remove_cgroups());
    for netns in [NETNS, CANARY_NETNS] {
        if netns_exists(netns) {
            // Deleting the namespace deletes its links (and so the veths' host ends),
            // chains, ipsets and routes.
            note(run("ip", &["netns", "del", netns]).map(|_| ()));
        }
    }
    let host_link = Path::new("/sys/class/net").join(HOST_LINK);
    if host_link.exists() {
        // The namespace's deletion takes the veth's other end, and with it this one, but
        // the kernel does so in the background: the link may be gone by the time `ip`
        // runs, which is what this step wants.
        note(
            run("ip", &["link", "del", HOST_LINK])
                .map(|_| ())
                .or_else(|error| {
                    if host_link.exists() {
                        Err(error)
                    } else {
                        Ok(())
                    }
                }),
        );
    }
    note(remove_container_log_links(state_dir));
    note(give_back_first_run_paths(&paths));
    note(restore_sysctls(&paths));
    if problems.is_empty() {
        let _ = std::fs::remove_file(OWNER_FILE);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "the real node was not fully removed: {}",
            problems.join("; ")
        )
    }
}

/// Removes what of [`FIRST_RUN_PATHS`] the node created, unmounting [`RUN_NETNS`] first
/// if its `ip netns add` made it a mount point; keeps [`RUN_NETNS`] (and says why) while
/// another program's namespace is in it. Runs once every process of the node is gone.
fn give_back_first_run_paths(paths: &Paths) -> Result<()> {
    let Ok(bytes) = std::fs::read(paths.first_run_paths()) else {
        return Ok(());
    };
    let created: CreatedOnTheMachine = serde_json::from_slice(&bytes)?;
    let run_netns = Path::new(RUN_NETNS);
    let ours = |path: &str| created.paths.iter().any(|created| created == path);
    if created.run_netns_mount || ours(RUN_NETNS) {
        let left: Vec<String> = std::fs::read_dir(run_netns)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            left.is_empty(),
            "{RUN_NETNS} was created by this node but holds other namespaces ({}); \
             delete them (`ip netns del`) and run `e2e/cluster down` again",
            left.join(", ")
        );
        if created.run_netns_mount && is_mount_point(run_netns) {
            nix::mount::umount2(run_netns, nix::mount::MntFlags::empty())
                .with_context(|| format!("failed to unmount {RUN_NETNS}"))?;
        }
    }
    for path in &created.paths {
        let path = Path::new(path);
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("failed to remove {}", path.display()))?;
        }
    }
    std::fs::remove_file(paths.first_run_paths())?;
    Ok(())
}

fn stop_named(marker: &Path, name: &str) -> Result<()> {
    for pid in process::find_all(marker) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // /proc/<pid>/comm holds at most 15 characters.
        if name.starts_with(comm.trim()) && !comm.trim().is_empty() {
            let signal = if name.starts_with("containerd-shim") {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            process::stop(pid, marker, signal, Duration::from_secs(15))?;
        }
    }
    Ok(())
}

/// The cgroup hierarchies of the machine (v1 controllers and the unified one).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2"))
                .then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// Every directory under `root`, deepest first.
fn dirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        found.push(dir);
    }
    found.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    found
}

/// [`CGROUP_ROOT`] in every hierarchy (kubelet wants it to exist); a v1 cpuset gets its
/// parent's CPUs and memory nodes, without which no process could join it.
fn create_cgroup_root() -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(CGROUP_ROOT);
        std::fs::create_dir_all(&root)
            .with_context(|| format!("failed to create {}", root.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                std::fs::write(root.join(file), value.trim())
                    .with_context(|| format!("failed to write {}", root.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// SIGKILL to every process left in the node's cgroups (the pods' containers).
fn kill_cgroup_members() -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(CGROUP_ROOT);
        if !root.exists() {
            continue;
        }
        for dir in dirs_deepest_first(&root) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .lines()
                .filter_map(|pid| pid.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    Ok(())
}

fn remove_cgroups() -> Result<()> {
    let mut left = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(CGROUP_ROOT);
        if !root.exists() {
            continue;
        }
        for dir in dirs_deepest_first(&root) {
            // A cgroup goes once its last process has exited: retry for a moment.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::remove_dir(&dir).is_err() && dir.exists() {
                if Instant::now() >= deadline {
                    left.push(dir.display().to_string());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    ensure!(left.is_empty(), "cgroups left: {}", left.join(", "));
    Ok(())
}

/// Mount points under `dir` (from this process's mount table), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    found.dedup();
    found
}

fn unmount_under(dir: &Path) -> Result<()> {
    for point in mounts_under(dir) {
        // Lazy: a mount still busy (a dying container) goes once it is free.
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
    let left = mounts_under(dir);
    ensure!(left.is_empty(), "mounts left: {left:?}");
    Ok(())
}

/// kubelet links every container's log into /var/log/containers; the links into this
/// node's state directory go with it.
fn remove_container_log_links(state_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir("/var/log/containers") else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.starts_with(state_dir)
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Puts back what kubelet changed, unless someone changed it again since.
fn restore_sysctls(paths: &Paths) -> Result<()> {
    let Ok(bytes) = std::fs::read(paths.sysctls()) else {
        return Ok(());
    };
    let saved: Saved = serde_json::from_slice(&bytes)?;
    for (key, value) in &saved.sysctls {
        if &sysctl(key)? != value {
            set_sysctl(key, value)?;
        }
    }
    std::fs::remove_file(paths.sysctls())?;
    Ok(())
}

/// What the machine looks like, for the check that `down` left nothing behind: links,
/// network namespaces, mounts, cgroups of the node, the kernel settings kubelet changes,
/// and the host's iptables and ipsets.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<String>,
    pub netns: Vec<String>,
    /// Which of [`FIRST_RUN_PATHS`] exist.
    #[serde(default)]
    pub paths: Vec<String>,
    pub mounts: Vec<String>,
    pub cgroups: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    pub iptables: Vec<String>,
    pub ipsets: Vec<String>,
}

impl Snapshot {
    pub fn take() -> Result<Snapshot> {
        let mut links: Vec<String> = std::fs::read_dir("/sys/class/net")?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().to_string())
            .collect();
        links.sort();
        let mut netns: Vec<String> = std::fs::read_dir(RUN_NETNS)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        netns.sort();
        let paths = FIRST_RUN_PATHS
            .iter()
            .filter(|path| Path::new(path).exists())
            .map(|path| path.to_string())
            .collect();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4).map(str::to_string))
            .collect();
        mounts.sort();
        let cgroups = cgroup_hierarchies()
            .into_iter()
            .map(|hierarchy| hierarchy.join(CGROUP_ROOT))
            .filter(|dir| dir.exists())
            .map(|dir| dir.display().to_string())
            .collect();
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .map(|key| Ok((key.to_string(), sysctl(key)?)))
            .collect::<Result<_>>()?;
        // Rules and chains, without the packet counters that change by themselves.
        let mut iptables: Vec<String> = ["iptables-save", "ip6tables-save"]
            .iter()
            .filter_map(|program| run(program, &[]).ok())
            .flat_map(|text| {
                text.lines()
                    .filter(|line| !line.starts_with('#'))
                    .map(|line| match line.split_once(" [") {
                        Some((chain, _)) if line.starts_with(':') => chain.to_string(),
                        _ => line.to_string(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        iptables.sort();
        let mut ipsets: Vec<String> = run("ipset", &["list", "-n"])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        ipsets.sort();
        Ok(Snapshot {
            links,
            netns,
            paths,
            mounts,
            cgroups,
            sysctls,
            iptables,
            ipsets,
        })
    }

    /// What `now` has that `self` (taken before the node started) did not, and settings
    /// that differ: empty when everything was given back.
    pub fn left_behind(&self, now: &Snapshot) -> Vec<String> {
        fn new_in(what: &str, before: &[String], after: &[String], out: &mut Vec<String>) {
            for item in after {
                if !before.contains(item) {
                    out.push(format!("{what} {item}"));
                }
            }
        }
        let mut out = Vec::new();
        new_in("link", &self.links, &now.links, &mut out);
        new_in("network namespace", &self.netns, &now.netns, &mut out);
        new_in("path", &self.paths, &now.paths, &mut out);
        new_in("mount", &self.mounts, &now.mounts, &mut out);
        new_in("cgroup", &self.cgroups, &now.cgroups, &mut out);
        new_in("iptables line", &self.iptables, &now.iptables, &mut out);
        new_in("ipset", &self.ipsets, &now.ipsets, &mut out);
        for ((key, before), (_, after)) in self.sysctls.iter().zip(&now.sysctls) {
            if before != after {
                out.push(format!("sysctl {key} = {after} (was {before})"));
            }
        }
        out
    }
}

/// Starts the node once the control plane answers: containerd with the images, kubelet,
/// kube-proxy, kube-router, then CoreDNS on the node. `record` keeps each process.
pub(crate) async fn start(
    layout: &Layout<'_>,
    marker: &Path,
    client: &Client,
    apiserver_port: u16,
    record: &mut dyn FnMut(&Started),
) -> Result<()> {
    let paths = Paths::new(layout.dir);
    std::fs::create_dir_all(&paths.dir)?;
    let containerd = start_containerd(layout, &paths)?;
    record(&containerd);
    import_images(&containerd, marker, &paths).await?;
    let manifests =
        std::fs::read_to_string(crate::paths::workspace_root().join("e2e/manifests/node.yaml"))?
            .replace(
                "COREDNS_TAG",
                crate::paths::component_version("COREDNS_VERSION")?.trim_start_matches('v'),
            );
    let objects = crate::apply::documents(&manifests)?;
    // kube-router's permissions before kube-router.
    for object in &objects {
        crate::apply::apply(client, object).await?;
    }
    let kubelet = start_kubelet(layout, &paths, apiserver_port)?;
    record(&kubelet);
    let proxy = start_kube_proxy(layout, &paths, apiserver_port)?;
    record(&proxy);
    wait_ready(&kubelet, marker, client).await?;
    // kube-router finds its Node object at start: after kubelet has registered it.
    let router = start_kube_router(layout, apiserver_port)?;
    record(&router);
    wait_dns(&[&containerd, &kubelet, &proxy, &router], marker, client).await
}

/// Waits until CoreDNS's pod is Ready (which needs the `kubernetes` Service, so
/// kube-proxy), failing at once with its log if any of `started` exits meanwhile.
async fn wait_dns(started: &[&Started], marker: &Path, client: &Client) -> Result<()> {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "kube-system");
    crate::control_plane::ready(
        started[0],
        marker,
        "CoreDNS to be Ready on the real node",
        || {
            let deployments = deployments.clone();
            async move {
                for component in started {
                    if !process::is_ours(component.pid, marker) {
                        bail!(
                            "{} exited; last lines of {}:\n{}",
                            component.name,
                            component.log.display(),
                            process::log_tail(&component.log, 30)
                        );
                    }
                }
                let deployment = deployments.get("coredns").await?;
                Ok((deployment
                    .status
                    .and_then(|status| status.ready_replicas)
                    .unwrap_or(0)
                    >= 1)
                    .then_some(()))
            }
        },
    )
    .await
}
