//! Bringing the whole local cluster up and down, idempotently, and sharing it with tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use nix::fcntl::{Flock, FlockArg};

use crate::control_plane::{self, Layout, Started};
use crate::node;
use crate::paths;
use crate::pki::Pki;
use crate::postgres::{self, Engine};
use crate::process::{self, Signal};
use crate::state::State;

/// A running local cluster: what a client needs to reach it.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The superuser's URL: for tests' own checks and for psql, never for the operator.
    pub database_url: String,
    /// The least-privileged admin the operator logs in as.
    pub operator_database_url: String,
    /// Plain PostgreSQL or TimescaleDB.
    pub engine: Engine,
    pub apiserver_port: u16,
    /// The CA that signed the API server's and PostgreSQL's certificates.
    pub ca_cert: PathBuf,
}

impl Cluster {
    fn from_state(state_dir: &Path, state: &State) -> Self {
        Cluster {
            state_dir: state_dir.to_path_buf(),
            kubeconfig: state.kubeconfig.clone(),
            database_url: state.database_url.clone(),
            operator_database_url: state.operator_database_url.clone(),
            engine: state.engine,
            apiserver_port: state.apiserver_port,
            ca_cert: Pki::at(&state_dir.join("pki")).ca_cert,
        }
    }

    /// An admin client for this cluster.
    pub async fn client(&self) -> Result<Client> {
        control_plane::client(&self.kubeconfig).await
    }

    /// A client acting as `user` in `groups` (impersonation by the admin), to do what a
    /// tenant admin may do and nothing more.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client> {
        control_plane::client_as(&self.kubeconfig, user, groups).await
    }

    /// Shell lines that point kubectl and psql at this cluster (`DATABASE_URL` is the
    /// superuser; `OPERATOR_DATABASE_URL` the operator's least-privileged login).
    pub fn exports(&self) -> String {
        format!(
            "export KUBECONFIG='{}'\nexport DATABASE_URL='{}'\nexport OPERATOR_DATABASE_URL='{}'\n",
            self.kubeconfig.display(),
            self.database_url,
            self.operator_database_url
        )
    }

    /// Starts the cluster in `state_dir`, or reuses the one already running there when it
    /// runs the same database engine.
    pub async fn up(state_dir: &Path, engine: Engine) -> Result<Cluster> {
        let state_dir = absolute(state_dir)?;
        let _lock = lock(&state_dir)?;
        let marker = marker(&state_dir);
        if let Some(state) = State::load(&state_dir)? {
            match healthy(&state, &marker).await {
                Ok(()) if state.engine != engine => eprintln!(
                    "cluster: the cluster in {} runs {:?}, not {engine:?}; starting it afresh",
                    state_dir.display(),
                    state.engine
                ),
                Ok(()) => {
                    eprintln!(
                        "cluster: already running in {} (nothing changed)",
                        state_dir.display()
                    );
                    return Ok(Cluster::from_state(&state_dir, &state));
                }
                Err(error) => eprintln!(
                    "cluster: the cluster in {} is not healthy ({error:#}); starting it afresh",
                    state_dir.display()
                ),
            }
        }
        stop_all(&state_dir, &marker)?;
        if state_dir.exists() {
            // A fresh start: data, certificates and logs of an earlier cluster go.
            std::fs::remove_dir_all(&state_dir)
                .with_context(|| format!("failed to remove {}", state_dir.display()))?;
        }
        match start(&state_dir, &marker, engine).await {
            Ok(cluster) => Ok(cluster),
            Err(error) => Err(undo_failed_start(&state_dir, &marker, error)),
        }
    }

    /// Stops every process of the cluster in `state_dir` and removes its files.
    /// Returns how many processes were stopped.
    pub fn down(state_dir: &Path) -> Result<usize> {
        let state_dir = absolute(state_dir)?;
        if !state_dir.exists() {
            return Ok(0);
        }
        let _lock = lock(&state_dir)?;
        let before = std::fs::read(snapshot_path(&state_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<node::Snapshot>(&bytes).ok());
        let stopped = stop_all(&state_dir, &marker(&state_dir))?;
        std::fs::remove_dir_all(&state_dir)
            .with_context(|| format!("failed to remove {}", state_dir.display()))?;
        if let Some(before) = before {
            let left = before.left_behind(&node::Snapshot::take()?);
            if !left.is_empty() {
                bail!(
                    "the cluster left these on the machine (not there before `up`):\n  {}",
                    left.join("\n  ")
                );
            }
        }
        Ok(stopped)
    }

    /// The running cluster in `state_dir`, if its state file exists and it is healthy.
    pub async fn running(state_dir: &Path) -> Result<Cluster> {
        let state_dir = absolute(state_dir)?;
        let state = State::load(&state_dir)?.with_context(|| {
            format!(
                "no cluster in {}; start one with `e2e/cluster up`",
                state_dir.display()
            )
        })?;
        healthy(&state, &marker(&state_dir)).await?;
        Ok(Cluster::from_state(&state_dir, &state))
    }
}

