//! Ingest (pure): the `IngestReady` condition, from the ingest Deployment as the API
//! server holds it after `apply`, or from why it is not desired yet.
//!
//! The Deployment itself is a child like any other (`resources::ingest`, built with a
//! checksum of the Secrets its pods read, so a changed Secret rolls them).

use k8s_openapi::api::apps::v1::Deployment;

use super::conditions::ConditionType;
use super::inputs::{Inputs, MqttCredentials};
use super::status::{INGEST_READY, Observed, READ_READY, Reason};
use super::validate::Validated;
use crate::resources::ingest::ingest_replicas;
use crate::resources::read::read_replicas;
use crate::resources::secrets::WRITER_SECRET;

/// The pods of a Deployment whose rollout a condition follows: ingest's or read's.
pub struct Pods {
    pub condition: ConditionType,
    /// The Deployment's name, and what its pods are called in messages.
    pub name: &'static str,
    pub wanted: i32,
    /// Why none is wanted, when none is.
    pub none_because: &'static str,
}

impl Pods {
    pub fn ingest(tenant: &Validated) -> Pods {
        Pods {
            condition: INGEST_READY,
            name: crate::resources::ingest::INGEST,
            wanted: ingest_replicas(tenant),
            none_because: if tenant.suspended {
                "spec.suspended is true"
            } else {
                "spec.ingest.enabled is false"
            },
        }
    }

    pub fn read(tenant: &Validated) -> Pods {
        Pods {
            condition: READ_READY,
            name: crate::resources::read::READ,
            wanted: read_replicas(tenant),
            none_because: if tenant.suspended {
                "spec.suspended is true"
            } else {
                "spec.read.enabled is false"
            },
        }
    }
}

/// Why the Deployment is not desired in this reconcile, if it is not: pods started now
/// would fail on a missing Secret, then roll again once it exists.
pub fn waiting(tenant: &Validated, inputs: &Inputs, writer_known: bool) -> Option<Observed> {
    if !writer_known {
        return Some(Observed::not_ok(
            INGEST_READY,
            Reason::WaitingForDatabase,
            format!(
                "the ingest pods wait for the Secret {WRITER_SECRET}, which the database step writes"
            ),
        ));
    }
    match &inputs.mqtt {
        MqttCredentials::Missing(name) => Some(Observed::not_ok(
            INGEST_READY,
            Reason::WaitingForMqttCredentials,
            format!(
                "create the Secret {name} with keys username and password in namespace {}, \
                 as spec.ingest.mqtt.credentialsSecret names it",
                tenant.namespace
            ),
        )),
        MqttCredentials::NotUsed | MqttCredentials::Present(_) => None,
    }
}

/// `IngestReady` from the Deployment as the API server holds it.
///
/// True once the controller has seen the latest spec and every wanted pod is updated and
/// available. While a rollout moves (including the first one) it is False and pending
/// (`Progressing`); it is a failure (`Unavailable`) when the rollout exceeded its
/// progress deadline, or when pods went missing after a finished rollout.
pub fn readiness(deployment: &Deployment, tenant: &Validated, pods: &Pods) -> Observed {
    let (wanted, name) = (pods.wanted, pods.name);
    if wanted == 0 {
        return Observed::ok(
            pods.condition,
            Reason::ScaledToZero,
            format!("{}: no {name} pods run", pods.none_because),
        );
    }
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let counts = format!("{available} of {wanted} {name} pods available, {updated} updated");
    let seen = matches!(
        (status.observed_generation, deployment.metadata.generation),
        (Some(observed), Some(generation)) if observed >= generation
    );
    if !seen {
        return Observed::not_ok(
            pods.condition,
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
            pods.condition,
            Reason::Unavailable,
            format!(
                "the rollout of the {name} pods exceeded its progress deadline: {counts}; see \
                 kubectl -n {} describe deployment {name}",
                tenant.namespace
            ),
        );
    }
    if available >= wanted && updated >= wanted {
        return Observed::ok(
            pods.condition,
            Reason::Available,
            format!("{available} of {wanted} {name} pods available"),
        );
    }
    if progress == Some("NewReplicaSetAvailable") {
        // The rollout had finished: pods were lost since (evicted, crashed, node gone).
        return Observed::not_ok(
            pods.condition,
            Reason::Unavailable,
            format!(
                "{counts}; see kubectl -n {} get pods -l app.kubernetes.io/name={name}",
                tenant.namespace
            ),
        );
    }
    Observed::not_ok(
        pods.condition,
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
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

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

        let fresh = readiness(
            &deployment(1, DeploymentStatus::default()),
            &small,
            &Pods::ingest(&small),
        );
        assert!(!fresh.ok && fresh.pending(), "{fresh:?}");
        assert_eq!(fresh.reason, Reason::Progressing);

        let starting = readiness(
            &deployment(1, status(1, 0, 1, "ReplicaSetUpdated")),
            &small,
            &Pods::ingest(&small),
        );
        assert_eq!((starting.ok, starting.pending()), (false, true));

        let ready = readiness(
            &deployment(1, status(1, 1, 1, "NewReplicaSetAvailable")),
            &small,
            &Pods::ingest(&small),
        );
        assert!(ready.ok);
        assert_eq!(ready.reason, Reason::Available);

        let unseen = readiness(
            &deployment(2, status(1, 1, 1, "NewReplicaSetAvailable")),
            &small,
            &Pods::ingest(&small),
        );
        assert_eq!(
            (unseen.ok, unseen.pending()),
            (false, true),
            "a new spec not yet seen"
        );

        let rolling = readiness(
            &deployment(2, status(2, 2, 1, "ReplicaSetUpdated")),
            &medium,
            &Pods::ingest(&medium),
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
            &Pods::ingest(&medium),
        );
        assert_eq!(
            (lost.ok, lost.pending(), lost.reason),
            (false, false, Reason::Unavailable)
        );

        let stuck = readiness(
            &deployment(3, status(3, 0, 1, "ProgressDeadlineExceeded")),
            &small,
            &Pods::ingest(&small),
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
        let zero = readiness(&stopping, &suspended, &Pods::ingest(&suspended));
        assert!(zero.ok);
        assert_eq!(zero.reason, Reason::ScaledToZero);
        assert!(zero.message.contains("spec.suspended"));
        assert!(
            readiness(&stopping, &disabled, &Pods::ingest(&disabled))
                .message
                .contains("spec.ingest.enabled")
        );
    }
}
