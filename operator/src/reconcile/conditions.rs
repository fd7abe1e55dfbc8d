//! What a reconcile observes (pure): the condition types, every reason the operator
//! writes, the observed conditions, and the phase and `Ready` they add up to.
//!
//! Reasons and condition types are enums, so docs, the Argo CD health check and the
//! tests iterate them instead of searching the source; their strings are the variant
//! names.

use strum::{EnumIter, IntoStaticStr};

use crate::crd::Phase;

/// A condition of `status.conditions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr, EnumIter)]
pub enum ConditionType {
    /// Every part ready; otherwise the reason of the first part that is not.
    Ready,
    NamespaceReady,
    DatabaseReady,
    WithinQuota,
    IngestReady,
    /// The read service's pod available (or none wanted: suspended, disabled).
    ReadReady,
    /// Only while ingest is exposed: the HTTPRoute accepted by its Gateway, or the
    /// Ingress in place.
    ExposureReady,
    /// Retention and compression do their work: judged on the chunks, with what
    /// TimescaleDB records of its jobs (partitioned tenants: the operator's own work).
    StorageMaintained,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Every reason of every condition the operator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr, EnumIter)]
pub enum Reason {
    // Ready
    Ready,
    InvalidSpec,
    Suspended,
    DeletionNotConfirmed,
    DeletingNamespace,
    // NamespaceReady
    Applied,
    ApplyFailed,
    NamespaceTerminating,
    NotOwnedByTenant,
    // DatabaseReady and IngestReady
    WaitingForNamespace,
    // DatabaseReady
    Provisioned,
    DatabaseUnavailable,
    ProvisioningFailed,
    StorageUnavailable,
    // WithinQuota
    WithinQuota,
    DatabaseStorageExceeded,
    // StorageMaintained
    MaintenanceCurrent,
    JobsMisreportFailure,
    MaintainedByOperator,
    PartitionsMaintained,
    JobsFailing,
    MaintenanceOverdue,
    // IngestReady and ReadReady
    WaitingForDatabase,
    WaitingForMqttCredentials,
    SecretsFailed,
    Progressing,
    Available,
    Unavailable,
    ScaledToZero,
    // Ready of a SmartRegionShare, and the Events of its grants
    Shared,
    WaitingForConsumers,
    SharingForbidden,
    ShareFailed,
    Granted,
    Revoked,
    // Ready of a SmartRegionDataset
    Published,
    PublisherUnidentified,
    PublishFailed,
    // ExposureReady
    RouteAccepted,
    WaitingForGateway,
    RouteNotAccepted,
    IngressApplied,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// A part that is not ready for this reason is on its way by itself (or waits for
    /// something outside the operator that is expected): the tenant is Provisioning, not
    /// Degraded, and the Event is Normal. The Argo CD health check keeps the same list
    /// (`examples/argocd/.../health.lua`, tested against this).
    pub fn pending(self) -> bool {
        matches!(
            self,
            Reason::Progressing
                | Reason::WaitingForNamespace
                | Reason::WaitingForDatabase
                | Reason::WaitingForMqttCredentials
                | Reason::WaitingForGateway
        )
    }

    /// Not being ready for this reason deserves a Warning Event.
    pub fn warning(self) -> bool {
        // Suspension is what the user asked for.
        !self.pending() && self != Reason::Suspended
    }
}

/// A condition as the reconcile observed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub type_: ConditionType,
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

impl Observed {
    pub fn ok(type_: ConditionType, reason: Reason, message: impl Into<String>) -> Self {
        Observed {
            type_,
            ok: true,
            reason,
            message: message.into(),
        }
    }

    /// Not ok; whether that is a failure or a part on its way is the reason's
    /// ([`Reason::pending`]).
    pub fn not_ok(type_: ConditionType, reason: Reason, message: impl Into<String>) -> Self {
        Observed {
            type_,
            ok: false,
            reason,
            message: message.into(),
        }
    }

    /// Not ok yet, but on its way without anyone acting (a rollout in progress): keeps a
    /// tenant Provisioning rather than Degraded, and its Events are Normal, not Warning.
    pub fn pending(&self) -> bool {
        !self.ok && self.reason.pending()
    }

    /// False and worth a Warning.
    pub fn warning(&self) -> bool {
        !self.ok && self.reason.warning()
    }
}

/// What one reconcile found: the phase and the conditions, `Ready` first.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub phase: Phase,
    pub namespace: Option<String>,
    /// Where the tenant's data is, once the database step succeeded.
    pub database: Option<crate::crd::DatabaseStatus>,
    /// Measured usage, when the database step measured it.
    pub usage: Option<crate::crd::Usage>,
    /// The ingest Service's address, once the ingest step ran.
    pub ingest_endpoint: Option<String>,
    /// The read Service's address, once the ingest step ran; `Some(None)` when no read
    /// pod is wanted.
    pub read_endpoint: Option<Option<String>>,
    /// What the tenant's reader may read of others', once the database step ran.
    pub shared_with_me: Option<Vec<crate::crd::SharedWith>>,
    /// How ingest is exposed, once the namespace step ran.
    pub exposure: ExposureSeen,
    pub conditions: Vec<Observed>,
}

