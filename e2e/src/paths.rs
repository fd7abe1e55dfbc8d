//! Where things live: the workspace, the run state of a cluster, and the Go-built binaries.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Root of the cargo workspace (this crate lives in `<root>/e2e`): `SMARTREGION_ROOT`
/// (which `e2e/lib/env.sh` sets for the scripts), else the e2e crate's directory that
/// cargo gives a test or `cargo run` at run time, else the one it was compiled in.
///
/// Never the compile-time path first: every checkout on the machine shares one cargo
/// target directory, and cargo reuses a binary another checkout built when its sources
/// are no newer, so a path compiled in can be a checkout that is gone.
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("SMARTREGION_ROOT") {
        return PathBuf::from(root);
    }
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    crate_dir
        .parent()
        .expect("e2e crate is inside the workspace")
        .to_path_buf()
}

/// Run state of the cluster: certificates, data, logs, pids. `SMARTREGION_E2E_STATE`
/// selects another one, so the test suite never disturbs a cluster started by the demo.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("SMARTREGION_E2E_STATE") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target/e2e-cluster"),
    }
}

/// Directory with etcd, kube-*, kubectl and kwok, building them first if needed
/// (`e2e/go/build.sh` caches them outside the checkout and reports its progress).
pub fn kubernetes_binaries() -> Result<PathBuf> {
    printed_path("e2e/go/build.sh")
}

/// Runs the workspace's script `script` (its progress goes to stderr) and returns the
/// path it prints: how the Go-built tools and caches are found.
pub fn printed_path(script: &str) -> Result<PathBuf> {
    let script = workspace_root().join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); see the messages above",
            script.display(),
            output.status
        );
    }
    let path = String::from_utf8(output.stdout)
        .with_context(|| format!("{} printed a non-UTF-8 path", script.display()))?;
    Ok(PathBuf::from(path.trim()))
}

/// Directory with the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`).
pub fn postgres_binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SMARTREGION_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    // Debian and Ubuntu keep the server binaries out of PATH, one directory per major version.
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    candidates.sort();
    candidates.reverse();
    if let Some(dir) = which("initdb") {
        candidates.insert(0, dir);
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .context(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install them with \
             `apt-get install postgresql-15` or set SMARTREGION_PG_BIN to their directory",
        )
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join(program).is_file()))
}

/// A binary of this workspace from the same build as the running executable (tests live
/// in `<target>/<profile>/deps/`, binaries in `<target>/<profile>/`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("unexpected executable location")?;
    for candidate in [Some(dir), dir.parent()].into_iter().flatten() {
        let binary = candidate.join(name);
        if binary.is_file() {
            return Ok(binary);
        }
    }
    bail!(
        "{name} not found next to {}; build the workspace first with `cargo build \
         --workspace` (with --release for benchmarks); e2e/test does",
        exe.display()
    )
}

/// The cache outside the checkout: `$SMARTREGION_CACHE`, else `~/.cache/smartregion`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SMARTREGION_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("smartregion"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|dir| PathBuf::from(dir).join(".cache/smartregion"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp/smartregion-cache"))
}

/// A version from `e2e/versions.env` (`NAME=value`).
pub fn component_version(name: &str) -> Result<String> {
    let path = workspace_root().join("e2e/versions.env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .map(|value| value.trim().to_string())
        .with_context(|| format!("{} sets no {name}", path.display()))
}

/// Where `images` writes the image archives the real node imports.
pub fn images_dir() -> PathBuf {
    match std::env::var_os("SMARTREGION_IMAGES") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target/images"),
    }
}
