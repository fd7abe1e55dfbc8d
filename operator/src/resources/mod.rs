//! Pure builders of the tenant's child objects, one module per kind.
//!
//! Every function here is a pure function of the validated tenant and the operator
//! configuration: no client, no clock, no randomness. [`object_meta`] gives every child
//! its name, namespace, labels and owner reference.

pub mod exposure;
pub mod gateway_api;
pub mod grafana;
pub mod ingest;
pub mod namespace;
pub mod network;
pub mod quota;
pub mod rbac;
pub mod read;
pub mod secrets;
pub mod service_account;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;

use crate::crd::{MANAGED_BY, TENANT_LABEL};
use crate::tenant::Validated;

/// Label selector that finds every child of every tenant.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=smartregion-operator";

/// The labels on every child of `tenant`.
pub fn labels(tenant: &Validated) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (TENANT_LABEL.to_string(), tenant.name.to_string()),
    ])
}

/// Annotation with a digest of the rest of a child as desired, on children whose fields
/// come and go with the configuration (the exposure objects, the ingest NetworkPolicy).
pub const DESIRED_DIGEST_ANNOTATION: &str = "smartregion.toscana.it/desired-digest";

/// `object` with [`DESIRED_DIGEST_ANNOTATION`] set. `apply` skips a child that already
/// holds every desired field, so it cannot see a field that is no longer desired (a
/// NetworkPolicy's `from` once exposure is off, a removed annotation). The digest changes
/// with every change of the desired object, so the change is applied, and server-side
/// apply removes what the operator no longer sets.
pub fn with_desired_digest<K: Resource + Serialize>(mut object: K) -> K {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(&object).expect("objects serialize");
    let digest = Sha256::digest(&json);
    let hex: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESIRED_DIGEST_ANNOTATION.to_string(), hex);
    object
}

/// Name, namespace (the tenant's, unless the kind is cluster-scoped), labels and the
/// owner reference to the tenant.
pub fn object_meta(tenant: &Validated, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespaced.then(|| tenant.namespace.clone()),
        labels: Some(labels(tenant)),
        owner_references: Some(vec![tenant.owner_reference.clone()]),
        ..ObjectMeta::default()
    }
}