/// The cluster every test in this process uses: the one in the default state directory,
/// started on first use if it is not running yet (and then left running for later test
/// binaries; `e2e/cluster down` stops it). `SMARTREGION_TIMESCALEDB=1` asks for
/// TimescaleDB (`e2e/test-timescaledb` sets it).
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Tests run inside their own Tokio runtimes; bring the cluster up on a separate
        // thread with its own runtime so the two never nest.
        let result = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to build a Tokio runtime")?
                .block_on(Cluster::up(&paths::default_state_dir(), engine_from_env()))
        })
        .join()
        .expect("cluster start-up thread panicked");
        match result {
            Ok(cluster) => cluster,
            Err(error) => panic!("the local test cluster could not be started: {error:#}"),
        }
    })
}

/// TimescaleDB when `SMARTREGION_TIMESCALEDB` is `1` or `true`.
pub fn engine_from_env() -> Engine {
    match std::env::var("SMARTREGION_TIMESCALEDB").as_deref() {
        Ok("1" | "true") => Engine::TimescaleDb,
        _ => Engine::Plain,
    }
}

async fn start(state_dir: &Path, marker: &Path, engine: Engine) -> Result<Cluster> {
    let mut clock = Stages::new();
    // Check every prerequisite before starting anything.
    let pg_bin = paths::postgres_binaries()?;
    if engine == Engine::TimescaleDb {
        postgres::check_timescaledb(&pg_bin)?;
    }
    let bin = paths::kubernetes_binaries()?;
    clock.done("Kubernetes binaries ready");

    std::fs::create_dir_all(state_dir)?;
    let pki = Pki::generate(&state_dir.join("pki"))?;
    let layout = Layout {
        bin: &bin,
        dir: state_dir,
        pki: &pki,
    };
    let password = postgres::init(&pg_bin, state_dir)?;
    clock.done("certificates and PostgreSQL data directory created");

    // The machine as it was, for the check that `down` gives everything back: taken once
    // this cluster holds the node, never while another cluster's kubelet has the machine's
    // settings changed (that would be no "before").
    node::claim(state_dir)?;
    let before = node::Snapshot::take()?;
    std::fs::create_dir_all(state_dir.join("node"))?;
    std::fs::write(
        snapshot_path(state_dir),
        serde_json::to_vec_pretty(&before)?,
    )?;
    node::network_up(&node::Paths::new(state_dir))?;
    clock.done("the real node's network (namespace, link, egress rule)");

    let (etcd_client, etcd_peer) = (control_plane::free_port()?, control_plane::free_port()?);
    let apiserver_port = control_plane::free_port()?;
    let postgres_port = control_plane::free_port()?;
    let mut processes: Vec<(String, u32)> = Vec::new();
    let mut record = |started: &Started| processes.push((started.name.to_string(), started.pid));

    let postgres = postgres::start(
        &pg_bin,
        state_dir,
        postgres_port,
        Some(&postgres::Tls {
            cert: &pki.postgres_cert,
            key: &pki.postgres_key,
        }),
        engine,
        true,
    )?;
    record(&postgres);
    let etcd = layout.start_etcd(etcd_client, etcd_peer)?;
    record(&etcd);
    control_plane::wait_etcd(&etcd, marker, etcd_client).await?;
    clock.done("etcd healthy");

    let apiserver = layout.start_apiserver(apiserver_port, etcd_client)?;
    record(&apiserver);
    let kubeconfig = layout.write_kubeconfig(apiserver_port)?;
    let client = control_plane::client(&kubeconfig).await?;
    control_plane::wait_apiserver(&apiserver, marker, &client).await?;
    clock.done("kube-apiserver ready");

    let controller_manager = layout.start_controller_manager()?;
    record(&controller_manager);
    let scheduler = layout.start_scheduler()?;
    record(&scheduler);
    let kwok = layout.start_kwok()?;
    record(&kwok);
    control_plane::wait_leader(&controller_manager, marker, &client).await?;
    control_plane::wait_default_service_account(&controller_manager, marker, &client).await?;
    control_plane::wait_leader(&scheduler, marker, &client).await?;
    control_plane::create_nodes(&kwok, marker, &client).await?;
    clock.done("controller-manager, scheduler and kwok ready; Nodes Ready");

    node::start(&layout, marker, &client, apiserver_port, &mut record).await?;
    clock.done("real node Ready (containerd, kubelet, kube-proxy, kube-router), CoreDNS Ready");

    postgres::wait_and_create_database(
        &postgres,
        marker,
        &password,
        postgres_port,
        engine,
        postgres::Setup::Platform,
    )
    .await?;
    clock.done(match engine {
        Engine::Plain => "PostgreSQL ready",
        Engine::TimescaleDb => "PostgreSQL with TimescaleDB ready",
    });

    let state = State {
        kubeconfig,
        database_url: postgres::url(&password, postgres_port),
        operator_database_url: postgres::operator_url(&password, postgres_port),
        engine,
        apiserver_port,
        postgres_port,
        postgres_data: postgres::data_dir(state_dir),
        processes,
    };
    state.save(state_dir)?;
    eprintln!(
        "cluster: up in {:.1}s; state and logs in {}",
        clock.total().as_secs_f64(),
        state_dir.display()
    );
    Ok(Cluster::from_state(state_dir, &state))
}