/// What the namespace step found of the exposure.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ExposureSeen {
    /// The step did not get that far: status keeps what it said.
    #[default]
    NotObserved,
    /// Not exposed: status drops `exposure` and `ExposureReady`.
    Off,
    On(crate::crd::ExposureStatus),
}

/// The tenant's phase and `Ready` condition from its parts' conditions.
///
/// A failed part makes a tenant that was Ready Degraded (Provisioning before it ever was).
/// A part on its way by itself (an ingest rollout) makes it Provisioning, whatever it was:
/// not Ready, since the change is not complete, and not Degraded, since nothing failed.
pub fn phase_and_ready(suspended: bool, was_ready: bool, parts: &[&Observed]) -> (Phase, Observed) {
    let failing = parts.iter().find(|part| !part.ok && !part.pending());
    let pending = parts.iter().find(|part| part.pending());
    if suspended {
        (
            Phase::Suspended,
            Observed::not_ok(
                ConditionType::Ready,
                Reason::Suspended,
                "spec.suspended is true: ingest and writes are stopped, everything is kept",
            ),
        )
    } else if let Some(failing) = failing {
        let phase = if was_ready {
            Phase::Degraded
        } else {
            Phase::Provisioning
        };
        (
            phase,
            Observed::not_ok(
                ConditionType::Ready,
                failing.reason,
                failing.message.clone(),
            ),
        )
    } else if let Some(pending) = pending {
        (
            Phase::Provisioning,
            Observed::not_ok(
                ConditionType::Ready,
                pending.reason,
                pending.message.clone(),
            ),
        )
    } else {
        (
            Phase::Ready,
            Observed::ok(
                ConditionType::Ready,
                Reason::Ready,
                "every part of the tenant is ready",
            ),
        )
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut: condition messages and
/// Events stay readable, whatever an error message holds.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    fn namespace() -> Observed {
        Observed::ok(ConditionType::NamespaceReady, Reason::Applied, "in place")
    }

    #[test]
    fn a_rollout_keeps_a_tenant_provisioning_and_never_degrades_it() {
        let rolling = Observed::not_ok(
            ConditionType::IngestReady,
            Reason::Progressing,
            "rolling out: 1 of 2",
        );
        for was_ready in [false, true] {
            let (phase, ready) = phase_and_ready(false, was_ready, &[&namespace(), &rolling]);
            assert_eq!(phase, Phase::Provisioning, "was ready: {was_ready}");
            assert!(!ready.ok && ready.pending());
            assert_eq!(ready.reason, Reason::Progressing);
        }
    }

    #[test]
    fn a_failure_degrades_a_ready_tenant_and_wins_over_a_rollout() {
        let rolling = Observed::not_ok(
            ConditionType::IngestReady,
            Reason::Progressing,
            "rolling out",
        );
        let down = Observed::not_ok(
            ConditionType::DatabaseReady,
            Reason::DatabaseUnavailable,
            "unreachable",
        );
        let (phase, ready) = phase_and_ready(false, true, &[&namespace(), &rolling, &down]);
        assert_eq!(phase, Phase::Degraded);
        assert_eq!(
            (ready.reason, ready.pending()),
            (Reason::DatabaseUnavailable, false)
        );
        let (phase, _) = phase_and_ready(false, false, &[&down]);
        assert_eq!(phase, Phase::Provisioning, "never ready, so not degraded");
        let lost = Observed::not_ok(
            ConditionType::IngestReady,
            Reason::Unavailable,
            "0 of 1 available",
        );
        assert_eq!(phase_and_ready(false, true, &[&lost]).0, Phase::Degraded);
    }

    #[test]
    fn every_part_ready_is_ready_and_suspension_wins() {
        let available = Observed::ok(ConditionType::IngestReady, Reason::Available, "1 of 1");
        let (phase, ready) = phase_and_ready(false, false, &[&namespace(), &available]);
        assert_eq!(phase, Phase::Ready);
        assert!(ready.ok);
        let zero = Observed::ok(
            ConditionType::IngestReady,
            Reason::ScaledToZero,
            "suspended",
        );
        let (phase, ready) = phase_and_ready(true, true, &[&zero]);
        assert_eq!(phase, Phase::Suspended);
        assert!(!ready.warning(), "suspension is asked for, not a problem");
    }

    #[test]
    fn reasons_are_their_names_and_pending_ones_never_warn() {
        for reason in Reason::iter() {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
            assert!(!(reason.pending() && reason.warning()), "{reason:?}");
        }
        assert_eq!(ConditionType::DatabaseReady.as_str(), "DatabaseReady");
    }
}
