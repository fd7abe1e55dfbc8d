//! Step 5 (client): the tenant's ingest Deployment and its `IngestReady` condition. Runs
//! after the database step, which writes the `db-writer` Secret the pods read.
//!
//! Makes sure the Secret `ingest-keys` exists (created once, never overwritten: the
//! tenant's admins add keys to it), applies the Deployment with a checksum of both
//! Secrets in its pod template, reads the rollout off the Deployment's status, and says
//! whether every ingest pod (terminating ones too) runs from that template, which is
//! when a rotated writer login may retire. [`secrets_checksum`] and [`readiness`] are pure. Never logs, reports or returns a
//! value of a Secret.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use tracing::info;

use super::apply;
use super::status::{INGEST_READY, Observed, Reason};
use super::validate::Validated;
use crate::config::Config;
use crate::database::logins::retirement_due;
use crate::metrics::ErrorLabel;
use crate::resources::ingest::{
    KEYS_SECRET, SECRETS_CHECKSUM_ANNOTATION, ingest_deployment, ingest_endpoint,
    ingest_keys_secret, ingest_replicas, pod_labels,
};
use crate::resources::secrets::WRITER_SECRET;

/// Length of a generated API key: 40 alphanumeric characters, about 238 bits.
pub const API_KEY_LEN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read Secret {0}")]
    ReadSecret(String, #[source] kube::Error),
    #[error("failed to create Secret {KEYS_SECRET}")]
    CreateKeys(#[source] kube::Error),
    #[error("Secret {KEYS_SECRET} was created and deleted by someone else meanwhile")]
    KeysVanished,
    #[error("failed to list the ingest pods")]
    ListPods(#[source] kube::Error),
    #[error(transparent)]
    Apply(#[from] apply::Error),
}

impl Error {
    pub fn metric_label(&self) -> ErrorLabel {
        match self {
            Error::ReadSecret(..) => ErrorLabel::ReadSecret,
            Error::ListPods(_) => ErrorLabel::Read,
            Error::CreateKeys(_) | Error::KeysVanished => ErrorLabel::CreateIngestKeys,
            Error::Apply(error) => error.metric_label(),
        }
    }

    /// The `IngestReady` reason.
    pub fn reason(&self) -> Reason {
        match self {
            Error::ReadSecret(..) | Error::CreateKeys(_) | Error::KeysVanished => {
                Reason::SecretsFailed
            }
            Error::Apply(_) | Error::ListPods(_) => Reason::ApplyFailed,
        }
    }
}

/// What the ingest step found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub readiness: Observed,
    /// Where senders inside the cluster reach ingest.
    pub endpoint: String,
    /// Kubernetes writes made (0 in the steady state).
    pub writes: usize,
    /// The resourceVersion of the `db-writer` Secret, when no ingest pod is left that
    /// was started from an older pod template (none at all counts).
    pub rolled_out_with: Option<String>,
}

/// A new API key from the thread-local CSPRNG, like the database passwords.
pub fn new_api_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), API_KEY_LEN)
}

/// Makes the tenant's ingest Deployment match its spec and the current Secrets.
/// `retiring`: a rotated writer login waits for the pods, so they are looked at.
pub async fn ensure_ingest(
    client: &Client,
    tenant: &Validated,
    config: &Config,
    retiring: bool,
) -> Result<Outcome, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant.namespace);
    let endpoint = ingest_endpoint(tenant);
    let Some(writer) = read_secret(&secrets, WRITER_SECRET).await? else {
        // Pods started now would fail on the missing Secret, then roll again once it
        // exists: wait for the database step instead.
        return Ok(Outcome {
            readiness: Observed::not_ok(
                INGEST_READY,
                Reason::WaitingForDatabase,
                format!(
                    "the ingest pods wait for the Secret {WRITER_SECRET}, which the database step writes"
                ),
            ),
            endpoint,
            writes: 0,
            rolled_out_with: None,
        });
    };
    let writer_version = writer.metadata.resource_version.clone();
    let (keys, created) = ensure_keys_exist(&secrets, tenant).await?;
    let mut read = vec![writer, keys];
    if let Some(name) = tenant
        .ingest
        .mqtt
        .as_ref()
        .and_then(|mqtt| mqtt.credentials_secret.as_deref())
    {
        // The tenant's admins write this one; pods started without it would not start.
        let Some(credentials) = read_secret(&secrets, name).await? else {
            return Ok(Outcome {
                readiness: Observed::not_ok(
                    INGEST_READY,
                    Reason::WaitingForMqttCredentials,
                    format!(
                        "create the Secret {name} with keys username and password in namespace {}, \
                         as spec.ingest.mqtt.credentialsSecret names it",
                        tenant.namespace
                    ),
                ),
                endpoint,
                writes: created,
                rolled_out_with: None,
            });
        };
        read.push(credentials);
    }
    let checksum = secrets_checksum(&read.iter().collect::<Vec<_>>());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &tenant.namespace);
    let desired = ingest_deployment(tenant, config, &checksum);
    let (applied, current) = apply::ensure_current(&deployments, &desired).await?;
    if applied > 0 {
        info!(
            replicas = ingest_replicas(tenant),
            "ingest Deployment applied"
        );
    }
    if !retiring {
        return Ok(Outcome {
            readiness: readiness(&current, tenant),
            endpoint,
            writes: applied + created,
            rolled_out_with: None,
        });
    }
    // Read from the API server, not a cache: a pod missed here would keep the old login
    // in use after its retirement.
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
    Ok(Outcome {
        readiness: readiness(&current, tenant),
        endpoint,
        writes: applied + created,
        rolled_out_with: writer_version.filter(|_| retirement_due(&checksum, &checksums)),
    })
}

