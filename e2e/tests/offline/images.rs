//! The images `e2e/images` builds: the same inputs give the same digests, and each image
//! is what docs/images.md says (non-root, OCI labels, the binary at its path, nothing else
//! that could write).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// Runs `images --out <dir>` and returns the digest it printed per image name.
fn build_into(dir: &Path) -> Result<BTreeMap<String, String>> {
    let images = smartregion_e2e::paths::workspace_binary("images")?;
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| smartregion_e2e::paths::workspace_root().join("target"))
        .join("release");
    let output = Command::new(&images)
        .arg("--out")
        .arg(dir)
        .arg("--binaries")
        .arg(&release)
        .output()
        .context("failed to run images")?;
    ensure!(
        output.status.success(),
        "images failed (e2e/images builds the release binaries first): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect())
}

/// Every file of an (uncompressed) tar, by path.
fn entries(tar: &[u8]) -> Result<BTreeMap<String, (tar::Header, Vec<u8>)>> {
    let mut found = BTreeMap::new();
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        found.insert(path, (entry.header().clone(), data));
    }
    Ok(found)
}

fn blob(archive: &BTreeMap<String, (tar::Header, Vec<u8>)>, digest: &str) -> Result<Vec<u8>> {
    let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    Ok(archive
        .get(&path)
        .with_context(|| format!("no {path}"))?
        .1
        .clone())
}

#[test]
fn images_are_reproducible_non_root_and_labelled() -> Result<()> {
    let root = smartregion_e2e::paths::workspace_root().join("target/images-test");
    let (first_dir, second_dir) = (root.join("first"), root.join("second"));
    let first = build_into(&first_dir)?;
    let second = build_into(&second_dir)?;
    ensure!(first.len() == 5, "five images, not {first:?}");
    assert_eq!(first, second, "two builds of the same inputs, two digests");

    let version = env!("CARGO_PKG_VERSION");
    for name in ["smartregion-operator", "smartregion-ingest"] {
        let reference = format!("smartregion.local/{name}:{version}");
        let digest = first
            .get(&reference)
            .with_context(|| format!("no {reference}"))?;
        let bytes = std::fs::read(first_dir.join(format!("{name}.tar")))?;
        let archive = entries(&bytes)?;
        let index: Value = serde_json::from_slice(&archive["index.json"].1)?;
        let described = &index["manifests"][0];
        assert_eq!(described["digest"].as_str(), Some(digest.as_str()));
        assert_eq!(
            described["annotations"]["org.opencontainers.image.ref.name"].as_str(),
            Some(reference.as_str())
        );
        let manifest: Value = serde_json::from_slice(&blob(&archive, digest)?)?;
        let config: Value = serde_json::from_slice(&blob(
            &archive,
            manifest["config"]["digest"].as_str().unwrap_or(""),
        )?)?;
        assert_eq!(
            config["config"]["User"].as_str(),
            Some("65532:65532"),
            "{name} runs as nonroot"
        );
        let entrypoint = format!("/usr/local/bin/{name}");
        assert_eq!(
            config["config"]["Entrypoint"][0].as_str(),
            Some(entrypoint.as_str())
        );
        let labels = &config["config"]["Labels"];
        for label in ["source", "version", "revision", "created", "licenses"] {
            let key = format!("org.opencontainers.image.{label}");
            ensure!(
                labels[&key].as_str().is_some_and(|value| !value.is_empty()),
                "{name} has no {key}"
            );
        }
        assert_eq!(
            labels["org.opencontainers.image.version"].as_str(),
            Some(version)
        );

        // The application layer: the binary, executable and root-owned (the process is
        // 65532 and cannot change it), passwd with the user; every time the same.
        let layers = manifest["layers"].as_array().context("no layers")?;
        let top = blob(
            &archive,
            layers
                .last()
                .and_then(|l| l["digest"].as_str())
                .unwrap_or(""),
        )?;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(top.as_slice()).read_to_end(&mut tar)?;
        let files = entries(&tar)?;
        let (header, _) = files
            .get(entrypoint.trim_start_matches('/'))
            .with_context(|| format!("{name}'s layer has no {entrypoint}"))?;
        assert_eq!(header.mode()? & 0o777, 0o755);
        assert_eq!((header.uid()?, header.gid()?), (0, 0));
        let passwd = String::from_utf8(files["etc/passwd"].1.clone())?;
        ensure!(
            passwd.contains("nonroot:x:65532:65532:"),
            "passwd lacks nonroot: {passwd}"
        );
        let times: std::collections::BTreeSet<u64> = files
            .values()
            .map(|(header, _)| header.mtime().unwrap_or(1))
            .collect();
        ensure!(times.len() == 1, "files with different times: {times:?}");
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
