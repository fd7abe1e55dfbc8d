//! Status (client): the tenant's status and Events.
//!
//! [`desired_status`] is pure; [`update`] writes the status only when it differs from the
//! stored one (an idle reconcile makes no write), and publishes an Event for each phase
//! transition. Never puts a secret in status or an Event.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::child_status;
use crate::crd::{SmartRegionTenant, SmartRegionTenantStatus};

pub use super::conditions::{ConditionType, ExposureSeen, Observation, Observed, Reason, truncate};

pub const READY: ConditionType = ConditionType::Ready;
pub const NAMESPACE_READY: ConditionType = ConditionType::NamespaceReady;
pub const DATABASE_READY: ConditionType = ConditionType::DatabaseReady;
pub const INGEST_READY: ConditionType = ConditionType::IngestReady;
pub const READ_READY: ConditionType = ConditionType::ReadReady;
pub const WITHIN_QUOTA: ConditionType = ConditionType::WithinQuota;

#[derive(Debug, thiserror::Error)]
#[error("failed to write the status of tenant {name}")]
pub struct Error {
    name: String,
    #[source]
    source: kube::Error,
}

/// The status to store: `observation` on top of `previous`, keeping each condition's
/// `lastTransitionTime` while its status is unchanged.
pub fn desired_status(
    previous: Option<&SmartRegionTenantStatus>,
    generation: Option<i64>,
    observation: &Observation,
    now: &Time,
) -> SmartRegionTenantStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let previous_conditions = std::mem::take(&mut status.conditions);
    status.conditions = observation
        .conditions
        .iter()
        .map(|observed| {
            let state = if observed.ok { "True" } else { "False" };
            let since = previous_conditions
                .iter()
                .find(|c| c.type_ == observed.type_.as_str() && c.status == state)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: observed.type_.as_str().to_string(),
                status: state.to_string(),
                reason: observed.reason.as_str().to_string(),
                message: observed.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    // Conditions of later parts (database, ingest) are kept until their step reports.
    for condition in previous_conditions {
        if !status.conditions.iter().any(|c| c.type_ == condition.type_) {
            status.conditions.push(condition);
        }
    }
    status.phase = Some(observation.phase);
    status.observed_generation = generation;
    if observation.namespace.is_some() {
        status.namespace = observation.namespace.clone();
    }
    if observation.database.is_some() {
        status.database = observation.database.clone();
    }
    if let Some(usage) = &observation.usage {
        // A rate is only measured now and then; until the next one, the last one stands.
        let rows_per_second = usage
            .rows_per_second
            .or_else(|| status.usage.as_ref().and_then(|u| u.rows_per_second));
        status.usage = Some(crate::crd::Usage {
            rows_per_second,
            ..usage.clone()
        });
    }
    if let Some(shared) = &observation.shared_with_me {
        status.shared_with_me = shared.clone();
    }
    if observation.ingest_endpoint.is_some() {
        status.ingest_endpoint = observation.ingest_endpoint.clone();
    }
    if let Some(endpoint) = &observation.read_endpoint {
        status.read_endpoint = endpoint.clone();
    }
    match &observation.exposure {
        ExposureSeen::NotObserved => {}
        ExposureSeen::Off => {
            status.exposure = None;
            status
                .conditions
                .retain(|c| c.type_ != ConditionType::ExposureReady.as_str());
        }
        ExposureSeen::On(exposure) => status.exposure = Some(exposure.clone()),
    }
    status
}

/// Writes the status if it changed (compared with the server's copy when the cache
/// differs, [`child_status::write`]) and announces each change with an Event. Returns
/// whether anything was written.
pub async fn update(
    client: &Client,
    recorder: &Recorder,
    tenant: &SmartRegionTenant,
    observation: &Observation,
) -> Result<bool, Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let name = tenant.name_any();
    let api: Api<SmartRegionTenant> = Api::all(client.clone());
    // The generation stays the one reconciled, whichever status it is put on.
    let desired = |previous: Option<&_>| {
        desired_status(previous, tenant.meta().generation, observation, &now)
    };
    let written = child_status::write(&api, tenant, desired)
        .await
        .map_err(|source| Error {
            name: name.clone(),
            source,
        })?;
    let Some((previous, _)) = written else {
        return Ok(false);
    };
    for event in events(previous.as_ref(), observation) {
        // An Event is a courtesy: failing to record it must not fail the reconcile.
        if let Err(error) = recorder.publish(&event, &tenant.object_ref(&())).await {
            tracing::warn!(tenant = %name, %error, "failed to record an Event");
        }
    }
    Ok(true)
}

