//! Every kind of child the operator makes, declared once (client): `apply` writes and
//! prunes through [`Child`], the controller watches with [`watch_children`], and the
//! chart's ClusterRole is held to [`KINDS`] by a test.
//!
//! Adding a kind of child: its builder in `resources/` (pure), and one line in
//! `child_kinds!` below with its scope, API group and resource; the compiler then
//! points at `build` (a variant nobody makes) and the RBAC test at the chart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::apply::{self, Error};
use crate::config::{Config, ExposureVia};
use crate::crd::{SmartRegionTenant, TENANT_LABEL};
use crate::resources::MANAGED_SELECTOR;
use crate::resources::gateway_api::HTTPRoute;
use crate::tenant::Validated;

/// The verbs the operator uses on every kind of child: it reads and watches them, applies
/// them server-side (create and patch), and prunes them.
pub const VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// A kind of child, as RBAC names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
}

/// How a desired child is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Server-side apply, when the object on the server lacks a desired field.
    Apply,
    /// Created when absent and never changed (`ingest-keys`: the keys are the admins').
    CreateOnce,
    /// Written only over the version read before its values were decided: created only
    /// where it was absent (`None`), updated only while the server still holds that
    /// `resourceVersion` (the Secrets with credentials: one deleted meanwhile must not
    /// come back with the values it had).
    Over(Option<String>),
}

/// A child as the builders want it, with how to write it.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub child: Child,
    pub write: Write,
}

impl Desired {
    pub fn apply(child: impl Into<Child>) -> Desired {
        Desired {
            child: child.into(),
            write: Write::Apply,
        }
    }
}

macro_rules! child_kinds {
    ($($kind:ident: $scope:ident, $group:literal, $resource:literal, watched: $watched:expr;)*) => {
        /// One child of a tenant, of any kind the operator makes. The variants differ in
        /// size as the Kubernetes types do (a Deployment is large); a tenant has a dozen
        /// children, built once per reconcile, so boxing them would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug, PartialEq)]
        pub enum Child {
            $($kind($kind),)*
        }

        $(impl From<$kind> for Child {
            fn from(object: $kind) -> Child {
                Child::$kind(object)
            }
        })*

        /// Every kind, in the order of `child_kinds!`.
        pub const KINDS: &[KindInfo] = &[
            $(KindInfo { kind: stringify!($kind), group: $group, resource: $resource },)*
        ];

        impl Child {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Child::$kind(_) => stringify!($kind),)*
                }
            }

            pub fn name(&self) -> String {
                match self {
                    $(Child::$kind(object) => object.name_any(),)*
                }
            }

            /// As JSON, with its `apiVersion` and `kind` (for tools that apply any kind).
            pub fn to_value(&self) -> serde_json::Value {
                match self {
                    $(Child::$kind(object) => serde_json::to_value(object).expect("objects serialize"),)*
                }
            }

            /// Writes it as `write` says, unless the server already holds it; returns the
            /// writes made and the object as the server holds it afterwards.
            pub(crate) async fn ensure(
                &self,
                client: &Client,
                namespace: &str,
                write: &Write,
            ) -> Result<(usize, Child), Error> {
                match self {
                    $(Child::$kind(object) => {
                        let api: Api<$kind> = child_kinds!(@api $scope, client, namespace);
                        let (writes, current) = apply::ensure_with(&api, object, write).await?;
                        Ok((writes, Child::$kind(current)))
                    })*
                }
            }
        }

        /// Deletes what the tenant owns (by its uid) of every namespaced kind and did not
        /// apply now.
        pub(crate) async fn prune_orphans(
            client: &Client,
            tenant: &Validated,
            kept: &Kept,
        ) -> Result<usize, Error> {
            let mut writes = 0;
            $(writes += child_kinds!(@prune $scope, $kind, client, tenant, kept);)*
            Ok(writes)
        }

        /// The controller, woken by every change of a child of a tenant it serves.
        pub fn watch_children(
            controller: Controller<SmartRegionTenant>,
            client: &Client,
            config: &Config,
        ) -> Controller<SmartRegionTenant> {
            // Children of tenants outside the selector map to tenants that are not in the
            // controller's cache, which it then skips.
            let children = watcher::Config::default().labels(MANAGED_SELECTOR);
            let prefix = config.namespace_prefix.as_str();
            let mut controller = controller;
            $(
                let watched: fn(&Config) -> bool = $watched;
                if watched(config) {
                    controller = controller.watches(
                        Api::<$kind>::all(client.clone()),
                        children.clone(),
                        tenant_of(prefix),
                    );
                }
            )*
            controller
        }
    };
    (@api cluster, $client:expr, $namespace:expr) => { Api::all($client.clone()) };
    (@api namespaced, $client:expr, $namespace:expr) => { Api::namespaced($client.clone(), $namespace) };
    (@prune cluster, $kind:ident, $client:expr, $tenant:expr, $kept:expr) => { 0 };
    (@prune namespaced, $kind:ident, $client:expr, $tenant:expr, $kept:expr) => {
        prune::<$kind>($client, $tenant, $kept).await?
    };
}

