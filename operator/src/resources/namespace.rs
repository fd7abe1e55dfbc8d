//! The tenant's Namespace: Pod Security `restricted` and the tenant labels.

use k8s_openapi::api::core::v1::Namespace;

use super::object_meta;
use crate::tenant::Validated;

pub fn namespace(tenant: &Validated) -> Namespace {
    let mut meta = object_meta(tenant, &tenant.namespace, false);
    let labels = meta.labels.get_or_insert_default();
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    Namespace {
        metadata: meta,
        ..Namespace::default()
    }
}
