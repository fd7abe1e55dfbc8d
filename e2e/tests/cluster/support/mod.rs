//! Helpers shared by the operator tests: tenants from the examples, each assigned to the
//! test's own operator by the shard label, and waits on their status.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use smartregion_e2e::operator::SHARD_LABEL;
use smartregion_e2e::{apply, paths, shared, wait};
use smartregion_operator::crd::{
    Phase, SmartRegionDataset, SmartRegionShare, SmartRegionTenant, Storage,
};

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The storage a new tenant gets from an operator with the default `--database-storage`
/// on the cluster's database: hypertables on TimescaleDB, partitions on PostgreSQL.
pub fn default_storage() -> Storage {
    match shared().engine {
        smartregion_e2e::Engine::TimescaleDb => Storage::Hypertable,
        smartregion_e2e::Engine::Plain => Storage::Partitions,
    }
}

/// `status.database.storage` of a tenant.
pub fn storage_of(tenant: &SmartRegionTenant) -> Option<Storage> {
    tenant.status.as_ref()?.database.as_ref()?.storage
}

pub async fn client() -> Result<Client> {
    let client = shared().client().await?;
    apply::install_crds(&client).await?;
    Ok(client)
}

pub fn tenants(client: &Client) -> Api<SmartRegionTenant> {
    Api::all(client.clone())
}

/// `examples/<example>.yaml` renamed to `name` and labelled for the operator of `shard`.
pub fn example(example: &str, name: &str, shard: &str) -> Result<Value> {
    let path = paths::workspace_root().join(format!("examples/{example}.yaml"));
    let text = std::fs::read_to_string(&path)?;
    let mut tenant: Value = serde_yaml::from_str(&text)?;
    tenant["metadata"]["name"] = json!(name);
    tenant["metadata"]["labels"] = json!({ SHARD_LABEL: shard });
    Ok(tenant)
}

/// Server-side applies a tenant as a user would (`kubectl apply --server-side`).
pub async fn apply_tenant(client: &Client, tenant: &Value) -> Result<SmartRegionTenant> {
    let name = tenant["metadata"]["name"].as_str().context("no name")?;
    Ok(tenants(client)
        .patch(
            name,
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(tenant),
        )
        .await?)
}

pub fn condition<'a>(
    tenant: &'a SmartRegionTenant,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    tenant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

pub fn is_ready(tenant: &SmartRegionTenant) -> bool {
    let status = tenant.status.as_ref();
    status.and_then(|s| s.phase) == Some(Phase::Ready)
        && status.and_then(|s| s.observed_generation) == tenant.metadata.generation
        && condition(tenant, "Ready").is_some_and(|c| c.status == "True")
}

pub async fn wait_ready(client: &Client, name: &str) -> Result<SmartRegionTenant> {
    let api = tenants(client);
    wait::until(&format!("tenant {name} to be Ready"), READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.to_string();
        async move { Ok(api.get(&name).await.ok().filter(is_ready)) }
    })
    .await
}

/// Waits until the tenant's status describes its current generation in `phase`.
pub async fn wait_phase(client: &Client, name: &str, phase: Phase) -> Result<SmartRegionTenant> {
    let api = tenants(client);
    wait::until(
        &format!("tenant {name} to be {phase:?}"),
        READY_TIMEOUT,
        || {
            let api = api.clone();
            let name = name.to_string();
            async move {
                Ok(api.get(&name).await.ok().filter(|tenant| {
                    let status = tenant.status.as_ref();
                    status.and_then(|s| s.phase) == Some(phase)
                        && status.and_then(|s| s.observed_generation) == tenant.metadata.generation
                }))
            }
        },
    )
    .await
}

