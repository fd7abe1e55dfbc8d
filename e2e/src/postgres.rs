//! A throwaway PostgreSQL cluster: `initdb` into the state directory, a free loopback port,
//! SCRAM authentication for a generated superuser password, and a `smartregion` database.

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
    Ok(password)
}

pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("postgres")
}

/// Starts the server in the foreground of its own process group, so its pid is the
/// postmaster's and its log goes to `<dir>/postgres.log`.
pub fn start(bin: &Path, dir: &Path, port: u16) -> Result<Started> {
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
        "listen_addresses=127.0.0.1".into(),
        // Enough for an operator pool, ingest pools and 200 tenants in the benchmark.
        "-c".into(),
        "max_connections=300".into(),
        // Throwaway data: crash safety of the server itself is not under test.
        "-c".into(),
        "fsync=off".into(),
        "-c".into(),
        "full_page_writes=off".into(),
    ];
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

/// Waits for the server to accept connections, then creates the `smartregion` database.
pub async fn wait_and_create_database(
    started: &Started,
    marker: &Path,
    password: &str,
    port: u16,
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
    Ok(())
}

/// 40 hexadecimal characters from the kernel's CSPRNG.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
