//! Server-side apply of YAML manifests, the way `kubectl apply --server-side` does it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope, pinned_kind};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::paths::workspace_root;
use crate::wait;

/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "smartregion-e2e";

/// Every document of a (multi-document) YAML text.
pub fn documents(text: &str) -> Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        objects.push(serde_yaml::from_value(value)?);
    }
    Ok(objects)
}

/// Applies one object; namespaced kinds go to their `metadata.namespace` (or `default`).
pub async fn apply(client: &Client, object: &DynamicObject) -> Result<DynamicObject> {
    let types = object
        .types
        .as_ref()
        .context("object without apiVersion and kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    let (resource, capabilities): (ApiResource, ApiCapabilities) =
        pinned_kind(client, &gvk).await.with_context(|| {
            format!(
                "the API server does not serve {}/{}",
                types.api_version, types.kind
            )
        })?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.namespace().as_deref().unwrap_or("default"),
            &resource,
        ),
    };
    let name = object.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("failed to apply {} {name}", types.kind))
}

/// Applies every document of a YAML file.
pub async fn apply_file(client: &Client, path: &Path) -> Result<Vec<DynamicObject>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut applied = Vec::new();
    for object in documents(&text)? {
        applied.push(apply(client, &object).await?);
    }
    Ok(applied)
}

/// Installs the committed CRDs from `crds/` and waits until each is Established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("crds"))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no CRD files in crds/");
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in files {
        for applied in apply_file(client, &file).await? {
            let name = applied.name_any();
            wait::until(
                &format!("CRD {name} to be Established"),
                std::time::Duration::from_secs(30),
                || {
                    let crds = crds.clone();
                    let name = name.clone();
                    async move { Ok(established(&crds.get(&name).await?).then_some(())) }
                },
            )
            .await?;
        }
    }
    Ok(())
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Established" && condition.status == "True")
        })
}
