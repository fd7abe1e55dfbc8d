//! Children never copy Argo CD's tracking marks from the tenant.
//!
//! Argo CD marks what it syncs with the label `app.kubernetes.io/instance: <app>` (label
//! tracking) or the annotation `argocd.argoproj.io/tracking-id` (annotation tracking). A
//! child carrying either would look like part of the Application: shown as not in git,
//! and pruned by a sync with pruning. The test gives a tenant both marks, as Argo CD sets
//! them, and looks at every object in its namespace — whoever created it — and at the
//! namespace itself.

use std::collections::BTreeSet;

use crate::support::*;
use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::json;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name};

const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";

/// Any label or annotation by which Argo CD (or a client-side `kubectl apply` of the
/// tenant) would claim an object.
fn tracking_marks(meta: &ObjectMeta) -> Vec<String> {
    let labels = meta.labels.iter().flatten();
    let annotations = meta.annotations.iter().flatten();
    labels
        .chain(annotations)
        .map(|(key, _)| key)
        .filter(|key| {
            key.as_str() == INSTANCE_LABEL
                || key.starts_with("argocd.argoproj.io/")
                || key.as_str() == "kubectl.kubernetes.io/last-applied-configuration"
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn no_child_carries_the_tenants_argo_cd_tracking_label_or_annotation() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("tracking");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("tracking");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["metadata"]["labels"][INSTANCE_LABEL] = json!("some-app");
    tenant["metadata"]["annotations"] = json!({
        TRACKING_ANNOTATION: format!("some-app:smartregion.toscana.it/SmartRegionTenant:/{name}"),
        "argocd.argoproj.io/sync-wave": "1",
    });
    // Two pods, so the PodDisruptionBudget is among the children too.
    tenant["spec"]["ingest"] = json!({ "replicas": 2 });
    apply_tenant(&client, &tenant).await?;
    let ready = wait_ready(&client, &name).await?;
    ensure!(
        tracking_marks(&ready.metadata).len() == 3,
        "the tenant itself carries the marks: {:?}",
        tracking_marks(&ready.metadata)
    );

    let namespace_name = format!("srt-{name}");
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&namespace_name)
        .await?;
    let mut offenders = Vec::new();
    let marks = tracking_marks(&namespace.metadata);
    if !marks.is_empty() {
        offenders.push(format!("Namespace {namespace_name}: {marks:?}"));
    }
    // Every kind the API server serves, so a child kind added later is covered too.
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut kinds = BTreeSet::new();
    let mut objects = 0;
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if capabilities.scope != Scope::Namespaced
                || !capabilities.supports_operation(verbs::LIST)
            {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace_name, &resource);
            for object in api.list_metadata(&ListParams::default()).await?.items {
                kinds.insert(resource.kind.clone());
                objects += 1;
                let marks = tracking_marks(&object.metadata);
                if !marks.is_empty() {
                    offenders.push(format!(
                        "{} {}: {marks:?}",
                        resource.kind,
                        object.metadata.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    ensure!(
        offenders.is_empty(),
        "children carry Argo CD's tracking marks:\n{}",
        offenders.join("\n")
    );
    // The check saw what the operator creates (and what controllers derive from it).
    for kind in [
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Secret",
        "Deployment",
        "ReplicaSet",
        "Pod",
        "Service",
        "EndpointSlice",
        "PodDisruptionBudget",
    ] {
        ensure!(
            kinds.contains(kind),
            "no {kind} in {namespace_name}; found {kinds:?}"
        );
    }
    eprintln!(
        "{objects} objects of {} kinds in {namespace_name}, none with a tracking mark",
        kinds.len()
    );
    delete_and_wait(&client, &name).await?;
    Ok(())
}
