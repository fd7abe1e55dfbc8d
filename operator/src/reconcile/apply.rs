//! Apply (client): make the cluster hold exactly the desired children.
//!
//! Server-side apply with one field manager, in a fixed order, and only for children that
//! differ from what is desired: an idle reconcile reads but never writes. What the tenant
//! owns (by its uid) of the kinds applied here and no longer desired is deleted; objects
//! that only carry its label are left alone. Must not touch the tenant
//! object itself (that is `status` and `finalize`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::build::Children;
use super::validate::Validated;
use crate::crd::{FIELD_MANAGER, TENANT_LABEL};
use crate::metrics::ErrorLabel;
use crate::resources::exposure::Exposed;
use crate::resources::gateway_api::HTTPRoute;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {kind} {name}")]
    Read {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete {kind} {name}, which is no longer desired")]
    Prune {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {0} is being deleted; it is created again once it is gone")]
    NamespaceTerminating(String),
    #[error(
        "{kind} {name} already exists and does not belong to this tenant (it has no owner \
         reference with the tenant's uid): the operator does not take it over. Delete or \
         rename it, or hand it over on purpose (docs/operator-guide.md, \
         \"Handing over an existing namespace\")"
    )]
    NotOurs { kind: String, name: String },
}

impl Error {
    /// Short, stable label for metrics.
    pub fn metric_label(&self) -> ErrorLabel {
        match self {
            Error::Read { .. } => ErrorLabel::Read,
            Error::Apply { .. } => ErrorLabel::Apply,
            Error::Prune { .. } => ErrorLabel::Prune,
            Error::NamespaceTerminating(_) => ErrorLabel::NamespaceTerminating,
            Error::NotOurs { .. } => ErrorLabel::NotOurs,
        }
    }
}

/// How many write requests applying took (0 in the steady state), and the exposure
/// object as the API server holds it (with the status its controller wrote).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub writes: usize,
    pub exposure: Option<Exposed>,
}

pub async fn apply_children(
    client: &Client,
    tenant: &Validated,
    children: Children,
) -> Result<Outcome, Error> {
    let Children {
        namespace,
        service_account,
        resource_quota,
        limit_range,
        network_policies,
        admin_role,
        admin_bindings,
        ingest_service,
        ingest_pdb,
        exposure,
    } = children;
    let mut outcome = Outcome::default();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(current) = read(&namespaces, &tenant.namespace).await?
        && current.metadata.deletion_timestamp.is_some()
    {
        return Err(Error::NamespaceTerminating(tenant.namespace.clone()));
    }
    outcome.writes += ensure(&namespaces, &namespace).await?;

    let mut kept = Kept::default();
    let ns = tenant.namespace.as_str();
    outcome.writes += kept
        .ensure(&Api::namespaced(client.clone(), ns), &service_account)
        .await?;
    outcome.writes += kept
        .ensure(&Api::namespaced(client.clone(), ns), &ingest_service)
        .await?;
    // A budget exists only while several ingest pods run; otherwise the prune removes it.
    if let Some(pdb) = &ingest_pdb {
        outcome.writes += kept
            .ensure(&Api::namespaced(client.clone(), ns), pdb)
            .await?;
    }
    outcome.writes += kept
        .ensure(&Api::namespaced(client.clone(), ns), &resource_quota)
        .await?;
    outcome.writes += kept
        .ensure(&Api::namespaced(client.clone(), ns), &limit_range)
        .await?;
    for policy in &network_policies {
        outcome.writes += kept
            .ensure(&Api::namespaced(client.clone(), ns), policy)
            .await?;
    }
    outcome.writes += kept
        .ensure(&Api::namespaced(client.clone(), ns), &admin_role)
        .await?;
    for binding in &admin_bindings {
        outcome.writes += kept
            .ensure(&Api::namespaced(client.clone(), ns), binding)
            .await?;
    }
    // Turned off, or switched to the other mode: the prune removes the object no longer
    // desired.
    outcome.exposure = match &exposure {
        Some(Exposed::Route(route)) => {
            let (writes, current) = kept
                .ensure_current(&Api::namespaced(client.clone(), ns), route)
                .await?;
            outcome.writes += writes;
            Some(Exposed::Route(current))
        }
        Some(Exposed::Ingress(ingress)) => {
            let (writes, current) = kept
                .ensure_current(&Api::namespaced(client.clone(), ns), ingress)
                .await?;
            outcome.writes += writes;
            Some(Exposed::Ingress(current))
        }
        None => None,
    };
    outcome.writes += prune_orphans(client, tenant, &kept).await?;
    Ok(outcome)
}

