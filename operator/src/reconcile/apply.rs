//! Apply (client): make the cluster hold exactly the desired children, in one place.
//!
//! Every child, of every kind ([`super::kinds`]), is written here, in the order `build`
//! gives (the namespace first), and only where the server's object differs from what is
//! desired: an idle reconcile reads but never writes. How each is written is its
//! [`Write`]: server-side apply with one field manager, created once, or guarded by the
//! version read. What the tenant owns (by its uid) of the kinds the operator makes and
//! did not keep now is deleted; objects that only carry its label are left alone, and an
//! object without the tenant's uid is never written over. Must not touch the tenant
//! object itself (that is `status` and `finalize`).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::build::Children;
use super::kinds::{Child, Kept, Write, prune_orphans};
use super::validate::Validated;
use crate::crd::FIELD_MANAGER;
use crate::metrics::ErrorLabel;
use crate::resources::exposure::Exposed;

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
    #[error(
        "{kind} {name} was created, changed or deleted by someone else while its values \
         were decided; the next reconcile reads it afresh"
    )]
    Changed { kind: String, name: String },
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
            Error::Changed { .. } => ErrorLabel::Conflict,
        }
    }
}

/// How many write requests applying took (0 in the steady state), and every child as the
/// API server holds it afterwards (with the status its controller wrote).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub writes: usize,
    pub current: Vec<Child>,
}

impl Outcome {
    /// The exposure object, if one is desired.
    pub fn exposure(&self) -> Option<Exposed> {
        self.current.iter().find_map(|child| match child {
            Child::HTTPRoute(route) => Some(Exposed::Route(route.clone())),
            Child::Ingress(ingress) => Some(Exposed::Ingress(ingress.clone())),
            _ => None,
        })
    }

    /// The ingest Deployment, if it is desired now.
    /// The Deployment `name` as applied.
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.current.iter().find_map(|child| match child {
            Child::Deployment(deployment) if deployment.metadata.name.as_deref() == Some(name) => {
                Some(deployment)
            }
            _ => None,
        })
    }
}

/// Writes the desired children in order, then prunes what the tenant owns and no longer
/// wants. Stops at the first failure (a later child may need an earlier one).
pub async fn apply_children(
    client: &Client,
    tenant: &Validated,
    children: Children,
) -> Result<Outcome, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(current) = read(&namespaces, &tenant.namespace).await?
        && current.metadata.deletion_timestamp.is_some()
    {
        return Err(Error::NamespaceTerminating(tenant.namespace.clone()));
    }
    let mut kept = Kept::default();
    for (kind, name) in children.unchanged {
        kept.insert(kind, name);
    }
    let mut outcome = Outcome::default();
    for desired in &children.desired {
        kept.insert(desired.child.kind(), desired.child.name());
        let (writes, current) = desired
            .child
            .ensure(client, &tenant.namespace, &desired.write)
            .await?;
        outcome.writes += writes;
        outcome.current.push(current);
    }
    outcome.writes += prune_orphans(client, tenant, &kept).await?;
    Ok(outcome)
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

/// Writes `desired` as `write` says, unless the server's object already holds every
/// field of it. Returns the writes made (0 or 1) and the object as the server holds it.
/// (Long: one decision table over the write modes and what the server holds.)
pub(crate) async fn ensure_with<K>(
    api: &Api<K>,
    desired: &K,
    write: &Write,
) -> Result<(usize, K), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    let changed = || Error::Changed {
        kind: kind::<K>(),
        name: name.clone(),
    };
    let current = read(api, &name).await?;
    if let Some(current) = &current
        && !owned_alike(current, desired)
    {
        return Err(Error::NotOurs {
            kind: kind::<K>(),
            name,
        });
    }
    let current = match (write, current) {
        (Write::CreateOnce, Some(current)) => return Ok((0, current)),
        (Write::CreateOnce | Write::Over(None), None) => {
            return match api.create(&PostParams::default(), desired).await {
                Ok(created) => Ok((1, created)),
                // Created meanwhile (by a previous leader, say): what is there is kept.
                Err(kube::Error::Api(response))
                    if response.code == 409 && *write == Write::CreateOnce =>
                {
                    Ok((0, read(api, &name).await?.ok_or_else(changed)?))
                }
                Err(kube::Error::Api(response)) if response.code == 409 => Err(changed()),
                Err(source) => Err(Error::Apply {
                    kind: kind::<K>(),
                    name,
                    source,
                }),
            };
        }
        (Write::Over(None), Some(_)) | (Write::Over(Some(_)), None) => return Err(changed()),
        (Write::Over(Some(version)), Some(current))
            if current.resource_version().as_ref() != Some(version) =>
        {
            return Err(changed());
        }
        (_, current) => current,
    };
    if let Some(current) = current {
        let present = serde_json::to_value(&current).expect("objects serialize");
        let wanted = serde_json::to_value(desired).expect("objects serialize");
        if contains(&present, &wanted) {
            return Ok((0, current));
        }
    }
    let mut guarded = desired.clone();
    if let Write::Over(Some(version)) = write {
        // Only over that version: a change since is a conflict, not overwritten.
        guarded.meta_mut().resource_version = Some(version.clone());
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&guarded),
        )
        .await
        .map_err(|source| match &source {
            kube::Error::Api(response) if response.code == 409 => changed(),
            _ => Error::Apply {
                kind: kind::<K>(),
                name: name.clone(),
                source,
            },
        })?;
    Ok((1, applied))
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
