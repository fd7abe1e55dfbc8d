//! The tenant's Grafana data source and dashboard in the platform's Grafana namespace
//! (client): written where they differ from what is wanted, removed when the tenant no
//! longer wants them or goes. Only objects that carry the tenant's uid are changed or
//! deleted; one of the same name that does not is left alone and reported.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::config::DatabaseEndpoint;
use crate::crd::FIELD_MANAGER;
use crate::resources::grafana::{self, TENANT_UID_LABEL};
use crate::tenant::Validated;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to write {0} in the Grafana namespace")]
    Write(String, #[source] kube::Error),
    #[error("failed to read {0} in the Grafana namespace")]
    Read(String, #[source] kube::Error),
    #[error(
        "{0} in the Grafana namespace belongs to something else (no label {TENANT_UID_LABEL} of this tenant): left alone; delete or rename it to let the tenant's be placed"
    )]
    NotOurs(String),
}

/// What the data source needs: the reader's password and where the database is.
pub struct Reader<'a> {
    pub password: &'a str,
    pub endpoint: &'a DatabaseEndpoint,
    pub timescaledb: bool,
}

/// Brings the tenant's Grafana objects to `spec.grafana` (none without a Grafana
/// namespace). `reader` is `None` when the database step did not run: nothing is written
/// then (and nothing removed).
pub async fn ensure_grafana(
    client: &Client,
    namespace: Option<&str>,
    tenant: &Validated,
    reader: Option<Reader<'_>>,
) -> Result<(), Error> {
    let Some(namespace) = namespace else {
        if tenant.grafana {
            warn!(
                "spec.grafana.enabled is set, but the operator has no --grafana-namespace: no data source or dashboard is placed"
            );
        }
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    if !tenant.grafana {
        return ensure_removed(
            client,
            namespace,
            tenant.name.as_str(),
            &tenant.owner_reference.uid,
        )
        .await;
    }
    let Some(reader) = reader else {
        return Ok(());
    };
    let document =
        grafana::datasource_document(tenant, reader.endpoint, reader.password, reader.timescaledb);
    let secret = grafana::datasource_secret(tenant, namespace, &document);
    place(&secrets, secret, tenant, |found, wanted| {
        found.data == wanted.data
    })
    .await?;
    let map = grafana::dashboard_config_map(tenant, namespace);
    place(&maps, map, tenant, |found, wanted| {
        found.data == wanted.data
    })
    .await
}

fn ours<K: Resource>(object: &K, uid: &str) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(TENANT_UID_LABEL))
        .is_some_and(|label| label == uid)
}

/// Removes the tenant's data source and dashboard (those carrying its uid) from the
/// Grafana namespace: when it no longer wants them, and when it is deleted.
pub async fn ensure_removed(
    client: &Client,
    namespace: &str,
    tenant: &str,
    uid: &str,
) -> Result<(), Error> {
    remove(
        &Api::<Secret>::namespaced(client.clone(), namespace),
        &grafana::datasource_name_of(tenant),
        uid,
    )
    .await?;
    remove(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &grafana::dashboard_name_of(tenant),
        uid,
    )
    .await
}

/// Writes `wanted` unless an object of its name is there already with the same content;
/// refuses to touch one that is not the tenant's.
async fn place<K>(
    api: &Api<K>,
    wanted: K,
    tenant: &Validated,
    same: impl Fn(&K, &K) -> bool,
) -> Result<(), Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = wanted.meta().name.clone().unwrap_or_default();
    match api
        .get_opt(&name)
        .await
        .map_err(|error| Error::Read(name.clone(), error))?
    {
        Some(found) if !ours(&found, &tenant.owner_reference.uid) => {
            return Err(Error::NotOurs(name));
        }
        Some(found) if same(&found, &wanted) && found.meta().labels == wanted.meta().labels => {
            return Ok(());
        }
        _ => {}
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&wanted),
    )
    .await
    .map_err(|error| Error::Write(name.clone(), error))?;
    info!(%name, "Grafana object placed");
    Ok(())
}

/// Deletes the object of that name if it is the tenant's.
async fn remove<K>(api: &Api<K>, name: &str, uid: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(found) = api
        .get_opt(name)
        .await
        .map_err(|error| Error::Read(name.to_string(), error))?
    else {
        return Ok(());
    };
    if !ours(&found, uid) {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(%name, "Grafana object removed");
            Ok(())
        }
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(Error::Write(name.to_string(), error)),
    }
}