/// Deletes a tenant and waits until it is gone (finalizer done).
pub async fn delete_and_wait(client: &Client, name: &str) -> Result<()> {
    let api = tenants(client);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    wait::until(&format!("tenant {name} to be gone"), READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.to_string();
        async move { Ok(api.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await
}

pub fn name_of(tenant: &SmartRegionTenant) -> String {
    tenant.name_any()
}

/// Deletes tenants at once and waits until every one is gone.
pub async fn delete_all_and_wait(client: &Client, names: &[String]) -> Result<()> {
    let deletions = names.iter().map(|name| delete_and_wait(client, name));
    for result in futures::future::join_all(deletions).await {
        result?;
    }
    Ok(())
}

/// Deletes the child `name` of kind `K` and waits up to `deadline` for the operator to
/// create it again (a new uid).
pub async fn delete_and_wait_replaced<K>(api: &Api<K>, name: &str, deadline: Duration) -> Result<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let before = api.get(name).await?.uid();
    api.delete(name, &DeleteParams::default()).await?;
    wait::until(
        &format!("{} {name} to be created again", K::kind(&())),
        deadline,
        || {
            let (api, before) = (api.clone(), before.clone());
            async move {
                Ok(api
                    .get_opt(name)
                    .await?
                    .filter(|object| object.uid() != before))
            }
        },
    )
    .await
}

/// Fails unless `meta` (of a `kind`) carries the tenant's labels and is controlled by
/// the tenant with `uid`.
pub fn ensure_labelled_and_owned(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    tenant: &str,
    uid: &str,
) -> Result<()> {
    let labels = meta.labels.clone().unwrap_or_default();
    anyhow::ensure!(
        labels
            .get(smartregion_operator::crd::TENANT_LABEL)
            .map(String::as_str)
            == Some(tenant),
        "{kind} {:?} lacks the tenant label",
        meta.name
    );
    anyhow::ensure!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("smartregion-operator"),
        "{kind} {:?} lacks the managed-by label",
        meta.name
    );
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true));
    anyhow::ensure!(
        owned,
        "{kind} {:?} is not owned by tenant {tenant}",
        meta.name
    );
    Ok(())
}

/// A value of the Secret `name` in the tenant's namespace.
pub async fn secret_value(client: &Client, tenant: &str, name: &str, key: &str) -> Result<String> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &format!("srt-{tenant}"));
    let secret = secrets.get(name).await?;
    let bytes = secret
        .data
        .and_then(|data| data.get(key).cloned())
        .with_context(|| format!("Secret {name} has no key {key}"))?;
    Ok(String::from_utf8(bytes.0)?)
}

/// The tenant's own login, from its Secret (`db-writer`, `db-reader`), as its client uses
/// it. The harness's client has no TLS settings; the Secret's sslmode is for real clients.
pub async fn login(client: &Client, tenant: &str, secret: &str) -> Result<tokio_postgres::Client> {
    let uri = secret_value(client, tenant, secret, "uri").await?;
    connect_plain(&uri.replace("sslmode=verify-full", "sslmode=disable")).await
}

/// A plain connection, as a client without TLS settings would make.
pub async fn connect_plain(uri: &str) -> Result<tokio_postgres::Client> {
    let (session, connection) = tokio_postgres::connect(uri, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(session)
}

/// The tenant's schema.
pub fn schema_of(tenant: &str) -> String {
    format!("t_{}", tenant.replace('-', "_"))
}

/// Fails unless `result` is PostgreSQL's "permission denied" (SQLSTATE 42501).
pub fn denied<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tokio_postgres::Error>,
) -> Result<()> {
    match result {
        Err(error)
            if error.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
        {
            Ok(())
        }
        other => anyhow::bail!("{what}: expected permission denied, got {other:?}"),
    }
}

/// A `SmartRegionShare` named `name` in the provider's namespace, sharing with
/// `consumers`, with `spec` merged over that (metrics, sensors, since).
pub fn share(provider: &str, name: &str, consumers: &[&str], spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "smartregion.toscana.it/v1alpha1",
        "kind": "SmartRegionShare",
        "metadata": { "name": name, "namespace": format!("srt-{provider}") },
        "spec": { "consumers": consumers },
    });
    if let Value::Object(fields) = spec {
        for (key, value) in fields {
            object["spec"][key] = value;
        }
    }
    object
}

/// Server-side applies a share as `client` (a provider's admin, usually).
pub async fn apply_share(client: &Client, share: &Value) -> Result<SmartRegionShare, kube::Error> {
    let namespace = share["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = share["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<SmartRegionShare> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply("e2e-user").force(),
        &Patch::Apply(share),
    )
    .await
}

