//! ServiceAccount `ingest`, the identity of the tenant's ingest pods.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::object_meta;
use crate::tenant::Validated;

pub const INGEST_SERVICE_ACCOUNT: &str = "ingest";

pub fn ingest_service_account(tenant: &Validated) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(tenant, INGEST_SERVICE_ACCOUNT, true),
        // Ingest never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
