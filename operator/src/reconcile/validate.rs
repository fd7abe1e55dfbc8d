//! Step 1 (pure): from the tenant as stored to a [`Validated`] tenant with its tier and
//! overrides resolved, or an error the user can fix.
//!
//! The CRD schema refuses most bad input at admission; this step checks what depends on
//! the operator's configuration, and what an object written before a schema change
//! could still hold.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::config::Config;
use crate::crd::{IngestFormat, MAX_NAME_LEN, SmartRegionTenant, Tier};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the tenant has no uid yet")]
    NotPersisted,
    #[error(
        "tenant name {0:?} is not usable: it must be a DNS label of at most {MAX_NAME_LEN} \
         characters that starts with a letter"
    )]
    Name(String),
    #[error("quotas.{field} {value:?} is not a positive quantity")]
    Quantity { field: &'static str, value: String },
    #[error(
        "ingest.mqtt.url {0:?} is not a broker address: write mqtt://host[:port] or \
         mqtts://host[:port]"
    )]
    MqttUrl(String),
}

/// The limits in force for a tenant: its tier's preset with `spec.quotas` on top.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub cpu: String,
    pub memory: String,
    pub pods: i32,
    pub storage: String,
    pub database_storage: String,
    pub ingest_rate: i32,
    pub ingest_replicas: i32,
    pub retention_days: i32,
    pub compress_after_days: i32,
    pub chunk_interval_hours: i32,
    pub container_cpu: String,
    pub container_memory: String,
}

/// Admin groups and users, sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Admins {
    pub groups: Vec<String>,
    pub users: Vec<String>,
}

/// A tenant that passed validation: everything the builders need, nothing optional.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub name: String,
    pub namespace: String,
    pub tier: Tier,
    pub limits: Limits,
    pub admins: Admins,
    pub ingest: Ingest,
    pub suspended: bool,
    pub owner_reference: OwnerReference,
}

/// The ingest service as the spec asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingest {
    /// `spec.ingest.enabled`, true when unset.
    pub enabled: bool,
    /// Accepted payload formats, sorted and without duplicates; empty accepts all.
    pub formats: Vec<IngestFormat>,
    /// The MQTT broker to subscribe to, if any.
    pub mqtt: Option<Mqtt>,
}

/// `spec.ingest.mqtt` with its address parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Mqtt {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub topics: Vec<String>,
    /// Secret in the tenant namespace with `username` and `password`.
    pub credentials_secret: Option<String>,
}

pub fn validate(tenant: &SmartRegionTenant, config: &Config) -> Result<Validated, Error> {
    let name = tenant.name_any();
    if !is_tenant_name(&name) {
        return Err(Error::Name(name));
    }
    let owner_reference = tenant
        .controller_owner_ref(&())
        .filter(|reference| !reference.uid.is_empty())
        .ok_or(Error::NotPersisted)?;
    let spec = &tenant.spec;
    let preset = config.tiers.preset(spec.tier);
    let quotas = spec.quotas.clone().unwrap_or_default();
    let quantity =
        |field: &'static str, value: Option<crate::crd::Quantity>, default: &str| match value {
            None => Ok(default.to_string()),
            Some(value) => match crate::quantity::parse(&value.0) {
                Some(amount) if amount > 0 => Ok(value.0),
                _ => Err(Error::Quantity {
                    field,
                    value: value.0,
                }),
            },
        };
    let database = spec.database.clone().unwrap_or_default();
    let limits = Limits {
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
    };
    let ingest = Ingest {
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
                let (_, host, port) = smartregion_ingest::mqtt::parse_url(&mqtt.url)
                    .map_err(|_| Error::MqttUrl(mqtt.url.clone()))?;
                Some(Mqtt {
                    url: mqtt.url.clone(),
                    host,
                    port,
                    topics: mqtt.topics.clone(),
                    credentials_secret: mqtt.credentials_secret.clone(),
                })
            }
        },
    };
    let admins = spec.admins.clone().unwrap_or_default();
    let sorted = |mut items: Vec<String>| {
        items.sort();
        items.dedup();
        items
    };
    Ok(Validated {
        namespace: config.namespace_for(&name),
        name,
        tier: spec.tier,
        limits,
        admins: Admins {
            groups: sorted(admins.groups),
            users: sorted(admins.users),
        },
        ingest,
        suspended: spec.suspended,
        owner_reference,
    })
}

/// The same rule as the CRD's CEL rule on `metadata.name`.
pub fn is_tenant_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
