//! Inputs (client, reads only): what the later steps need to know of the tenant's
//! namespace before they decide anything — the Secrets as they are now, and, while a
//! rotated writer login waits to retire, whether every ingest pod already runs from the
//! current Secrets. Never logs, reports or returns a value of a Secret outside them.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};

use super::validate::Validated;
use crate::crd::{SmartRegionDataset, SmartRegionShare};
use crate::database::logins::retirement_due;
use crate::metrics::ErrorLabel;
use crate::resources::ingest::{
    KEYS_SECRET, SECRETS_CHECKSUM_ANNOTATION, ingest_keys_secret, pod_labels, secrets_checksum,
};
use crate::resources::read::{READ_KEYS_SECRET, read_keys_secret};
use crate::resources::secrets::{READER_SECRET, WRITER_SECRET, retiring_of};

/// Length of a generated API key: 40 alphanumeric characters, about 238 bits.
pub const API_KEY_LEN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read Secret {0}")]
    ReadSecret(String, #[source] kube::Error),
    #[error("failed to list the ingest pods")]
    ListPods(#[source] kube::Error),
    #[error("failed to list the SmartRegionShares")]
    ListShares(#[source] kube::Error),
    #[error("failed to list the SmartRegionDatasets")]
    ListDatasets(#[source] kube::Error),
    #[error("failed to list the tenants a share names")]
    ListConsumers(#[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> ErrorLabel {
        match self {
            Error::ReadSecret(..) => ErrorLabel::ReadSecret,
            Error::ListPods(_)
            | Error::ListShares(_)
            | Error::ListDatasets(_)
            | Error::ListConsumers(_) => ErrorLabel::Read,
        }
    }
}

/// The MQTT broker credentials the tenant's admins keep in a Secret of their own.
#[derive(Clone, Debug, PartialEq)]
pub enum MqttCredentials {
    NotUsed,
    /// `spec.ingest.mqtt.credentialsSecret` names a Secret that does not exist.
    Missing(String),
    Present(Box<Secret>),
}

/// The tenant's Secrets as read, and the ingest rollout where a retirement waits for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub writer: Option<Secret>,
    pub reader: Option<Secret>,
    /// `ingest-keys` as it is, or a new one with a first key, to be created once.
    pub keys: Secret,
    /// `read-keys` as it is, or a new one with a new key (created once).
    pub read_keys: Secret,
    pub mqtt: MqttCredentials,
    /// A rotated writer login waits to retire, and no ingest pod is left that was
    /// started from older Secrets than these: it may go now.
    pub retirement_due: bool,
    /// The shares in the tenant's namespace: what it provides.
    pub shares: Vec<SmartRegionShare>,
    /// The shares in other namespaces that list the tenant as a consumer.
    pub shared_with_me: Vec<SmartRegionShare>,
    /// The consumers its shares name that are tenants now, not being deleted: only their
    /// readers are granted anything (a deleted consumer's retained roles are not).
    pub consumers_present: Vec<String>,
    /// The open datasets in the tenant's namespace.
    pub datasets: Vec<SmartRegionDataset>,
}

/// A new API key from the thread-local CSPRNG, like the database passwords.
pub fn new_api_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), API_KEY_LEN)
}

pub async fn read_inputs(client: &Client, tenant: &Validated) -> Result<Inputs, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant.namespace);
    let read = |name: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(&name)
                .await
                .map_err(|source| Error::ReadSecret(name, source))
        }
    };
    let writer = read(WRITER_SECRET.into()).await?;
    let reader = read(READER_SECRET.into()).await?;
    let keys = match read(KEYS_SECRET.into()).await? {
        Some(keys) => keys,
        None => ingest_keys_secret(tenant, &new_api_key()),
    };
    let read_keys = match read(READ_KEYS_SECRET.into()).await? {
        Some(keys) => keys,
        None => read_keys_secret(tenant, &new_api_key()),
    };
    let mqtt = match tenant
        .ingest
        .mqtt
        .as_ref()
        .and_then(|mqtt| mqtt.credentials_secret.clone())
    {
        None => MqttCredentials::NotUsed,
        Some(name) => match read(name.clone()).await? {
            Some(secret) => MqttCredentials::Present(Box::new(secret)),
            None => MqttCredentials::Missing(name),
        },
    };
    let all: Api<SmartRegionShare> = Api::all(client.clone());
    let (shares, shared_with_me): (Vec<SmartRegionShare>, Vec<SmartRegionShare>) = all
        .list(&ListParams::default())
        .await
        .map_err(Error::ListShares)?
        .items
        .into_iter()
        .filter(|share| {
            share.namespace().as_deref() == Some(&tenant.namespace)
                || share
                    .spec
                    .consumers
                    .iter()
                    .any(|c| c == tenant.name.as_str())
        })
        .partition(|share| share.namespace().as_deref() == Some(&tenant.namespace));
    let consumers_present = if shares.is_empty() {
        Vec::new()
    } else {
        Api::<crate::crd::SmartRegionTenant>::all(client.clone())
            .list_metadata(&ListParams::default())
            .await
            .map_err(Error::ListConsumers)?
            .items
            .into_iter()
            .filter(|tenant| tenant.metadata.deletion_timestamp.is_none())
            .filter_map(|tenant| tenant.metadata.name)
            .filter(|name| {
                shares
                    .iter()
                    .any(|share: &SmartRegionShare| share.spec.consumers.contains(name))
            })
            .collect()
    };
    let datasets = Api::<SmartRegionDataset>::namespaced(client.clone(), &tenant.namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::ListDatasets)?
        .items;
    let mut inputs = Inputs {
        writer,
        reader,
        keys,
        read_keys,
        mqtt,
        retirement_due: false,
        shares,
        shared_with_me,
        consumers_present,
        datasets,
    };
    let waiting = inputs
        .writer
        .as_ref()
        .is_some_and(|writer| !retiring_of(writer).is_empty());
    if waiting {
        inputs.retirement_due = pods_run_current_secrets(client, tenant, &inputs).await?;
    }
    Ok(inputs)
}

impl Inputs {
    /// The checksum of the Secrets the ingest pods read, as they are now.
    pub fn checksum_with(&self, writer: &Secret) -> String {
        let mut read = vec![writer, &self.keys];
        if let MqttCredentials::Present(credentials) = &self.mqtt {
            read.push(credentials);
        }
        secrets_checksum(&read)
    }

    /// The checksum of what the read pod reads: the reader's Secret and the read keys.
    pub fn read_checksum_with(&self, reader: &Secret) -> String {
        secrets_checksum(&[reader, &self.read_keys])
    }
}

/// Whether every ingest pod (terminating ones too) runs from the current Secrets. Read
/// from the API server, not a cache: a pod missed here would keep the old login in use
/// after its retirement.
async fn pods_run_current_secrets(
    client: &Client,
    tenant: &Validated,
    inputs: &Inputs,
) -> Result<bool, Error> {
    let Some(writer) = &inputs.writer else {
        return Ok(false);
    };
    let current = inputs.checksum_with(writer);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &tenant.namespace);
    let selector = pod_labels(tenant)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::ListPods)?;
    let checksums: Vec<Option<&str>> = listed
        .items
        .iter()
        .map(|pod| {
            pod.annotations()
                .get(SECRETS_CHECKSUM_ANNOTATION)
                .map(String::as_str)
        })
        .collect();
    Ok(retirement_due(&current, &checksums))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_long_alphanumeric_and_distinct() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