/// The Events that announce what changed: the phase (with the Ready condition's reason)
/// and every part condition that turned True or False or changed its reason. A part
/// that is fine from the start is announced by the phase alone.
pub fn events(previous: Option<&SmartRegionTenantStatus>, observation: &Observation) -> Vec<Event> {
    let event = |observed: &Observed| Event {
        type_: if observed.warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: observed.reason.as_str().to_string(),
        note: Some(truncate(&observed.message, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    let mut events = Vec::new();
    if previous.and_then(|s| s.phase) != Some(observation.phase) {
        // Suspension is what the user asked for, not a problem: its reason warns not.
        events.push(event(&observation.conditions[0]));
    }
    let before = |type_: ConditionType| {
        previous
            .and_then(|status| status.conditions.iter().find(|c| c.type_ == type_.as_str()))
            .map(|condition| (condition.status == "True", condition.reason.as_str()))
    };
    for observed in observation.conditions.iter().skip(1) {
        match before(observed.type_) {
            Some((was_ok, reason))
                if was_ok != observed.ok || reason != observed.reason.as_str() =>
            {
                events.push(event(observed))
            }
            // A part that is on its way from the start is announced by the phase alone.
            None if observed.warning() => events.push(event(observed)),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;
    use crate::reconcile::child_status::merge_patch;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn observation(ok: bool) -> Observation {
        let observed = if ok {
            Observed::ok(READY, Reason::Ready, "all parts are ready")
        } else {
            Observed::not_ok(READY, Reason::ApplyFailed, "failed to apply ResourceQuota")
        };
        Observation {
            phase: if ok { Phase::Ready } else { Phase::Degraded },
            namespace: Some("srt-prato".into()),
            database: None,
            usage: None,
            ingest_endpoint: None,
            read_endpoint: None,
            shared_with_me: None,
            exposure: Default::default(),
            conditions: vec![observed],
        }
    }

    #[test]
    fn unchanged_observation_gives_identical_status() {
        let first = desired_status(None, Some(1), &observation(true), &time(100));
        let second = desired_status(Some(&first), Some(1), &observation(true), &time(200));
        assert_eq!(first, second, "no change, so nothing to write");
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let ready = desired_status(None, Some(1), &observation(true), &time(100));
        let failed = desired_status(Some(&ready), Some(2), &observation(false), &time(200));
        assert_eq!(failed.conditions[0].last_transition_time, time(200));
        assert_eq!(failed.conditions[0].observed_generation, Some(2));
        assert_eq!(failed.phase, Some(Phase::Degraded));
        assert_eq!(failed.observed_generation, Some(2));
    }

    #[test]
    fn a_rate_stands_until_the_next_one_is_measured() {
        let usage = |bytes, rate| crate::crd::Usage {
            database_bytes: Some(bytes),
            rows_per_second: rate,
        };
        let mut measured = observation(true);
        measured.usage = Some(usage(1000, Some(12.5)));
        let first = desired_status(None, Some(1), &measured, &time(100));
        let mut between = observation(true);
        between.usage = Some(usage(2000, None));
        let second = desired_status(Some(&first), Some(1), &between, &time(101));
        assert_eq!(second.usage, Some(usage(2000, Some(12.5))));
    }

    #[test]
    fn conditions_of_other_steps_are_kept() {
        let mut previous = desired_status(None, Some(1), &observation(true), &time(100));
        previous.conditions.push(Condition {
            type_: "DatabaseReady".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: String::new(),
            last_transition_time: time(50),
            observed_generation: Some(1),
        });
        let next = desired_status(Some(&previous), Some(1), &observation(true), &time(300));
        assert!(next.conditions.iter().any(|c| c.type_ == "DatabaseReady"));
    }

    #[test]
    fn turning_exposure_off_removes_its_url_and_condition() {
        let mut exposed = observation(true);
        exposed.exposure = ExposureSeen::On(crate::crd::ExposureStatus {
            url: "https://prato.ingest.example.it/".into(),
            kind: crate::crd::ExposureKind::HttpRoute,
        });
        exposed.conditions.push(Observed::ok(
            ConditionType::ExposureReady,
            Reason::RouteAccepted,
            "accepted",
        ));
        let on = desired_status(None, Some(1), &exposed, &time(100));
        assert!(on.exposure.is_some());
        let patch = merge_patch(None, &on);
        assert_eq!(patch["exposure"]["kind"], "HTTPRoute");
        // A step that did not get as far as the exposure leaves it as it was.
        let unknown = desired_status(Some(&on), Some(1), &observation(true), &time(200));
        assert_eq!(unknown.exposure, on.exposure);
        assert!(
            unknown
                .conditions
                .iter()
                .any(|c| c.type_ == "ExposureReady")
        );

        let mut off = observation(true);
        off.exposure = ExposureSeen::Off;
        let off = desired_status(Some(&on), Some(2), &off, &time(300));
        assert_eq!(off.exposure, None);
        assert!(!off.conditions.iter().any(|c| c.type_ == "ExposureReady"));
        // A merge patch only removes what it sets to null.
        let patch = merge_patch(Some(&on), &off);
        assert!(patch["exposure"].is_null());
        assert!(patch.as_object().unwrap().contains_key("exposure"));
    }

    #[test]
    fn a_rollout_is_announced_with_normal_events_only() {
        let mut ready = observation(true);
        ready
            .conditions
            .push(Observed::ok(INGEST_READY, Reason::Available, "1 of 1"));
        let stored = desired_status(None, Some(1), &ready, &time(100));
        let mut rolling = ready.clone();
        rolling.phase = Phase::Provisioning;
        rolling.conditions[0] = Observed::not_ok(READY, Reason::Progressing, "rolling out");
        rolling.conditions[1] = Observed::not_ok(INGEST_READY, Reason::Progressing, "rolling out");
        let announced: Vec<(String, String)> = events(Some(&stored), &rolling)
            .into_iter()
            .map(|e| (format!("{:?}", e.type_), e.reason))
            .collect();
        assert_eq!(
            announced,
            [
                ("Normal".to_string(), "Progressing".to_string()),
                ("Normal".to_string(), "Progressing".to_string())
            ]
        );
        // A new tenant whose pods are starting: the phase says so, once.
        assert_eq!(events(None, &rolling).len(), 1);
    }

    #[test]
    fn a_part_that_flips_gets_its_own_event_and_a_steady_one_none() {
        let mut ready = observation(true);
        ready
            .conditions
            .push(Observed::ok(WITHIN_QUOTA, Reason::WithinQuota, "at 3%"));
        let stored = desired_status(None, Some(1), &ready, &time(100));
        assert!(events(Some(&stored), &ready).is_empty(), "nothing changed");

        let mut over = ready.clone();
        over.phase = Phase::Degraded;
        over.conditions[0] = Observed::not_ok(READY, Reason::DatabaseStorageExceeded, "over");
        over.conditions[1] =
            Observed::not_ok(WITHIN_QUOTA, Reason::DatabaseStorageExceeded, "over");
        let reasons: Vec<(String, String)> = events(Some(&stored), &over)
            .into_iter()
            .map(|e| (format!("{:?}", e.type_), e.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("Warning".to_string(), "DatabaseStorageExceeded".to_string()),
                ("Warning".to_string(), "DatabaseStorageExceeded".to_string())
            ]
        );
    }
}