/// The children applied in this reconcile, by kind: everything else the tenant owns of
/// those kinds is an orphan.
#[derive(Default)]
struct Kept(BTreeMap<String, BTreeSet<String>>);

impl Kept {
    async fn ensure<K>(&mut self, api: &Api<K>, desired: &K) -> Result<usize, Error>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        self.0
            .entry(kind::<K>())
            .or_default()
            .insert(desired.name_any());
        ensure(api, desired).await
    }

    async fn ensure_current<K>(&mut self, api: &Api<K>, desired: &K) -> Result<(usize, K), Error>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        self.0
            .entry(kind::<K>())
            .or_default()
            .insert(desired.name_any());
        ensure_current(api, desired).await
    }

    fn contains<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        self.0
            .get(&kind::<K>())
            .is_some_and(|names| names.contains(name))
    }
}

/// Deletes what the tenant owns of every kind the operator applies into its namespace
/// and did not apply now (a child a later release renames, a budget no longer needed).
/// The kinds are listed once, here.
async fn prune_orphans(client: &Client, tenant: &Validated, kept: &Kept) -> Result<usize, Error> {
    Ok(prune::<ServiceAccount>(client, tenant, kept).await?
        + prune::<Service>(client, tenant, kept).await?
        + prune::<PodDisruptionBudget>(client, tenant, kept).await?
        + prune::<ResourceQuota>(client, tenant, kept).await?
        + prune::<LimitRange>(client, tenant, kept).await?
        + prune::<NetworkPolicy>(client, tenant, kept).await?
        + prune::<Role>(client, tenant, kept).await?
        + prune::<RoleBinding>(client, tenant, kept).await?
        + prune::<Ingress>(client, tenant, kept).await?
        + prune::<HTTPRoute>(client, tenant, kept).await?)
}

fn kind<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

async fn read<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind: kind::<K>(),
        name: name.to_string(),
        source,
    })
}

/// Applies `desired` unless the current object already holds every field of it.
/// Returns the number of write requests made (0 or 1).
pub async fn ensure<K>(api: &Api<K>, desired: &K) -> Result<usize, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    Ok(ensure_current(api, desired).await?.0)
}

/// [`ensure`], also returning the object as the API server holds it afterwards (with its
/// status), for steps that report on it.
pub async fn ensure_current<K>(api: &Api<K>, desired: &K) -> Result<(usize, K), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    if let Some(current) = read(api, &name).await? {
        if !owned_alike(&current, desired) {
            return Err(Error::NotOurs {
                kind: kind::<K>(),
                name,
            });
        }
        let present = serde_json::to_value(&current).expect("objects serialize");
        let wanted = serde_json::to_value(desired).expect("objects serialize");
        if contains(&present, &wanted) {
            return Ok((0, current));
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: kind::<K>(),
            name: name.clone(),
            source,
        })?;
    Ok((1, applied))
}

/// Writes a Secret with a precondition on what the caller read before deciding its
/// values: created only if it was absent (a Secret created meanwhile is a conflict), and
/// updated only over the very version read (one deleted or changed meanwhile is a
/// conflict). A conflict fails this reconcile; the next one reads afresh. So a Secret
/// deleted to force new credentials never comes back with the old ones. Returns the
/// writes made (0 when the version read already holds every desired value).
pub async fn ensure_secret(
    api: &Api<Secret>,
    desired: &Secret,
    read: Option<&Secret>,
) -> Result<usize, Error> {
    let name = desired.name_any();
    let failed = |source| Error::Apply {
        kind: kind::<Secret>(),
        name: name.clone(),
        source,
    };
    match read {
        None => {
            api.create(&PostParams::default(), desired)
                .await
                .map_err(failed)?;
        }
        Some(current) => {
            if !owned_alike(current, desired) {
                return Err(Error::NotOurs {
                    kind: kind::<Secret>(),
                    name,
                });
            }
            let present = serde_json::to_value(current).expect("objects serialize");
            let wanted = serde_json::to_value(desired).expect("objects serialize");
            if contains(&present, &wanted) {
                return Ok(0);
            }
            let mut guarded = desired.clone();
            guarded.metadata.resource_version = current.resource_version();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&guarded),
            )
            .await
            .map_err(failed)?;
        }
    }
    Ok(1)
}

/// `current` carries every owner reference (by uid) that `desired` sets: an object that
/// someone else created, or that a tenant of the same name owned before, is never
/// adopted by applying over it (its label alone proves nothing: anyone who can write it
/// can copy a label).
pub fn owned_alike<K: Resource>(current: &K, desired: &K) -> bool {
    desired.owner_references().iter().all(|wanted| {
        current
            .owner_references()
            .iter()
            .any(|owner| owner.uid == wanted.uid)
    })
}

