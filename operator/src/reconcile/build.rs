//! Step 2 (pure): the desired child objects of a validated tenant.
//!
//! No client, no clock: the same tenant and configuration always give the same objects,
//! which is what makes drift visible and unit tests exhaustive.

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

use super::validate::Validated;
use crate::config::Config;
use crate::resources::{namespace, network, quota, rbac, service_account};

/// Every child a tenant should have. `apply` destructures it without `..`, so a kind
/// that is built here but never applied does not compile.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub resource_quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policies: Vec<NetworkPolicy>,
    pub admin_role: Role,
    pub admin_bindings: Vec<RoleBinding>,
    // Slots for the later parts: the ingest Deployment, Service and PodDisruptionBudget,
    // and the database Secrets, go here.
}

pub fn children(tenant: &Validated, config: &Config) -> Children {
    Children {
        namespace: namespace::namespace(tenant, config),
        service_account: service_account::ingest_service_account(tenant),
        resource_quota: quota::resource_quota(tenant),
        limit_range: quota::limit_range(tenant),
        network_policies: network::network_policies(tenant, config),
        admin_role: rbac::admin_role(tenant),
        admin_bindings: rbac::admin_bindings(tenant),
    }
}
