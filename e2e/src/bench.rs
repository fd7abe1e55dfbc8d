//! Shared by the benchmark programs: the bench tenant's database part, process memory
//! and their sections of `docs/benchmarks.md`.

use anyhow::{Context, Result};
use smartregion_operator::surface::provisioning::{
    self as provision, Desired, HypertableSettings, Layout, Passwords, RoleLimits, TenantDb,
};

use crate::paths;

/// The bench tenant's schema and roles as the operator provisions them (10 years kept,
/// daily chunks, compressed after 7 days), `password` for both logins: a hypertable
/// with compression and its jobs when `timescaledb` names the extension's schema, else
/// partitions, one for each day of `days`.
pub async fn provision_tenant(
    admin: &mut tokio_postgres::Client,
    db: &TenantDb,
    password: &str,
    timescaledb: Option<&str>,
    days: impl IntoIterator<Item = jiff::Timestamp>,
) -> Result<()> {
    let hypertable = HypertableSettings {
        chunk_interval_hours: 24,
        retention_days: 3650,
        compress_after_days: 7,
    };
    let layout = match timescaledb {
        Some(schema) => Layout::Hypertable {
            timescaledb: schema.to_string(),
        },
        None => Layout::Partitions,
    };
    provision::ensure_schema_exists(
        admin,
        db,
        &provision::Provisioning {
            desired: &Desired {
                limits: RoleLimits {
                    connection_limit: 100,
                    statement_timeout_ms: 30_000,
                },
                layout,
                timescaledb_schema: timescaledb.map(str::to_string),
                hypertable: hypertable.clone(),
            },
            table: None,
            logins: &provision::WriterLogins::first(db),
            passwords: Passwords {
                writer: password,
                reader: password,
            },
            credentials: provision::Credentials::Keep,
            writes: provision::Writes::Allowed,
        },
    )
    .await?;
    match timescaledb {
        // Compression and the jobs, as the operator's maintenance sets them.
        Some(extension) => {
            provision::ensure_hypertable(admin, db, &hypertable, extension).await?;
        }
        None => {
            for day in days {
                provision::ensure_partitions(admin, db, day, 24, 3650).await?;
            }
        }
    }
    Ok(())
}

/// Peak resident memory (VmHWM) of process `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .split_whitespace()
        .next()
        .context("VmHWM value")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Replaces the section of `docs/benchmarks.md` that starts with `heading` (up to the
/// next `## `) by `report`, or appends it.
pub fn write_section(heading: &str, report: &str) -> Result<()> {
    let path = paths::workspace_root().join("docs/benchmarks.md");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let report = report.trim_end();
    if let Some(start) = text.find(heading) {
        match text[start + heading.len()..].find("\n## ") {
            // A blank line before the next section.
            Some(offset) => {
                let end = start + heading.len() + offset + 1;
                text.replace_range(start..end, &format!("{report}\n\n"));
            }
            None => text.replace_range(start.., &format!("{report}\n")),
        }
    } else {
        text.push('\n');
        text.push_str(report);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    eprintln!("bench: written to {}", path.display());
    Ok(())
}

/// Runs `bench` on a fresh cluster in `target/<dir>`, removed again afterwards whatever
/// the outcome.
pub async fn on_fresh_cluster<F, Fut>(dir: &str, bench: F) -> Result<()>
where
    F: FnOnce(crate::Cluster) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let state = paths::workspace_root().join("target").join(dir);
    eprintln!("bench: starting a fresh cluster in {}", state.display());
    crate::Cluster::down(&state)?;
    let cluster = crate::Cluster::up(&state, crate::cluster::engine_from_env()).await?;
    let result = bench(cluster).await;
    crate::Cluster::down(&state)?;
    result
}
