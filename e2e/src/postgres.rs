//! A throwaway PostgreSQL cluster: `initdb` into the state directory, a free loopback port,
//! SCRAM authentication for a generated superuser password, TLS with a certificate from
//! the cluster's CA, a `smartregion` database and in it the least-privileged admin role
//! the operator guide recommends, which the operator logs in as. With TimescaleDB the
//! server preloads it; the operator creates the extension in the database itself.
//! [`Server`] is a second one that a test owns, for stopping and starting it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, User, chown};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use crate::control_plane::{Started, ready};
use crate::process::spawn_detached;

pub const DATABASE: &str = "smartregion";
const SUPERUSER: &str = "postgres";
/// The operator's login: `CREATEROLE` and `CREATE` on the database, nothing more
/// (docs/operator-guide.md, "The database login").
pub const OPERATOR_ADMIN: &str = "smartregion_admin";

/// Which engine the server runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Engine {
    /// PostgreSQL as installed.
    #[default]
    Plain,
    /// PostgreSQL with `shared_preload_libraries = 'timescaledb'` and the extension
    /// created in the `smartregion` database.
    TimescaleDb,
}

/// Fails with what to do when TimescaleDB is not installed for the server in `bin`.
pub fn check_timescaledb(bin: &Path) -> Result<()> {
    // The real directory of the server (Debian's /usr/local/bin links point into
    // /usr/lib/postgresql/<major>/bin), whose ../lib holds its extensions' libraries.
    let bin = std::fs::canonicalize(bin.join("postgres"))
        .ok()
        .and_then(|postgres| postgres.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| bin.to_path_buf());
    let bin = bin.as_path();
    let pkglibdir = Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .or_else(|| bin.parent().map(|dir| dir.join("lib")));
    let library = pkglibdir.map(|dir| dir.join("timescaledb.so"));
    if library.as_ref().is_some_and(|library| library.is_file()) {
        return Ok(());
    }
    bail!(
        "TimescaleDB was asked for (--timescaledb) but is not installed for the PostgreSQL \
         server in {} (no {}). Install TimescaleDB 2.28.x for PostgreSQL 15 — Timescale's own \
         packages, or from its source repository github.com/timescale/timescaledb at tag \
         2.28.3 with `apt-get install postgresql-server-dev-15`, `./bootstrap \
         -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF` and `make -C build install` — see \
         docs/database.md, \"Installing TimescaleDB\"",
        bin.display(),
        library.map_or_else(|| "timescaledb.so".into(), |l| l.display().to_string())
    )
}

/// PostgreSQL refuses to run as root. When we are root (as on CI machines), the server runs
/// as the `postgres` system user that Debian's packages create, or else as `nobody`.
fn server_user() -> Result<Option<(u32, u32)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")?
        .or(User::from_name("nobody")?)
        .context("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as; create one with `useradd --system postgres`")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// A directory (or file) for the server, owned by the server's user.
fn hand_over(path: &Path, user: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = user {
        chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .with_context(|| format!("failed to hand {} to uid {uid}", path.display()))?;
    }
    Ok(())
}

/// Creates the cluster in `<dir>/postgres` and returns the superuser password.
pub fn init(bin: &Path, dir: &Path) -> Result<String> {
    let user = server_user()?;
    let password = random_password()?;
    let pwfile = dir.join("postgres-password");
    std::fs::write(&pwfile, &password)?;
    hand_over(&pwfile, user)?;
    let data = data_dir(dir);
    std::fs::create_dir_all(&data)?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
    hand_over(&data, user)?;
    let mut initdb = Command::new(bin.join("initdb"));
    if let Some((uid, gid)) = user {
        initdb.uid(uid).gid(gid);
    }
    let output = initdb
        .arg(format!("--pgdata={}", data.display()))
        .arg(format!("--username={SUPERUSER}"))
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ])
        .output()
        .context("failed to run initdb")?;
    std::fs::remove_file(&pwfile)?;
    if !output.status.success() {
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Logins from the real node's pods and over the node's link (the address the
    // tenants' Secrets name), with passwords (initdb allows loopback only).
    let hba = data.join("pg_hba.conf");
    let mut rules = std::fs::read_to_string(&hba)?;
    for range in [crate::node::POD_CIDR, crate::node::LINK_CIDR] {
        rules.push_str(&format!("host all all {range} scram-sha-256\n"));
    }
    std::fs::write(&hba, rules)?;
    Ok(password)
}

pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("postgres")
}

