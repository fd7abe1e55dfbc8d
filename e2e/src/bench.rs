//! Shared by the benchmark programs: process memory and their sections of
//! `docs/benchmarks.md`.

use anyhow::{Context, Result};

use crate::paths;

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
