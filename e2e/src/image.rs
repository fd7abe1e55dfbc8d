//! Container images of the workspace's binaries, built without Docker or a registry: an
//! OCI image archive (`oci-archive`) from the release binary and Debian packages only,
//! reproducible to the byte — the same inputs give the same digest.
//!
//! Two layers: a base of Debian packages (the C library the binaries link against, CA
//! certificates, time zones), and the application (the binary, `/etc/passwd` and
//! `/etc/group` with the non-root user 65532). Every file gets the same owner (root),
//! mode from its package, and modification time (`created`); entries are sorted; the
//! gzip header has no name or time. The archive can be imported into containerd
//! (`ctr images import`) or pushed to a registry (`skopeo copy oci-archive:... docker://...`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// The non-root user and group the images run as (distroless' `nonroot`).
pub const USER_ID: u32 = 65532;

/// The Debian packages of the base layer.
pub const BASE_PACKAGES: [&str; 5] = ["libc6", "libgcc-s1", "ca-certificates", "tzdata", "netbase"];

/// One file, directory or link of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// The files of a layer by path (without a leading `/`), in sorted order.
#[derive(Clone, Debug, Default)]
pub struct Layer(BTreeMap<String, Entry>);

impl Layer {
    fn dir(&mut self, path: &str) {
        let mut prefix = String::new();
        for part in path.trim_matches('/').split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.0
                .entry(prefix.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.0.insert(path.to_string(), Entry::File { mode, data });
    }

    /// The layer as an uncompressed tar: sorted, owned by root, all at `mtime`.
    fn tar(&self, mtime: u64) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.0 {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(mtime);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { mode, data } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(builder.into_inner()?)
    }
}

/// Parts of Debian packages an image needs no copy of.
fn unneeded(path: &str) -> bool {
    [
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/lintian/",
        "usr/share/info/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
        || path.starts_with("usr/share/locale/")
}

/// The `.deb` files of [`BASE_PACKAGES`] in the cache, downloaded with `apt-get download`
/// (the versions apt would install now) when missing. Their names carry their versions,
/// so the image's inputs are named by them.
pub fn base_debs(cache: &Path) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for package in BASE_PACKAGES {
        let version = candidate_version(package)?;
        let dir = cache.join(format!("{package}_{}", version.replace(':', "+")));
        let find = |dir: &Path| -> Result<Option<PathBuf>> {
            Ok(std::fs::read_dir(dir)?
                .flatten()
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|ext| ext == "deb")))
        };
        std::fs::create_dir_all(&dir)?;
        let deb = match find(&dir)? {
            Some(deb) => deb,
            None => {
                let status = Command::new("apt-get")
                    // Into a directory of root's: apt's sandbox user could not write there.
                    .args(["-o", "APT::Sandbox::User=root", "-qq", "download"])
                    .arg(format!("{package}={version}"))
                    .current_dir(&dir)
                    .status()
                    .context(
                        "failed to run apt-get download (Debian's apt builds the images' base)",
                    )?;
                ensure!(
                    status.success(),
                    "apt-get download {package}={version} failed ({status})"
                );
                find(&dir)?.with_context(|| {
                    format!("apt-get download left no .deb in {}", dir.display())
                })?
            }
        };
        debs.push(deb);
    }
    Ok(debs)
}

fn candidate_version(package: &str) -> Result<String> {
    let output = Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .context("failed to run apt-cache")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(|version| version.trim().to_string())
        .filter(|version| version != "(none)")
        .with_context(|| format!("apt knows no version of {package}"))
}

