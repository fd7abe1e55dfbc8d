//! Validate (pure): from the tenant as stored to a [`Validated`] tenant with its tier and
//! overrides resolved, or an error the user can fix. The model itself is
//! [`crate::tenant`].
//!
//! The CRD schema refuses most bad input at admission; this step checks what depends on
//! the operator's configuration, and what an object written before a schema change
//! could still hold.

use kube::{Resource, ResourceExt};

use crate::config::Config;
use crate::crd::{SmartRegionTenant, SmartRegionTenantSpec};
use crate::quantity::Amount;
use crate::tenant::NotATenantName;
pub use crate::tenant::{Admins, Ingest, Limits, Mqtt, TenantName, Validated};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the tenant has no uid yet")]
    NotPersisted,
    #[error(transparent)]
    Name(#[from] NotATenantName),
    #[error("quotas.{field} {value:?} is not a positive quantity")]
    Quantity { field: &'static str, value: String },
    #[error(
        "ingest.mqtt.url {0:?} is not a broker address: write mqtt://host[:port] or \
         mqtts://host[:port]"
    )]
    MqttUrl(String),
}

pub fn validate(tenant: &SmartRegionTenant, config: &Config) -> Result<Validated, Error> {
    let name = TenantName::parse(&tenant.name_any())?;
    let owner_reference = tenant
        .controller_owner_ref(&())
        .filter(|reference| !reference.uid.is_empty())
        .ok_or(Error::NotPersisted)?;
    let spec = &tenant.spec;
    let preset = config.tiers.preset(spec.tier);
    let limits = limits(spec, preset)?;
    let ingest = ingest(spec)?;
    let admins = spec.admins.clone().unwrap_or_default();
    let sorted = |mut items: Vec<String>| {
        items.sort();
        items.dedup();
        items
    };
    Ok(Validated {
        namespace: config.namespace_for(name.as_str()),
        name,
        tier: spec.tier,
        limits,
        admins: Admins {
            groups: sorted(admins.groups),
            users: sorted(admins.users),
        },
        ingest,
        read_enabled: spec.read.as_ref().is_none_or(|read| read.enabled),
        grafana: spec.grafana.as_ref().is_some_and(|grafana| grafana.enabled),
        display_name: spec.display_name.clone(),
        ipa_code: spec.entity.ipa_code.clone(),
        suspended: spec.suspended,
        owner_reference,
    })
}

/// The tier's preset with `spec.quotas` and `spec.database` on top; every quantity parsed
/// here, once, with the field named.
fn limits(spec: &SmartRegionTenantSpec, preset: &Limits) -> Result<Limits, Error> {
    let quotas = spec.quotas.clone().unwrap_or_default();
    // Parsed once, here, with the field named: downstream code holds `Amount`s.
    let quantity =
        |field: &'static str, value: Option<crate::crd::Quantity>, default: &Amount| match value {
            None => Ok(default.clone()),
            Some(value) => Amount::parse(&value.0).map_err(|_| Error::Quantity {
                field,
                value: value.0,
            }),
        };
    let database = spec.database.clone().unwrap_or_default();
    Ok(Limits {
        cpu: quantity("cpu", quotas.cpu, &preset.cpu)?,
        memory: quantity("memory", quotas.memory, &preset.memory)?,
        pods: quotas.pods.unwrap_or(preset.pods),
        storage: quantity("storage", quotas.storage, &preset.storage)?,
        database_storage: quantity(
            "databaseStorage",
            quotas.database_storage,
            &preset.database_storage,
        )?,
        ingest_rate: quotas.ingest_rate.unwrap_or(preset.ingest_rate),
        ingest_replicas: spec
            .ingest
            .as_ref()
            .and_then(|ingest| ingest.replicas)
            .unwrap_or(preset.ingest_replicas),
        retention_days: database.retention_days.unwrap_or(preset.retention_days),
        compress_after_days: database
            .compress_after_days
            .unwrap_or(preset.compress_after_days),
        chunk_interval_hours: database
            .chunk_interval_hours
            .unwrap_or(preset.chunk_interval_hours),
        container_cpu: preset.container_cpu.clone(),
        container_memory: preset.container_memory.clone(),
        object_count: preset.object_count,
        ephemeral_storage: preset.ephemeral_storage.clone(),
        container_ephemeral_storage: preset.container_ephemeral_storage.clone(),
        sharing: spec.sharing.unwrap_or(preset.sharing),
    })
}

/// `spec.ingest` with its MQTT broker's address parsed and its formats in a canonical
/// order.
fn ingest(spec: &SmartRegionTenantSpec) -> Result<Ingest, Error> {
    Ok(Ingest {
        enabled: spec.ingest.as_ref().is_none_or(|ingest| ingest.enabled),
        formats: {
            let mut formats = spec
                .ingest
                .as_ref()
                .map(|ingest| ingest.formats.clone())
                .unwrap_or_default();
            // A canonical order, so reordering the list in the spec rolls no pods.
            formats.sort_by_key(|format| *format as u8);
            formats.dedup();
            formats
        },
        mqtt: match spec.ingest.as_ref().and_then(|ingest| ingest.mqtt.as_ref()) {
            None => None,
            Some(mqtt) => {
                let broker = smartregion_contract::mqtt::parse_url(&mqtt.url)
                    .map_err(|_| Error::MqttUrl(mqtt.url.clone()))?;
                Some(Mqtt {
                    url: mqtt.url.clone(),
                    host: broker.host,
                    port: broker.port,
                    topics: mqtt.topics.clone(),
                    credentials_secret: mqtt.credentials_secret.clone(),
                })
            }
        },
    })
}