/// A serving certificate and its key, for TLS.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Starts the server in the foreground of its own process group, so its pid is the
/// postmaster's and its log goes to `<dir>/postgres.log`.
pub fn start(
    bin: &Path,
    dir: &Path,
    port: u16,
    tls: Option<&Tls>,
    engine: Engine,
    node_link: bool,
) -> Result<Started> {
    let user = server_user()?;
    let socket_dir = dir.join("postgres-socket");
    std::fs::create_dir_all(&socket_dir)?;
    hand_over(&socket_dir, user)?;
    let log = dir.join("postgres.log");
    let args = vec![
        "-D".into(),
        data_dir(dir).display().to_string(),
        "-p".into(),
        port.to_string(),
        "-k".into(),
        socket_dir.display().to_string(),
        "-c".into(),
        // The cluster's server also listens on the host end of the real node's link,
        // where the node's pods connect.
        if node_link {
            format!("listen_addresses=127.0.0.1,{}", crate::node::HOST_ADDRESS)
        } else {
            "listen_addresses=127.0.0.1".into()
        },
        // Enough for an operator pool, ingest pools and 200 tenants in the benchmark.
        "-c".into(),
        "max_connections=300".into(),
        // Throwaway data: crash safety of the server itself is not under test.
        "-c".into(),
        "fsync=off".into(),
        "-c".into(),
        "full_page_writes=off".into(),
    ];
    let mut args = args;
    if engine == Engine::TimescaleDb {
        args.extend([
            "-c".into(),
            "shared_preload_libraries=timescaledb".into(),
            // Never a packet off this machine: TimescaleDB's telemetry would call home.
            "-c".into(),
            "timescaledb.telemetry_level=off".into(),
            // Every tenant has two jobs, and new ones all start at once: room for 16 at a
            // time (the rest wait for a free worker) plus PostgreSQL's own workers.
            "-c".into(),
            "timescaledb.max_background_workers=16".into(),
            "-c".into(),
            "max_worker_processes=24".into(),
        ]);
    }
    if let Some(tls) = tls {
        // The server reads its key only when it alone can (mode 0600, its own user).
        hand_over(tls.cert, user)?;
        hand_over(tls.key, user)?;
        args.extend([
            "-c".into(),
            "ssl=on".into(),
            "-c".into(),
            format!("ssl_cert_file={}", tls.cert.display()),
            "-c".into(),
            format!("ssl_key_file={}", tls.key.display()),
        ]);
    }
    let pid = spawn_detached(&bin.join("postgres"), &args, &log, user)?;
    Ok(Started {
        name: "postgres",
        pid,
        log,
    })
}

pub fn url(password: &str, port: u16) -> String {
    format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}")
}

/// The operator's least-privileged login; its password is the superuser's (both are
/// throwaway, and one fewer secret to keep in the state file).
pub fn operator_url(password: &str, port: u16) -> String {
    format!("postgres://{OPERATOR_ADMIN}:{password}@127.0.0.1:{port}/{DATABASE}")
}

/// What the database gets besides the operator's admin role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// As a DBA sets up the platform's database: with TimescaleDB preloaded, the
    /// extension is created beforehand; then every fix of the operator's database checks
    /// (`smartregion_operator::database::checks`) is applied.
    Platform,
    /// The admin role only: a database the operator meets as it is (it creates the
    /// TimescaleDB extension itself, when the server preloads it).
    Bare,
}

