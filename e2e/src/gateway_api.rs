//! The Gateway API's real CRDs (standard channel) on the local control plane, from the
//! release of the Go module `sigs.k8s.io/gateway-api` (`e2e/go/gateway-api/`): the same
//! manifests a platform installs, so HTTPRoutes are validated by the real schema and CEL
//! rules. Installed by the tests that need them, idempotently (server-side apply).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::apply::apply_file;
use crate::paths::workspace_root;
use crate::wait;

/// The version in `e2e/go/gateway-api/version.env`.
pub fn version() -> Result<String> {
    let path = workspace_root().join("e2e/go/gateway-api/version.env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("GATEWAY_API_VERSION="))
        .map(|version| version.trim().to_string())
        .with_context(|| format!("{} names no GATEWAY_API_VERSION", path.display()))
}

/// The directory of the release's `config/crd/standard` manifests, in Go's module cache.
pub fn standard_manifests() -> Result<PathBuf> {
    crate::paths::printed_path("e2e/go/gateway-api/crds.sh")
}

/// Applies every standard-channel manifest of the release and waits until each CRD is
/// Established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let dir = standard_manifests()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in &files {
        for applied in apply_file(client, file).await? {
            if applied
                .types
                .as_ref()
                .is_some_and(|t| t.kind == "CustomResourceDefinition")
            {
                names.push(applied.name_any());
            }
        }
    }
    if !names
        .iter()
        .any(|name| name == "httproutes.gateway.networking.k8s.io")
    {
        bail!("{} holds no HTTPRoute CRD", dir.display());
    }
    for name in names {
        wait::until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || {
                let (crds, name) = (crds.clone(), name.clone());
                async move {
                    let crd = crds.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|status| status.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                }
            },
        )
        .await?;
    }
    Ok(())
}
