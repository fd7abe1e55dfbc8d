//! `images`: OCI image archives of smartregion-operator and smartregion-ingest (and what
//! the local real node needs: the pod sandbox `pause`, CoreDNS and the tests' probe) from the release build and Debian
//! packages, without Docker or a registry. Reproducible: the same binaries, packages and
//! commit give the same digests.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use smartregion_e2e::image::{self, App};

/// Builds `<out>/<name>.tar` for each image and prints each archive's digest.
#[derive(Parser)]
#[command(name = "images")]
struct Cli {
    /// Where the archives go (default `$SMARTREGION_IMAGES`, else `target/images`, where
    /// the local cluster's real node imports them from).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory with the release binaries (`cargo build --release`).
    #[arg(long, env = "SMARTREGION_RELEASE_DIR")]
    binaries: Option<PathBuf>,
    /// Registry part of the images' names (`<registry>/smartregion-operator:<version>`).
    #[arg(long, default_value = "smartregion.local")]
    registry: String,
    /// `org.opencontainers.image.source`; the git remote `origin` when unset.
    #[arg(long, env = "SMARTREGION_IMAGE_SOURCE")]
    source: Option<String>,
}

fn git(args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(smartregion_e2e::paths::workspace_root())
        .output()
        .context("failed to run git")?;
    ensure!(output.status.success(), "git {} failed", args.join(" "));
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

fn run(cli: Cli) -> Result<()> {
    let root = smartregion_e2e::paths::workspace_root();
    let binaries = match cli.binaries {
        Some(dir) => dir,
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("release"),
    };
    let revision = git(&["rev-parse", "HEAD"])?;
    let created: u64 = git(&["log", "-1", "--format=%ct"])?.parse()?;
    let source = match cli.source {
        Some(source) => source,
        None => git(&["remote", "get-url", "origin"]).unwrap_or_else(|_| "unknown".into()),
    };
    let version = env!("CARGO_PKG_VERSION");
    let out = cli
        .out
        .clone()
        .unwrap_or_else(smartregion_e2e::paths::images_dir);
    let cache = smartregion_e2e::paths::cache_dir().join("debs");
    eprintln!(
        "images: Debian packages of the base layer (cached in {})",
        cache.display()
    );
    let base = image::base_layer(&image::base_debs(&cache)?)?;
    let go_bin = smartregion_e2e::paths::kubernetes_binaries()?;
    let coredns_version = smartregion_e2e::paths::component_version("COREDNS_VERSION")?;
    let images = [
        (
            "smartregion-operator",
            binaries.join("smartregion-operator"),
            version,
        ),
        (
            "smartregion-ingest",
            binaries.join("smartregion-ingest"),
            version,
        ),
        // The end-to-end tests' client pods.
        (
            "smartregion-probe",
            binaries.join("smartregion-probe"),
            version,
        ),
        // The real node's cluster DNS, from the Go build.
        (
            "coredns",
            go_bin.join("coredns"),
            coredns_version.trim_start_matches('v'),
        ),
    ];
    for (name, binary, tag) in &images {
        ensure!(
            binary.is_file(),
            "{} not found: build it first with `cargo build --release -p smartregion-operator -p smartregion-ingest -p smartregion-probe` (e2e/go/build.sh for coredns)",
            binary.display()
        );
        let built = image::build(
            &App {
                name,
                binary,
                version: tag,
                revision: &revision,
                source: &source,
                created,
            },
            &base,
            &cli.registry,
            &out,
        )?;
        println!(
            "{}/{name}:{tag} {} {} bytes {}",
            cli.registry,
            built.digest,
            built.size,
            built.path.display()
        );
    }
    let pause = image::pause(&out, &cli.registry, created)?;
    println!(
        "{}/pause:{} {} {} bytes {}",
        cli.registry,
        image::PAUSE_VERSION,
        pause.digest,
        pause.size,
        pause.path.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