async fn read_secret(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    api.get_opt(name)
        .await
        .map_err(|source| Error::ReadSecret(name.to_string(), source))
}

/// `ingest-keys` as it is, or created with a first key when missing. Never updated: after
/// creation the keys belong to the tenant's admins. Returns the Secret and the writes made.
async fn ensure_keys_exist(
    api: &Api<Secret>,
    tenant: &Validated,
) -> Result<(Secret, usize), Error> {
    if let Some(keys) = read_secret(api, KEYS_SECRET).await? {
        return Ok((keys, 0));
    }
    let secret = ingest_keys_secret(tenant, &new_api_key());
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            info!("Secret {KEYS_SECRET} created with a first API key");
            Ok((created, 1))
        }
        // Created meanwhile (by a previous leader, say): what is there is kept.
        Err(kube::Error::Api(response)) if response.code == 409 => {
            let present = read_secret(api, KEYS_SECRET).await?;
            Ok((present.ok_or(Error::KeysVanished)?, 0))
        }
        Err(source) => Err(Error::CreateKeys(source)),
    }
}

/// SHA-256 over the data of `secrets` (name, then keys in sorted order, every item length
/// prefixed so no two different contents hash alike), as lowercase hex. One-way: the
/// values cannot be recovered from it, and a change of any value changes it.
pub fn secrets_checksum(secrets: &[&Secret]) -> String {
    let mut hash = Sha256::new();
    let mut item = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    for secret in secrets {
        item(
            secret
                .metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        );
        // A BTreeMap: sorted by key.
        for (key, value) in secret.data.iter().flatten() {
            item(key.as_bytes());
            item(&value.0);
        }
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `IngestReady` from the Deployment as the API server holds it.
///
/// True once the controller has seen the latest spec and every wanted pod is updated and
/// available. While a rollout moves (including the first one) it is False and pending
/// (`Progressing`); it is a failure (`Unavailable`) when the rollout exceeded its
/// progress deadline, or when pods went missing after a finished rollout.
pub fn readiness(deployment: &Deployment, tenant: &Validated) -> Observed {
    let wanted = ingest_replicas(tenant);
    if wanted == 0 {
        let why = if tenant.suspended {
            "spec.suspended is true"
        } else {
            "spec.ingest.enabled is false"
        };
        return Observed::ok(
            INGEST_READY,
            Reason::ScaledToZero,
            format!("{why}: no ingest pods run"),
        );
    }
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let counts = format!("{available} of {wanted} ingest pods available, {updated} updated");
    let seen = matches!(
        (status.observed_generation, deployment.metadata.generation),
        (Some(observed), Some(generation)) if observed >= generation
    );
    if !seen {
        return Observed::not_ok(
            INGEST_READY,
            Reason::Progressing,
            format!("the Deployment controller has not yet picked up the latest change; {counts}"),
        );
    }
    let progress = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Progressing")
        .and_then(|condition| condition.reason.as_deref());
    if progress == Some("ProgressDeadlineExceeded") {
        return Observed::not_ok(
            INGEST_READY,
            Reason::Unavailable,
            format!(
                "the rollout of the ingest pods exceeded its progress deadline: {counts}; see \
                 kubectl -n {} describe deployment ingest",
                tenant.namespace
            ),
        );
    }
    if available >= wanted && updated >= wanted {
        return Observed::ok(
            INGEST_READY,
            Reason::Available,
            format!("{available} of {wanted} ingest pods available"),
        );
    }
    if progress == Some("NewReplicaSetAvailable") {
        // The rollout had finished: pods were lost since (evicted, crashed, node gone).
        return Observed::not_ok(
            INGEST_READY,
            Reason::Unavailable,
            format!(
                "{counts}; see kubectl -n {} get pods -l app.kubernetes.io/name=ingest",
                tenant.namespace
            ),
        );
    }
    Observed::not_ok(
        INGEST_READY,
        Reason::Progressing,
        format!("rolling out: {counts}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::reconcile::validate::validate;
    use crate::test_support::tenant;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use std::collections::BTreeMap;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_checksum_moves_with_any_value_and_shows_none() {
        let writer = secret(
            "db-writer",
            &[("password", "s3cret-pw"), ("user", "t_prato_writer")],
        );
        let keys = secret("ingest-keys", &[("keys", "key-one")]);
        let base = secrets_checksum(&[&writer, &keys]);
        assert_eq!(base.len(), 64);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(base, secrets_checksum(&[&writer.clone(), &keys.clone()]));
        let rotated = secret(
            "db-writer",
            &[("password", "n3w-pw"), ("user", "t_prato_writer")],
        );
        assert_ne!(base, secrets_checksum(&[&rotated, &keys]));
        let more_keys = secret("ingest-keys", &[("keys", "key-one\nkey-two")]);
        assert_ne!(base, secrets_checksum(&[&writer, &more_keys]));
        // Moving bytes between a key and its value is a different content.
        let shifted = secret("ingest-keys", &[("keysk", "ey-one")]);
        assert_ne!(base, secrets_checksum(&[&writer, &shifted]));
        assert!(!base.contains("s3cret") && !base.contains("key-one"));
    }

    #[test]
    fn api_keys_are_long_alphanumeric_and_distinct() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: None,
            status: Some(status),
        }
    }

    fn status(observed: i64, available: i32, updated: i32, progress: &str) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            available_replicas: Some(available),
            updated_replicas: Some(updated),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: if progress == "ProgressDeadlineExceeded" {
                    "False"
                } else {
                    "True"
                }
                .into(),
                reason: Some(progress.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn readiness_follows_the_rollout() {
        let small = validate(&tenant("prato").build(), &Config::default()).unwrap();
        let medium = validate(
            &tenant("prato").tier(crate::crd::Tier::Medium).build(),
            &Config::default(),
        )
        .unwrap();

        let fresh = readiness(&deployment(1, DeploymentStatus::default()), &small);
        assert!(!fresh.ok && fresh.pending(), "{fresh:?}");
        assert_eq!(fresh.reason, Reason::Progressing);

        let starting = readiness(&deployment(1, status(1, 0, 1, "ReplicaSetUpdated")), &small);
        assert_eq!((starting.ok, starting.pending()), (false, true));

        let ready = readiness(
            &deployment(1, status(1, 1, 1, "NewReplicaSetAvailable")),
            &small,
        );
        assert!(ready.ok);
        assert_eq!(ready.reason, Reason::Available);

        let unseen = readiness(
            &deployment(2, status(1, 1, 1, "NewReplicaSetAvailable")),
            &small,
        );
        assert_eq!(
            (unseen.ok, unseen.pending()),
            (false, true),
            "a new spec not yet seen"
        );

        let rolling = readiness(
            &deployment(2, status(2, 2, 1, "ReplicaSetUpdated")),
            &medium,
        );
        assert_eq!((rolling.ok, rolling.pending()), (false, true));
        assert!(
            rolling
                .message
                .contains("2 of 2 ingest pods available, 1 updated"),
            "{}",
            rolling.message
        );

        let lost = readiness(
            &deployment(1, status(1, 1, 2, "NewReplicaSetAvailable")),
            &medium,
        );
        assert_eq!(
            (lost.ok, lost.pending(), lost.reason),
            (false, false, Reason::Unavailable)
        );

        let stuck = readiness(
            &deployment(3, status(3, 0, 1, "ProgressDeadlineExceeded")),
            &small,
        );
        assert_eq!(
            (stuck.ok, stuck.pending(), stuck.reason),
            (false, false, Reason::Unavailable)
        );
        assert!(stuck.message.contains("describe deployment ingest"));
    }

    #[test]
    fn no_pods_wanted_is_ready_and_says_why() {
        let suspended = validate(&tenant("prato").suspended().build(), &Config::default()).unwrap();
        let disabled = validate(
            &tenant("prato").ingest(|i| i.enabled = false).build(),
            &Config::default(),
        )
        .unwrap();
        // Pods may still be stopping: zero wanted is what counts.
        let stopping = deployment(2, status(2, 1, 0, "NewReplicaSetAvailable"));
        let zero = readiness(&stopping, &suspended);
        assert!(zero.ok);
        assert_eq!(zero.reason, Reason::ScaledToZero);
        assert!(zero.message.contains("spec.suspended"));
        assert!(
            readiness(&stopping, &disabled)
                .message
                .contains("spec.ingest.enabled")
        );
    }
}