/// Deletes the objects of kind `K` in the tenant's namespace that the tenant owns (an
/// owner reference with its uid) and that were not applied now. The tenant label only
/// narrows the listing: a tenant admin can copy a label, not the tenant's uid.
async fn prune<K>(client: &Client, tenant: &Validated, kept: &Kept) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &tenant.namespace);
    let selector = format!("{TENANT_LABEL}={}", tenant.name);
    let existing = match api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(existing) => existing,
        // A kind the cluster does not serve (HTTPRoute without the Gateway API's CRDs)
        // holds nothing to prune.
        Err(kube::Error::Api(response)) if response.code == 404 => return Ok(0),
        Err(source) => {
            return Err(Error::Read {
                kind: kind::<K>(),
                name: selector.clone(),
                source,
            });
        }
    };
    let mut writes = 0;
    for object in existing.items {
        let name = object.name_any();
        let owned = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == tenant.owner_reference.uid);
        if !owned || object.metadata.deletion_timestamp.is_some() || kept.contains::<K>(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => writes += 1,
            // Already gone is what we wanted.
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind: kind::<K>(),
                    name,
                    source,
                });
            }
        }
    }
    Ok(writes)
}

/// Keys of the maps whose values are Kubernetes quantities, which the API server rewrites
/// in its canonical form (`1000m` becomes `1`): a ResourceQuota's `hard`, a LimitRange's
/// `default` and the like, a container's `requests` and `limits`.
const QUANTITY_MAPS: [&str; 8] = [
    "hard",
    "requests",
    "limits",
    "default",
    "defaultRequest",
    "max",
    "min",
    "maxLimitRequestRatio",
];

/// True when `actual` holds every field of `wanted` with the same value. Lists must match
/// element by element; values of quantity maps (`QUANTITY_MAPS`) compare as quantities,
/// since the API server rewrites them, and every other string as itself.
pub fn contains(actual: &Value, wanted: &Value) -> bool {
    holds(actual, wanted, false)
}

fn holds(actual: &Value, wanted: &Value, quantities: bool) -> bool {
    match (actual, wanted) {
        // `quantities`: this object is a quantity map, so its string values are quantities.
        (Value::Object(actual), Value::Object(wanted)) => wanted.iter().all(|(key, value)| {
            let child = if value.is_object() {
                QUANTITY_MAPS.contains(&key.as_str())
            } else {
                quantities
            };
            actual
                .get(key)
                .is_some_and(|present| holds(present, value, child))
        }),
        (Value::Array(actual), Value::Array(wanted)) => {
            actual.len() == wanted.len()
                && actual
                    .iter()
                    .zip(wanted)
                    .all(|(present, value)| holds(present, value, false))
        }
        (Value::String(actual), Value::String(wanted)) if quantities => {
            crate::quantity::same(actual, wanted)
        }
        (actual, wanted) => actual == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn contains_ignores_fields_the_server_adds_but_not_changed_ones() {
        let actual = json!({
            "metadata": { "name": "q", "labels": { "a": "1", "added": "x" }, "uid": "u" },
            "spec": { "hard": { "cpu": "1", "memory": "1Gi" } },
            "status": { "used": { "cpu": "0" } }
        });
        assert!(contains(
            &actual,
            &json!({ "metadata": { "labels": { "a": "1" } } })
        ));
        assert!(contains(
            &actual,
            &json!({ "spec": { "hard": { "cpu": "1000m" } } })
        ));
        assert!(!contains(
            &actual,
            &json!({ "spec": { "hard": { "cpu": "2" } } })
        ));
        assert!(!contains(
            &actual,
            &json!({ "spec": { "hard": { "pods": "2" } } })
        ));
        assert!(!contains(&json!({ "l": [1, 2] }), &json!({ "l": [1] })));
        // Only quantities compare as quantities: a label "1" is not "1000m".
        assert!(!contains(
            &json!({ "metadata": { "labels": { "a": "1" } } }),
            &json!({ "metadata": { "labels": { "a": "1000m" } } })
        ));
        assert!(contains(
            &json!({ "spec": { "containers": [{ "resources": { "limits": { "memory": "256Mi" } } }] } }),
            &json!({ "spec": { "containers": [{ "resources": { "limits": { "memory": "268435456" } } }] } })
        ));
        assert!(contains(
            &json!({ "l": [{ "a": 1, "b": 2 }] }),
            &json!({ "l": [{ "a": 1 }] })
        ));
    }
}
