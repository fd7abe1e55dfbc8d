//! Helm, built from its Go module with the Kubernetes binaries (`e2e/go/build.sh`), run on
//! the chart in `charts/`. Helm's own cache and config stay under `target/`, away from the
//! user's.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::paths::{kubernetes_binaries, workspace_root};

/// The operator's chart.
pub fn chart() -> PathBuf {
    workspace_root().join("charts/smartregion-operator")
}

/// Runs helm with `args`; the process's output whatever its exit status.
pub fn output(args: &[&str]) -> Result<Output> {
    let helm = kubernetes_binaries()?.join("helm");
    let home = workspace_root().join("target/helm-home");
    Command::new(&helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        // Its discovery cache too: never in the user's ~/.kube.
        .env("KUBECACHEDIR", workspace_root().join("target/kube-cache"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "failed to run {} (e2e/go/build.sh builds it)",
                helm.display()
            )
        })
}

/// Runs helm with `args` and returns its standard output; fails with its error output.
pub fn run(args: &[&str]) -> Result<String> {
    let output = output(args)?;
    if !output.status.success() {
        bail!(
            "helm {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `helm template <release> charts/smartregion-operator -n <namespace>` with `--set`s.
pub fn template(release: &str, namespace: &str, set: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().context("non-UTF-8 path")?,
        "--namespace",
        namespace,
    ];
    for value in set {
        args.extend(["--set", value]);
    }
    run(&args)
}
