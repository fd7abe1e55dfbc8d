//! Open data (pure, but for [`update_dataset_statuses`]): from the `SmartRegionDataset`s
//! in the tenant's namespace to what the database step publishes, and from what it
//! published to the datasets' status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::child_status;
use super::conditions::Reason;
use crate::config::Config;
use crate::crd::{SmartRegionDataset, SmartRegionDatasetStatus};
use crate::database::datasets::{self, Dataset};
use crate::database::names::TenantDb;
use crate::tenant::Validated;

/// The datasets to publish, from the objects in the tenant's namespace; none when the
/// tenant has no IPA code (DCAT-AP_IT names the publisher by it).
pub fn declared(objects: &[SmartRegionDataset], tenant: &Validated) -> Vec<Dataset> {
    if tenant.ipa_code.is_none() {
        return Vec::new();
    }
    let mut declared: Vec<Dataset> = objects
        .iter()
        .filter(|object| object.metadata.deletion_timestamp.is_none())
        .map(|object| {
            let spec = &object.spec;
            Dataset {
                name: object.name_any(),
                rows: super::sharing::rows(object.name_any(), &spec.rows),
                period_seconds: spec.granularity.seconds(),
                metadata: metadata(spec, tenant),
            }
        })
        .collect();
    declared.sort_by(|a, b| a.name.cmp(&b.name));
    declared
}

/// The description the catalogue is made from: the spec, and how long the tenant keeps
/// its measurements (the start of the temporal coverage).
fn metadata(spec: &crate::crd::SmartRegionDatasetSpec, tenant: &Validated) -> serde_json::Value {
    let mut metadata = serde_json::to_value(spec).expect("a dataset spec serializes");
    metadata["retentionDays"] = serde_json::json!(tenant.limits.retention_days);
    metadata
}

/// What the database step did with the tenant's datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published<'a> {
    /// Its open schema is as declared.
    Yes,
    /// The tenant has no `spec.entity.ipaCode`: nothing is published.
    NoIpaCode,
    /// The database step failed, with why.
    Failed(&'a str),
}

/// Where anyone reads a dataset: `<read service's public URL>/open/<name>`.
pub fn url(tenant: &Validated, config: &Config, name: &str) -> String {
    format!(
        "{}/open/{name}",
        crate::resources::read::public_url(tenant, config)
    )
}

/// The status a dataset has after the database step, its last one `previous`.
pub fn dataset_status(
    object: &SmartRegionDataset,
    previous: Option<&SmartRegionDatasetStatus>,
    tenant: &Validated,
    config: &Config,
    published: Published<'_>,
    now: &Time,
) -> SmartRegionDatasetStatus {
    let name = object.name_any();
    let read_as = datasets::read_as(&TenantDb::for_tenant(&tenant.name), &name);
    let url = url(tenant, config, &name);
    let (ok, reason, message) = match published {
        Published::Yes if tenant.suspended || !tenant.read_enabled => (
            false,
            Reason::Published,
            format!(
                "{read_as} is in place, but the read service does not run (the tenant is \
                 suspended or spec.read.enabled is false): {url} answers once it runs"
            ),
        ),
        Published::Yes => (
            true,
            Reason::Published,
            format!(
                "anyone may read {url}, in whole buckets of {} or coarser",
                object.spec.granularity.iso()
            ),
        ),
        Published::NoIpaCode => (
            false,
            Reason::PublisherUnidentified,
            "the tenant has no spec.entity.ipaCode: DCAT-AP_IT names the publisher by its \
             IPA code, so nothing is published until the tenant has one"
                .to_string(),
        ),
        Published::Failed(why) => (false, Reason::PublishFailed, why.to_string()),
    };
    let generation = object.metadata.generation;
    let previous = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    SmartRegionDatasetStatus {
        observed_generation: generation,
        conditions: vec![child_status::ready(
            previous, generation, ok, reason, message, now,
        )],
        url: (published == Published::Yes).then_some(url),
        read_as: (published == Published::Yes).then_some(read_as),
    }
}

/// Writes each dataset's status where it changed (never on an idle reconcile); `desired`
/// makes a dataset's status from its last one. Returns the writes made.
pub async fn update_dataset_statuses(
    client: &Client,
    datasets: &[SmartRegionDataset],
    desired: impl Fn(&SmartRegionDataset, Option<&SmartRegionDatasetStatus>) -> SmartRegionDatasetStatus,
) -> Result<usize, kube::Error> {
    let mut writes = 0;
    for object in datasets {
        let api = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
        if child_status::write(&api, object, |previous| desired(object, previous))
            .await?
            .is_some()
        {
            writes += 1;
        }
    }
    Ok(writes)
}

/// The tenant a dataset belongs to: the one whose namespace holds it.
pub fn tenant_of_dataset(
    namespace_prefix: &str,
) -> impl Fn(
    SmartRegionDataset,
) -> Option<kube::runtime::reflector::ObjectRef<crate::crd::SmartRegionTenant>>
+ Clone
+ Send
+ Sync
+ 'static {
    let prefix = namespace_prefix.to_string();
    move |dataset: SmartRegionDataset| {
        let namespace = dataset.namespace()?;
        let tenant = namespace.strip_prefix(&prefix)?;
        crate::tenant::TenantName::parse(tenant)
            .ok()
            .map(|name| kube::runtime::reflector::ObjectRef::new(name.as_str()))
    }
}