/// Leaves nothing of a start that failed: processes, the node, the state file, and the
/// snapshot of the machine (a later `down` must never read it as the machine's original
/// state). The logs stay for diagnosis. What could not be given back joins the error.
fn undo_failed_start(state_dir: &Path, marker: &Path, error: anyhow::Error) -> anyhow::Error {
    let mut problems = Vec::new();
    if let Err(teardown) = node::teardown(state_dir) {
        problems.push(format!("{teardown:#}"));
    }
    if let Err(stop) = stop_processes(marker, &[]) {
        problems.push(format!("{stop:#}"));
    }
    let _ = std::fs::remove_file(State::path(state_dir));
    let before = std::fs::read(snapshot_path(state_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<node::Snapshot>(&bytes).ok());
    let _ = std::fs::remove_file(snapshot_path(state_dir));
    if let Some(before) = before
        && let Ok(now) = node::Snapshot::take()
    {
        problems.extend(before.left_behind(&now));
    }
    if problems.is_empty() {
        error
    } else {
        anyhow::anyhow!(
            "{error:#}\nundoing the failed start left these on the machine:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// Every recorded process alive, the API server ready and the Nodes Ready.
async fn healthy(state: &State, marker: &Path) -> Result<()> {
    for (name, pid) in &state.processes {
        if !process::is_ours(*pid, marker) {
            bail!("{name} (pid {pid}) is not running");
        }
    }
    let client = control_plane::client(&state.kubeconfig).await?;
    control_plane::readyz(&client).await?;
    let nodes: Api<Node> = Api::all(client);
    for name in control_plane::NODES.iter().chain([&node::NODE_NAME]) {
        let node = nodes.get(name).await?;
        let ready = node
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        if !ready {
            bail!("Node {name} is not Ready");
        }
    }
    Ok(())
}

/// Stops the recorded processes in reverse start order, then any other process that
/// mentions the state directory (a lost state file must not leave processes behind).
fn stop_all(state_dir: &Path, marker: &Path) -> Result<usize> {
    let recorded = State::load(state_dir)
        .ok()
        .flatten()
        .map(|state| state.processes)
        .unwrap_or_default();
    // The real node first, while the rest still runs: its pods go through containerd,
    // and what it changed on the machine is given back. Whatever of it failed, the other
    // processes are still stopped before the failure is reported.
    let node = node::teardown(state_dir);
    let stopped = stop_processes(marker, &recorded)?;
    node?;
    let _ = std::fs::remove_file(State::path(state_dir));
    Ok(stopped)
}

fn stop_processes(marker: &Path, recorded: &[(String, u32)]) -> Result<usize> {
    let mut stopped = 0;
    let mut stop = |name: &str, pid: u32| -> Result<()> {
        if !process::is_ours(pid, marker) {
            return Ok(());
        }
        // PostgreSQL's SIGTERM waits for clients to disconnect; SIGINT is its fast shutdown.
        let signal = if name == "postgres" {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        process::stop(pid, marker, signal, Duration::from_secs(15))?;
        stopped += 1;
        Ok(())
    };
    let comm = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // Clients the cluster did not start itself (the demo's operator) go first, while the
    // API server still answers: an operator releases its Lease as it stops.
    for pid in process::find_all(marker) {
        if !recorded.iter().any(|(_, recorded)| *recorded == pid) {
            stop(&comm(pid), pid)?;
        }
    }
    for (name, pid) in recorded.iter().rev() {
        stop(name, *pid)?;
    }
    for pid in process::find_all(marker) {
        stop(&comm(pid), pid)?;
    }
    let left = process::find_all(marker);
    if !left.is_empty() {
        bail!("processes {left:?} are still running; stop them by hand");
    }
    Ok(stopped)
}

/// The machine before the cluster started (see [`node::Snapshot`]).
fn snapshot_path(state_dir: &Path) -> PathBuf {
    state_dir.join("node/machine-before.json")
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        Ok(dir.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(dir))
    }
}

/// What every process of this cluster has in its command line: the state directory with a
/// trailing slash, so `.../e2e-cluster` never matches `.../e2e-cluster-test`.
fn marker(state_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}/", state_dir.display()))
}

/// An exclusive lock next to the state directory, held while starting or stopping, so two
/// commands (or two test binaries) never start the same cluster twice.
fn lock(state_dir: &Path) -> Result<Flock<std::fs::File>> {
    let path = state_dir.with_extension("lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow::anyhow!("failed to lock {}: {errno}", path.display()))
}

/// Progress lines with the time each start-up stage took.
struct Stages {
    start: Instant,
    last: Instant,
}

impl Stages {
    fn new() -> Self {
        let now = Instant::now();
        Stages {
            start: now,
            last: now,
        }
    }

    fn done(&mut self, what: &str) {
        let now = Instant::now();
        eprintln!(
            "cluster: {what} ({:.1}s)",
            now.duration_since(self.last).as_secs_f64()
        );
        self.last = now;
    }

    fn total(&self) -> Duration {
        self.start.elapsed()
    }
}
