//! ResourceQuota and LimitRange: the tenant's share of the cluster, from its tier and
//! overrides.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::object_meta;
use crate::tenant::Validated;

pub const RESOURCE_QUOTA: &str = "tenant-quota";
pub const LIMIT_RANGE: &str = "tenant-limits";

pub fn resource_quota(tenant: &Validated) -> ResourceQuota {
    let limits = &tenant.limits;
    let hard = BTreeMap::from([
        ("requests.cpu".to_string(), Quantity(limits.cpu.clone())),
        ("limits.cpu".to_string(), Quantity(limits.cpu.clone())),
        (
            "requests.memory".to_string(),
            Quantity(limits.memory.clone()),
        ),
        ("limits.memory".to_string(), Quantity(limits.memory.clone())),
        ("pods".to_string(), Quantity(limits.pods.to_string())),
        (
            "requests.storage".to_string(),
            Quantity(limits.storage.clone()),
        ),
        // No load balancers or node ports: tenants are reached through the platform.
        ("services.loadbalancers".to_string(), Quantity("0".into())),
        ("services.nodeports".to_string(), Quantity("0".into())),
        (
            "requests.ephemeral-storage".to_string(),
            Quantity(limits.ephemeral_storage.clone()),
        ),
        (
            "limits.ephemeral-storage".to_string(),
            Quantity(limits.ephemeral_storage.clone()),
        ),
    ]);
    // Objects live in the cluster's etcd, which no other quota counts.
    let counted = [
        "count/secrets",
        "count/configmaps",
        "count/services",
        "count/persistentvolumeclaims",
    ];
    let hard = hard
        .into_iter()
        .chain(counted.map(|kind| (kind.to_string(), Quantity(limits.object_count.to_string()))))
        .collect();
    ResourceQuota {
        metadata: object_meta(tenant, RESOURCE_QUOTA, true),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// Defaults for containers that state no requests or limits, which the quota would
/// otherwise refuse.
pub fn limit_range(tenant: &Validated) -> LimitRange {
    let limits = &tenant.limits;
    let defaults = BTreeMap::from([
        ("cpu".to_string(), Quantity(limits.container_cpu.clone())),
        (
            "memory".to_string(),
            Quantity(limits.container_memory.clone()),
        ),
        (
            "ephemeral-storage".to_string(),
            Quantity(limits.container_ephemeral_storage.clone()),
        ),
    ]);
    LimitRange {
        metadata: object_meta(tenant, LIMIT_RANGE, true),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(defaults.clone()),
                default_request: Some(defaults),
                ..LimitRangeItem::default()
            }],
        }),
    }
}