/// The base layer from `debs`: their files (documentation left out), and the CA bundle
/// that Debian's `update-ca-certificates` would write (the certificates, sorted, one file).
pub fn base_layer(debs: &[PathBuf]) -> Result<Layer> {
    let mut layer = Layer::default();
    for deb in debs {
        let output = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(deb)
            .output()
            .with_context(|| format!("failed to run dpkg-deb on {}", deb.display()))?;
        ensure!(
            output.status.success(),
            "dpkg-deb --fsys-tarfile {} failed",
            deb.display()
        );
        let mut archive = tar::Archive::new(output.stdout.as_slice());
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().to_string();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            if path.is_empty() || unneeded(&path) {
                continue;
            }
            let mode = entry.header().mode()? & 0o7777;
            match entry.header().entry_type() {
                tar::EntryType::Directory => layer.dir(&path),
                tar::EntryType::Regular => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data)?;
                    layer.file(&path, mode, data);
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()?
                        .context("a symlink without a target")?
                        .to_string_lossy()
                        .to_string();
                    if let Some((parent, _)) = path.rsplit_once('/') {
                        layer.dir(parent);
                    }
                    layer.0.insert(path, Entry::Symlink { target });
                }
                tar::EntryType::Link => {
                    // A hard link: a copy of its target's content.
                    let target = entry
                        .link_name()?
                        .context("a hard link without a target")?
                        .to_string_lossy()
                        .trim_start_matches("./")
                        .to_string();
                    if let Some(Entry::File { mode, data }) = layer.0.get(&target).cloned() {
                        layer.file(&path, mode, data);
                    }
                }
                other => bail!("{}: unexpected {other:?} in {}", path, deb.display()),
            }
        }
    }
    let mut bundle = Vec::new();
    for (path, entry) in &layer.0 {
        if let (true, Entry::File { data, .. }) = (
            path.starts_with("usr/share/ca-certificates/") && path.ends_with(".crt"),
            entry,
        ) {
            bundle.extend_from_slice(data);
            if !data.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    ensure!(
        !bundle.is_empty(),
        "the ca-certificates package gave no certificate"
    );
    layer.file("etc/ssl/certs/ca-certificates.crt", 0o644, bundle);
    Ok(layer)
}

/// What goes into an image besides the base.
pub struct App<'a> {
    /// `smartregion-operator` or `smartregion-ingest`.
    pub name: &'a str,
    pub binary: &'a Path,
    pub version: &'a str,
    /// The git commit the binary was built from.
    pub revision: &'a str,
    pub source: &'a str,
    /// Seconds since the epoch: every file's time and the image's `created` (the
    /// revision's commit time, so a rebuild of the same commit is identical).
    pub created: u64,
}

/// An image archive as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub path: PathBuf,
    /// `sha256:...` of the manifest: the image's digest.
    pub digest: String,
    /// Bytes of the archive.
    pub size: u64,
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // No file name and time zero in the gzip header: the same tar gives the same bytes.
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(6));
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Writes `<out>/<name>.tar`, an OCI image archive of `app` on `base`, named
/// `<registry>/<name>:<version>` in its index.
pub fn build(app: &App, base: &Layer, registry: &str, out: &Path) -> Result<Built> {
    let mut top = Layer::default();
    let binary = std::fs::read(app.binary)
        .with_context(|| format!("failed to read {}", app.binary.display()))?;
    top.file(&format!("usr/local/bin/{}", app.name), 0o755, binary);
    top.file(
        "etc/passwd",
        0o644,
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nonroot:x:{USER_ID}:{USER_ID}:nonroot:/home/nonroot:/sbin/nologin\n"
        )
        .into_bytes(),
    );
    top.file(
        "etc/group",
        0o644,
        format!("root:x:0:\nnonroot:x:{USER_ID}:\n").into_bytes(),
    );
    top.dir("home/nonroot");
    top.dir("tmp");
    let created = jiff::Timestamp::from_second(app.created as i64)?.to_string();
    let labels = serde_json::json!({
        "org.opencontainers.image.title": app.name,
        "org.opencontainers.image.source": app.source,
        "org.opencontainers.image.version": app.version,
        "org.opencontainers.image.revision": app.revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "EUPL-1.2",
    });
    archive(&Image {
        file: app.name,
        reference: &format!("{registry}/{}:{}", app.name, app.version),
        layers: &[base, &top],
        entrypoint: &format!("/usr/local/bin/{}", app.name),
        user: &format!("{USER_ID}:{USER_ID}"),
        labels,
        created: app.created,
        out,
    })
}