/// Waits until the share's status describes its current generation and `accept` holds.
pub async fn wait_share(
    client: &Client,
    provider: &str,
    name: &str,
    what: &str,
    accept: impl Fn(&SmartRegionShare) -> bool,
) -> Result<SmartRegionShare> {
    let api: Api<SmartRegionShare> = Api::namespaced(client.clone(), &format!("srt-{provider}"));
    let accept = &accept;
    wait::until(&format!("share {name}: {what}"), READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.to_string();
        async move {
            let share = api.get(&name).await?;
            let current = share.status.as_ref().and_then(|s| s.observed_generation)
                == share.metadata.generation;
            Ok((current && accept(&share)).then_some(share))
        }
    })
    .await
}

/// The share's `Ready` condition is True.
pub fn share_ready(share: &SmartRegionShare) -> bool {
    share
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The chart's admission policies, installed as `helm install` would (the rest of the
/// chart is not needed to judge tenant admins' requests).
pub async fn install_admission_policies(client: &Client) -> Result<()> {
    let text = smartregion_e2e::helm::template("trust", "smartregion-trust", &[])?;
    for object in apply::documents(&text)? {
        let kind = object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        if kind.starts_with("ValidatingAdmissionPolicy") {
            apply::apply(client, &object).await?;
        }
    }
    Ok(())
}

/// Admission policies are enforced once the API server has loaded them (it compiles them
/// asynchronously): waits until `attempt` is refused, up to a deadline.
pub async fn refused_once_loaded<T, F, Fut>(what: &str, attempt: F) -> Result<String>
where
    T: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let attempt = &attempt;
    wait::until(what, Duration::from_secs(30), || async move {
        match attempt().await {
            Err(kube::Error::Api(response)) if [403, 422].contains(&response.code) => {
                Ok(Some(response.message))
            }
            Err(error) => Err(error.into()),
            // Accepted before the policy took effect: undone by the caller's cleanup.
            Ok(_) => Ok(None),
        }
    })
    .await
}

/// A `SmartRegionDataset` of `provider` named `name`: a realistic description, with
/// `spec` on top.
pub fn dataset(provider: &str, name: &str, spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "smartregion.toscana.it/v1alpha1",
        "kind": "SmartRegionDataset",
        "metadata": { "name": name, "namespace": format!("srt-{provider}") },
        "spec": {
            "title": "Qualità dell'aria, medie orarie",
            "description": "PM10 delle centraline \"urbane\" <misure validate> & non validate.",
            "licence": "CC-BY-4.0",
            "themes": ["ENVI"],
            "keywords": ["aria", "pm10"],
            "updateFrequency": "HOURLY",
            "contact": { "name": "Ufficio Ambiente", "email": "ambiente@comune.example.it" },
        },
    });
    if let Value::Object(fields) = spec {
        for (key, value) in fields {
            object["spec"][key] = value;
        }
    }
    object
}

/// Server-side applies a dataset as `client` (the tenant's admin, usually).
pub async fn apply_dataset(
    client: &Client,
    dataset: &Value,
) -> Result<SmartRegionDataset, kube::Error> {
    let namespace = dataset["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let name = dataset["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<SmartRegionDataset> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply("e2e-user").force(),
        &Patch::Apply(dataset),
    )
    .await
}

/// Waits until the dataset's status describes its current generation with a `Ready`
/// condition of `status` ("True" or "False"); returns it.
pub async fn wait_dataset(
    client: &Client,
    provider: &str,
    name: &str,
    status: &str,
) -> Result<SmartRegionDataset> {
    let api: Api<SmartRegionDataset> = Api::namespaced(client.clone(), &format!("srt-{provider}"));
    wait::until(
        &format!("dataset {name}: Ready {status}"),
        READY_TIMEOUT,
        || {
            let api = api.clone();
            let name = name.to_string();
            async move {
                let dataset = api.get(&name).await?;
                let current = dataset.status.as_ref().and_then(|s| s.observed_generation)
                    == dataset.metadata.generation;
                let ready = dataset
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == status);
                Ok((current && ready).then_some(dataset))
            }
        },
    )
    .await
}