/// Waits for the server to accept connections, then creates the `smartregion` database
/// and the operator's admin role, and sets the database up as `setup` says.
pub async fn wait_and_create_database(
    started: &Started,
    marker: &Path,
    password: &str,
    port: u16,
    engine: Engine,
    setup: Setup,
) -> Result<()> {
    let admin_url = format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres");
    let client = ready(started, marker, "PostgreSQL to accept connections", || {
        let admin_url = admin_url.clone();
        async move {
            let (client, connection) =
                tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok(Some(client))
        }
    })
    .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .context("failed to create the smartregion database")?;
    client
        .batch_execute(&format!(
            "CREATE ROLE {OPERATOR_ADMIN} LOGIN CREATEROLE PASSWORD '{password}'; \
             GRANT CREATE ON DATABASE {DATABASE} TO {OPERATOR_ADMIN}"
        ))
        .await
        .context("failed to create the operator's admin role")?;
    if setup == Setup::Bare {
        return Ok(());
    }
    let (database, connection) = tokio_postgres::connect(
        &format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    if engine == Engine::TimescaleDb {
        database
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
            .context("failed to create the timescaledb extension")?;
    }
    use smartregion_operator::database::checks;
    for check in checks::CHECKS {
        for statement in checks::fix(check, OPERATOR_ADMIN, DATABASE) {
            // The job history exists only with TimescaleDB.
            if statement.contains("_timescaledb_internal") && engine != Engine::TimescaleDb {
                continue;
            }
            database
                .batch_execute(&statement)
                .await
                .with_context(|| format!("failed to set the database up: {statement}"))?;
        }
    }
    Ok(())
}

/// 40 hexadecimal characters from the kernel's CSPRNG.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A PostgreSQL server of a test's own, under `<cluster state>/<name>/` (so `cluster down`
/// stops it too if the test could not), which the test may stop and start again.
pub struct Server {
    engine: Engine,
    bin: PathBuf,
    dir: PathBuf,
    /// The cluster's server certificate and key (for 127.0.0.1, signed by its CA): an
    /// operator reaches this server with `verify-full` too.
    tls: (PathBuf, PathBuf),
    marker: PathBuf,
    port: u16,
    password: String,
    pid: Option<u32>,
}

impl Server {
    /// Creates and starts a new server with a `smartregion` database, of the same engine
    /// as the cluster's.
    pub async fn start_new(cluster: &crate::Cluster, name: &str) -> Result<Server> {
        let bin = crate::paths::postgres_binaries()?;
        let dir = cluster.state_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let password = init(&bin, &dir)?;
        let mut server = Server {
            engine: cluster.engine,
            bin,
            dir,
            marker: PathBuf::from(format!("{}/", cluster.state_dir.display())),
            tls: {
                let pki = crate::pki::Pki::at(&cluster.state_dir.join("pki"));
                (pki.postgres_cert, pki.postgres_key)
            },
            port: crate::control_plane::free_port()?,
            password,
            pid: None,
        };
        let started = server.spawn()?;
        wait_and_create_database(
            &started,
            &server.marker,
            &server.password,
            server.port,
            server.engine,
            Setup::Bare,
        )
        .await?;
        Ok(server)
    }

    /// The superuser's URL, for the test's own checks.
    pub fn url(&self) -> String {
        url(&self.password, self.port)
    }

    /// The least-privileged admin's URL, for an operator.
    pub fn operator_url(&self) -> String {
        operator_url(&self.password, self.port)
    }

    fn spawn(&mut self) -> Result<Started> {
        let tls = Tls {
            cert: &self.tls.0,
            key: &self.tls.1,
        };
        let started = start(
            &self.bin,
            &self.dir,
            self.port,
            Some(&tls),
            self.engine,
            false,
        )?;
        self.pid = Some(started.pid);
        Ok(started)
    }

    /// Fast shutdown (SIGINT): open sessions end, as in a crash from their point of view.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(pid) = self.pid.take() {
            crate::process::stop(
                pid,
                &self.marker,
                crate::process::Signal::SIGINT,
                std::time::Duration::from_secs(15),
            )?;
        }
        Ok(())
    }

    /// Stops the server, makes every password login of `role` use `method` (`password`:
    /// the server asks for it in clear text), and starts it again. The superuser keeps
    /// SCRAM, for the test's own checks.
    pub async fn authenticate_role_with(&mut self, role: &str, method: &str) -> Result<()> {
        self.stop()?;
        let hba = data_dir(&self.dir).join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        let first = format!(
            "host all {role} 127.0.0.1/32 {method}\nhostssl all {role} 127.0.0.1/32 {method}\n"
        );
        std::fs::write(&hba, format!("{first}{rules}"))?;
        self.restart().await
    }

    /// Starts the stopped server again as `engine` (TimescaleDB preloaded or not), on the
    /// same port and data.
    pub async fn restart_as(&mut self, engine: Engine) -> Result<()> {
        self.engine = engine;
        self.restart().await
    }

    /// Starts the stopped server again on the same port and data, and waits until it
    /// accepts connections.
    pub async fn restart(&mut self) -> Result<()> {
        let started = self.spawn()?;
        let url = self.url();
        ready(
            &started,
            &self.marker,
            "PostgreSQL to accept connections",
            || {
                let url = url.clone();
                async move {
                    let (client, connection) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                    drop(connection);
                    drop(client);
                    Ok(Some(()))
                }
            },
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
