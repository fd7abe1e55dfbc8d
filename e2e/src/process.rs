//! Long-lived child processes that outlive the command that started them.
//!
//! Each runs in its own process group with its output in a log file. A pid is only ever
//! signalled after checking that the process's command line mentions the cluster's state
//! directory, so a recycled pid of some unrelated process is never touched.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Starts `program` detached from this process, with stdout and stderr in `log`, as
/// `user` (uid, gid) when given.
pub fn spawn_detached(
    program: &Path,
    args: &[String],
    log: &Path,
    user: Option<(u32, u32)>,
) -> Result<u32> {
    spawn(program, args, &[], log, user)
}

/// [`spawn_detached`] with `env` on top of this process's environment.
pub fn spawn_detached_with_env(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<u32> {
    spawn(program, args, env, log, None)
}

fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
    user: Option<(u32, u32)>,
) -> Result<u32> {
    let out = File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let child = command
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Own process group: a Ctrl-C meant for `cluster up` does not reach the cluster.
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to start {}", program.display()))?;
    let pid = child.id();
    // `spawn` returns once exec has passed its point of no return, but the kernel fills in
    // the new command line only after loading the binary (seconds for a large binary on a
    // cold page cache). Until then /proc/<pid>/cmdline is empty and `is_ours` would call
    // the process gone, so wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) if !cmdline.is_empty() => return Ok(pid),
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => bail!(
                "{} (pid {pid}) did not finish starting within 30s",
                program.display()
            ),
            // Already exited; the caller's readiness check reports it with the log.
            Err(_) => return Ok(pid),
        }
    }
}

/// True when `pid` is alive and its command line mentions `marker` (the state directory).
pub fn is_ours(pid: u32, marker: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if is_zombie(pid) {
        return false;
    }
    let marker = marker.as_os_str().as_encoded_bytes();
    cmdline.windows(marker.len()).any(|window| window == marker)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state letter follows the parenthesised command name.
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Stops a process of ours: `signal`, then SIGKILL if it has not exited within `grace`.
pub fn stop(pid: u32, marker: &Path, signal: Signal, grace: Duration) -> Result<()> {
    if !is_ours(pid, marker) {
        return Ok(());
    }
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_ours(pid, marker) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(target, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_ours(pid, marker) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("process {pid} did not exit after SIGKILL")
}

/// Every process whose command line mentions `marker`: what `cluster down` must stop
/// even when the state file was lost.
pub fn find_all(marker: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && is_ours(pid, marker))
        .collect()
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(log: &PathBuf, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