fn always(_: &Config) -> bool {
    true
}

child_kinds! {
    Namespace: cluster, "", "namespaces", watched: always;
    ServiceAccount: namespaced, "", "serviceaccounts", watched: always;
    ResourceQuota: namespaced, "", "resourcequotas", watched: always;
    LimitRange: namespaced, "", "limitranges", watched: always;
    NetworkPolicy: namespaced, "networking.k8s.io", "networkpolicies", watched: always;
    Role: namespaced, "rbac.authorization.k8s.io", "roles", watched: always;
    RoleBinding: namespaced, "rbac.authorization.k8s.io", "rolebindings", watched: always;
    Service: namespaced, "", "services", watched: always;
    PodDisruptionBudget: namespaced, "policy", "poddisruptionbudgets", watched: always;
    // A deleted one is issued again; a changed one rolls the ingest pods.
    Secret: namespaced, "", "secrets", watched: always;
    // Its status drives IngestReady through a rollout.
    Deployment: namespaced, "apps", "deployments", watched: always;
    Ingress: namespaced, "networking.k8s.io", "ingresses",
        watched: |config| matches!(config.exposure.as_ref().map(|e| &e.via), Some(ExposureVia::Ingress { .. }));
    // Watched only with the Gateway API in use: without its CRDs a watch fails forever.
    // Its status drives ExposureReady.
    HTTPRoute: namespaced, "gateway.networking.k8s.io", "httproutes",
        watched: |config| matches!(config.exposure.as_ref().map(|e| &e.via), Some(ExposureVia::Gateway(_)));
}

/// Maps a labelled child to its tenant, but only where that tenant's children live: in
/// its own namespace, or, for the namespace itself, that namespace. A tenant admin can put
/// any label on an object in their namespace; it never makes the operator look at
/// another tenant.
pub fn tenant_of<K: Resource>(
    namespace_prefix: &str,
) -> impl Fn(K) -> Option<kube::runtime::reflector::ObjectRef<SmartRegionTenant>>
+ Clone
+ Send
+ Sync
+ 'static {
    let prefix = namespace_prefix.to_string();
    move |object: K| {
        let tenant = object.labels().get(TENANT_LABEL)?;
        let place = object
            .meta()
            .namespace
            .as_ref()
            .or(object.meta().name.as_ref())?;
        (*place == format!("{prefix}{tenant}"))
            .then(|| kube::runtime::reflector::ObjectRef::new(tenant))
    }
}

/// The children written or kept in this reconcile, by kind: everything else the tenant
/// owns of those kinds is an orphan.
#[derive(Default)]
pub struct Kept(BTreeMap<&'static str, BTreeSet<String>>);

impl Kept {
    pub fn insert(&mut self, kind: &'static str, name: String) {
        self.0.entry(kind).or_default().insert(name);
    }

    fn contains(&self, kind: &str, name: &str) -> bool {
        self.0.get(kind).is_some_and(|names| names.contains(name))
    }
}

fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// Deletes the objects of kind `K` in the tenant's namespace that the tenant owns (an
/// owner reference with its uid) and that were not kept now. The tenant label only
/// narrows the listing: a tenant admin can copy a label, not the tenant's uid.
async fn prune<K>(client: &Client, tenant: &Validated, kept: &Kept) -> Result<usize, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
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
                kind: kind_of::<K>(),
                name: selector.clone(),
                source,
            });
        }
    };
    let kind = kind_of::<K>();
    let mut writes = 0;
    for object in existing.items {
        let name = object.name_any();
        let owned = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == tenant.owner_reference.uid);
        if !owned || object.metadata.deletion_timestamp.is_some() || kept.contains(&kind, &name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => writes += 1,
            // Already gone is what we wanted.
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind: kind.clone(),
                    name,
                    source,
                });
            }
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_with_its_rbac_resource() {
        let mut kinds: Vec<&str> = KINDS.iter().map(|kind| kind.kind).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), KINDS.len());
        for kind in KINDS {
            assert!(
                kind.resource.ends_with('s') && kind.resource == kind.resource.to_lowercase(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_child_maps_to_its_tenant_only_from_that_tenants_namespace() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::ObjectMeta;
        use kube::runtime::reflector::ObjectRef;
        let labelled = |namespace: Option<&str>, name: &str, tenant: &str| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: namespace.map(str::to_string),
                labels: Some([(TENANT_LABEL.to_string(), tenant.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let map = tenant_of::<ConfigMap>("srt-");
        assert_eq!(
            map(labelled(Some("srt-prato"), "ingest", "prato")),
            Some(ObjectRef::new("prato"))
        );
        // Prato's admin labels an object of theirs for Firenze: nothing for Firenze.
        assert_eq!(map(labelled(Some("srt-prato"), "bait", "firenze")), None);
        assert_eq!(map(labelled(Some("default"), "bait", "firenze")), None);
        // The namespace itself (cluster-scoped) maps by its name.
        assert_eq!(
            map(labelled(None, "srt-firenze", "firenze")),
            Some(ObjectRef::new("firenze"))
        );
        assert_eq!(map(labelled(None, "kube-system", "firenze")), None);
    }
}
