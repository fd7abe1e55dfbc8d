//! A cgroup (v1, as this machine mounts them) with a container's memory and CPU limits,
//! for running a host process exactly as constrained as its pod would be: the tests and
//! benchmarks start the ingest service in one and read back its peak memory and OOM
//! kills. Removed when dropped (after its processes are gone).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

const ROOT: &str = "/sys/fs/cgroup";
/// CFS period the CPU limit is expressed in, as the kubelet sets it.
const CPU_PERIOD_US: u64 = 100_000;

/// Memory and CPU limits, as a container's `resources.limits` give them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
}

pub struct Cgroup {
    memory: PathBuf,
    cpu: PathBuf,
    pub limits: Limits,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Cgroup {
    /// Creates `smartregion-<name>` in the memory and cpu hierarchies with `limits`.
    pub fn create(name: &str, limits: Limits) -> Result<Cgroup> {
        let leaf = format!("smartregion-{name}");
        let memory = Path::new(ROOT).join("memory").join(&leaf);
        let cpu = Path::new(ROOT).join("cpu").join(&leaf);
        if !Path::new(ROOT)
            .join("memory/memory.limit_in_bytes")
            .exists()
        {
            bail!(
                "no cgroup v1 memory hierarchy at {ROOT}/memory: the constrained run needs \
                 one (run as root on a machine that mounts cgroup v1 read-write)"
            );
        }
        for dir in [&memory, &cpu] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the cgroup {} (needs root)", dir.display()))?;
        }
        let cgroup = Cgroup {
            memory,
            cpu,
            limits,
        };
        write(
            &cgroup.memory.join("memory.limit_in_bytes"),
            &limits.memory_bytes.to_string(),
        )?;
        write(
            &cgroup.cpu.join("cpu.cfs_period_us"),
            &CPU_PERIOD_US.to_string(),
        )?;
        write(
            &cgroup.cpu.join("cpu.cfs_quota_us"),
            &(limits.cpu_millis * CPU_PERIOD_US / 1000).to_string(),
        )?;
        Ok(cgroup)
    }

    /// The files a process writes its pid to to join (memory, cpu).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        vec![
            self.memory.join("cgroup.procs"),
            self.cpu.join("cgroup.procs"),
        ]
    }

    /// Moves process `pid` (and the threads it starts from then on) in. Memory it holds
    /// already stays charged where it was: start processes in the cgroup instead where
    /// that matters.
    pub fn add(&self, pid: u32) -> Result<()> {
        for dir in [&self.memory, &self.cpu] {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The highest memory use since creation, in bytes (what the limit is checked
    /// against: the page cache the process caused counts too).
    pub fn peak_bytes(&self) -> Result<u64> {
        Ok(read(&self.memory.join("memory.max_usage_in_bytes"))?
            .trim()
            .parse()?)
    }

    /// Processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> Result<u64> {
        let control = read(&self.memory.join("memory.oom_control"))?;
        control
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .context("memory.oom_control has no oom_kill line (kernel older than 4.13)")?
            .trim()
            .parse()
            .context("memory.oom_control's oom_kill")
    }

    /// Times the CPU limit held the processes back.
    pub fn throttled(&self) -> Result<u64> {
        let stat = read(&self.cpu.join("cpu.stat"))?;
        Ok(stat
            .lines()
            .find_map(|line| line.strip_prefix("nr_throttled "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Removes the cgroup once its processes have gone (waits up to 10 s for them).
    pub fn remove(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for dir in [&self.memory, &self.cpu] {
            if !dir.exists() {
                continue;
            }
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(_) if std::time::Instant::now() < deadline => {
                        // Exiting processes leave the cgroup a moment after they die.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(error) => {
                        return Err(error).with_context(|| {
                            format!(
                                "removing the cgroup {} (a process still in it?)",
                                dir.display()
                            )
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(error) = self.remove() {
            eprintln!("warning: {error:#}");
        }
    }
}
