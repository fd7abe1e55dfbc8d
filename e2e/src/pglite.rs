//! TimescaleDB in PGlite (PostgreSQL 17 and TimescaleDB 2.23 compiled to WASM, from the
//! npm registry) on a loopback socket, for CI: TimescaleDB cannot be installed from any
//! registry these machines reach, PGlite can. One client at a time, any password, and
//! the session is always a superuser, so checks act as other roles with `SET ROLE`.
//!
//! The packages are installed with `npm ci` from `e2e/pglite/package-lock.json` into a
//! cache outside the checkout (keyed by the lock file), once.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::paths::workspace_root;

/// A running PGlite server; stopped (its stdin closed, then killed) when dropped.
pub struct PgLite {
    child: Child,
    pub port: u16,
}

/// Where the packages go: `$SMARTREGION_CACHE/pglite/<hash of the lock file>`.
fn install_dir(lock: &[u8]) -> PathBuf {
    let cache = crate::paths::cache_dir();
    let digest = Sha256::digest(lock);
    let key: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    cache.join("pglite").join(key)
}

/// The directory with `node_modules` and `serve.mjs`, installing the packages first.
fn installed() -> Result<PathBuf> {
    let source = workspace_root().join("e2e/pglite");
    let lock = std::fs::read(source.join("package-lock.json"))?;
    let dir = install_dir(&lock);
    for file in ["package.json", "package-lock.json", "serve.mjs"] {
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(source.join(file), dir.join(file))
            .with_context(|| format!("failed to copy e2e/pglite/{file} to {}", dir.display()))?;
    }
    if !dir.join("node_modules/.complete").is_file() {
        eprintln!(
            "pglite: installing PGlite with TimescaleDB from the npm registry into {} (once)",
            dir.display()
        );
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .context(
                "failed to run npm; install Node.js 20 or newer with npm \
                 (`apt-get install nodejs npm`, or https://nodejs.org/)",
            )?;
        if !output.status.success() {
            bail!(
                "npm ci in {} failed ({}): {}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::fs::write(dir.join("node_modules/.complete"), b"")?;
    }
    Ok(dir)
}

impl PgLite {
    /// Starts a fresh, empty PGlite with TimescaleDB available (not yet created).
    pub fn start() -> Result<PgLite> {
        let dir = installed()?;
        let mut child = Command::new("node")
            .arg("serve.mjs")
            .arg("0")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context(
                "failed to run node; install Node.js 20 or newer (`apt-get install nodejs`)",
            )?;
        let stdout = child.stdout.take().context("no stdout")?;
        // WASM start-up takes a few seconds; the script says when it listens.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match line.strip_prefix("listening ") {
                    Some(port) => {
                        let _ = sender.send(port.trim().parse::<u16>().ok());
                    }
                    None => eprintln!("pglite: {line}"),
                }
            }
        });
        let port = match receiver.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(port)) => port,
            Ok(None) => bail!("PGlite printed an unreadable port"),
            Err(_) => {
                let _ = child.kill();
                bail!("PGlite did not start listening within 120 s (its messages are above)")
            }
        };
        Ok(PgLite { child, port })
    }

    /// A URL for tokio-postgres (no TLS: PGlite's socket does not speak it).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:pglite@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PgLite {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