/// Version of the pause image this builds (Kubernetes' own pause.c).
pub const PAUSE_VERSION: &str = "3.10";

/// The pod sandbox image: Kubernetes' `pause.c` (from the module cache of the Go build),
/// compiled statically, alone in one layer.
pub fn pause(out: &Path, registry: &str, created: u64) -> Result<Built> {
    let source = go_module_file("k8s.io/kubernetes", "build/pause/linux/pause.c")?;
    let work = tempfile_dir()?;
    let binary = work.join("pause");
    let status = Command::new("cc")
        .args(["-Os", "-static", "-Wall", "-Werror"])
        .arg(format!("-DVERSION=v{PAUSE_VERSION}-smartregion"))
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .status()
        .context("failed to run cc (a C compiler builds the pause image)")?;
    ensure!(status.success(), "cc {} failed", source.display());
    Command::new("strip").arg(&binary).status().ok();
    let mut layer = Layer::default();
    layer.file("pause", 0o755, std::fs::read(&binary)?);
    let _ = std::fs::remove_dir_all(&work);
    archive(&Image {
        file: "pause",
        reference: &format!("{registry}/pause:{PAUSE_VERSION}"),
        layers: &[&layer],
        entrypoint: "/pause",
        user: "65535:65535",
        labels: serde_json::json!({ "org.opencontainers.image.title": "pause" }),
        created,
        out,
    })
}

/// A file of a Go module in the module cache (`go env GOMODCACHE`), at the version the
/// Kubernetes wrapper module requires.
fn go_module_file(module: &str, file: &str) -> Result<PathBuf> {
    let root = crate::paths::workspace_root().join("e2e/go/kubernetes");
    let output = Command::new("go")
        .args(["list", "-m", "-f", "{{.Dir}}", module])
        .current_dir(&root)
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .context("failed to run go list")?;
    ensure!(
        output.status.success(),
        "go list -m {module} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8(output.stdout)?.trim()).join(file);
    ensure!(
        path.is_file(),
        "{} is not in the module cache",
        path.display()
    );
    Ok(path)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("smartregion-pause-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Everything of one image archive.
struct Image<'a> {
    /// `<out>/<file>.tar`.
    file: &'a str,
    reference: &'a str,
    layers: &'a [&'a Layer],
    entrypoint: &'a str,
    user: &'a str,
    labels: serde_json::Value,
    created: u64,
    out: &'a Path,
}

fn archive(image: &Image) -> Result<Built> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in image.layers {
        let tar = layer.tar(image.created)?;
        diff_ids.push(sha256(&tar));
        let compressed = gzip(&tar)?;
        let digest = sha256(&compressed);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": compressed.len(),
        }));
        blobs.push((digest, compressed));
    }
    let created = jiff::Timestamp::from_second(image.created as i64)?.to_string();
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created,
        "architecture": oci_arch()?,
        "os": "linux",
        "config": {
            "User": image.user,
            "Entrypoint": [image.entrypoint],
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ],
            "WorkingDir": "/",
            "Labels": image.labels,
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
        "annotations": image.labels,
    }))?;
    let digest = sha256(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": image.reference,
                "io.containerd.image.name": image.reference,
            },
        }],
    }))?;
    blobs.push((config_digest, config));
    blobs.push((digest.clone(), manifest));

    let mut archive = Layer::default();
    archive.file(
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    archive.file("index.json", 0o644, index);
    for (digest, bytes) in blobs {
        let hex = digest.trim_start_matches("sha256:");
        archive.file(&format!("blobs/sha256/{hex}"), 0o644, bytes);
    }
    std::fs::create_dir_all(image.out)?;
    let path = image.out.join(format!("{}.tar", image.file));
    let bytes = archive.tar(image.created)?;
    std::fs::write(&path, &bytes)?;
    Ok(Built {
        path,
        digest,
        size: bytes.len() as u64,
    })
}

fn oci_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI architecture name for {other}"),
    })
}
