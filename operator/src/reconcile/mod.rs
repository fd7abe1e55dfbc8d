//! The reconcile pipeline of one tenant: validate → build → apply → database → ingest →
//! status, and the finalizer path on deletion.
//!
//! `validate` and `build` are pure; `apply`, `ingest`, `status` and `finalize` talk to the
//! API server, `database` to PostgreSQL as well. Errors a user can fix end up in a condition and an Event, not only in a log.

pub mod apply;
pub mod build;
pub mod database;
pub mod finalize;
pub mod ingest;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};
use tracing::{info, instrument, warn};

use crate::config::Config;
use crate::crd::{Phase, SmartRegionTenant};
use crate::database::connect::Database;
use crate::metrics::Metrics;
use status::{DATABASE_READY, INGEST_READY, NAMESPACE_READY, Observation, Observed, READY};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] apply::Error),
    #[error(transparent)]
    Status(#[from] status::Error),
    #[error(transparent)]
    Finalize(#[from] finalize::Error),
    #[error(transparent)]
    Database(#[from] database::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
}

impl Error {
    /// An outage of the shared database hits every tenant at once and ends by itself:
    /// retry often enough that tenants recover soon after it does.
    fn longest_backoff(&self) -> Duration {
        match self {
            Error::Database(error) if error.reason() == "DatabaseUnavailable" => {
                Duration::from_secs(15)
            }
            _ => Duration::from_secs(300),
        }
    }

    /// Short, stable label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply(error) => error.metric_label(),
            Error::Status(_) => "status",
            Error::Finalize(error) => error.metric_label(),
            Error::Database(error) => error.metric_label(),
            Error::Ingest(error) => error.metric_label(),
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The shared database; `None`: Kubernetes side only.
    pub database: Option<Database>,
    /// Periodic re-check of a tenant that is fine (catches what no watch reports).
    pub requeue: Duration,
    /// Consecutive failures per tenant, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last insert count seen per tenant, for `status.usage.rowsPerSecond`.
    pub rates: crate::database::rate::RateSampler,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        database: Option<Database>,
        requeue: Duration,
    ) -> Self {
        Context {
            client,
            config,
            recorder,
            metrics,
            database,
            requeue,
            failures: Mutex::default(),
            rates: Default::default(),
        }
    }

    /// 1 s, 2 s, 4 s ... up to 5 minutes after consecutive failures of `tenant`.
    fn backoff(&self, tenant: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let count = failures.entry(tenant.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(8)).min(Duration::from_secs(300))
    }

    fn succeeded(&self, tenant: &str) {
        self.failures.lock().expect("backoff lock").remove(tenant);
    }
}

#[instrument(skip_all, fields(tenant = %tenant.name_any()))]
pub async fn reconcile(
    tenant: Arc<SmartRegionTenant>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    context.metrics.reconciles.inc();
    let result = if tenant.metadata.deletion_timestamp.is_some() {
        finalize::cleanup(&tenant, &context).await
    } else {
        reconcile_live(&tenant, &context).await
    };
    context
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        context.succeeded(&tenant.name_any());
    }
    result
}

async fn reconcile_live(tenant: &SmartRegionTenant, context: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    finalize::ensure_finalizer(&context.client, tenant).await?;

    let validated = match validate::validate(tenant, &context.config) {
        Ok(validated) => validated,
        Err(error) => {
            // Nothing to retry: the spec must change first.
            let message = format!("{error}; fix the spec");
            warn!(%message, "tenant is invalid");
            let observation = Observation {
                phase: Phase::Degraded,
                namespace: None,
                database: None,
                usage: None,
                ingest_endpoint: None,
                conditions: vec![Observed::failed(READY, "InvalidSpec", message)],
            };
            status::update(&context.client, &context.recorder, tenant, &observation).await?;
            context.metrics.set_phase(&name, Some(Phase::Degraded));
            return Ok(Action::await_change());
        }
    };

    let children = build::children(&validated, &context.config);
    let applied = apply::apply_children(&context.client, &validated, children).await;
    let namespace_ready = match &applied {
        Ok(_) => Observed::ok(
            NAMESPACE_READY,
            "Applied",
            format!(
                "namespace {} with quota, limits, network policies and admin access is in place",
                validated.namespace
            ),
        ),
        Err(apply::Error::NamespaceTerminating(namespace)) => Observed::failed(
            NAMESPACE_READY,
            "NamespaceTerminating",
            format!("namespace {namespace} is being deleted; it is created again once it is gone"),
        ),
        Err(error) => Observed::failed(NAMESPACE_READY, "ApplyFailed", error_chain(error)),
    };
    // The database step needs the namespace (for its Secrets).
    let database = match (&context.database, &applied) {
        (None, _) => None,
        (Some(_), Err(_)) => Some(Err((
            Observed::failed(
                DATABASE_READY,
                "WaitingForNamespace",
                "the database part waits until the namespace is in place",
            ),
            None,
        ))),
        (Some(database), Ok(_)) => {
            match database::ensure_database(&context.client, database, tenant, &validated).await {
                Ok(outcome) => Some(Ok(outcome)),
                Err(error) => {
                    warn!(error = %error_chain(&error), "database step failed");
                    let observed =
                        Observed::failed(DATABASE_READY, error.reason(), error_chain(&error));
                    Some(Err((observed, Some(error))))
                }
            }
        }
    };
    let (database_observed, within_quota, outcome, database_error) = match database {
        None => (None, None, None, None),
        Some(Err((failed, error))) => (Some(failed), None, None, error),
        Some(Ok(outcome)) => (
            Some(Observed::ok(
                DATABASE_READY,
                "Provisioned",
                format!(
                    "schema {} with its roles, tables and Secrets is in place",
                    outcome.status.schema
                ),
            )),
            Some(outcome.within_quota.clone()),
            Some(outcome),
            None,
        ),
    };
    if let Some(outcome) = &outcome {
        context
            .metrics
            .set_database_bytes(&name, Some(outcome.bytes));
    }
    // The Deployment reads the db-writer Secret, so it comes after the database step; it
    // is tried even when that step failed, so suspension and drift are handled during a
    // database outage too. Without a database there is nothing for ingest to write to.
    let ingest = match (&context.database, &applied) {
        (None, _) => None,
        (Some(_), Err(_)) => Some(Err((
            Observed::pending(
                INGEST_READY,
                "WaitingForNamespace",
                "the ingest part waits until the namespace is in place",
            ),
            None,
        ))),
        (Some(_), Ok(_)) => {
            match ingest::ensure_ingest(&context.client, &validated, &context.config).await {
                Ok(outcome) => Some(Ok(outcome)),
                Err(error) => {
                    warn!(error = %error_chain(&error), "ingest step failed");
                    let observed =
                        Observed::failed(INGEST_READY, error.reason(), error_chain(&error));
                    Some(Err((observed, Some(error))))
                }
            }
        }
    };
    let (ingest_observed, ingest_endpoint, ingest_error) = match ingest {
        None => (None, None, None),
        Some(Ok(outcome)) => (Some(outcome.readiness), Some(outcome.endpoint), None),
        Some(Err((failed, error))) => (Some(failed), None, error),
    };
    let was_ready = tenant
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(|phase| phase == Phase::Ready || phase == Phase::Degraded);
    let parts: Vec<&Observed> = [
        Some(&namespace_ready),
        database_observed.as_ref(),
        within_quota.as_ref(),
        ingest_observed.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (phase, ready) = phase_and_ready(validated.suspended, was_ready, &parts);
    let mut conditions = vec![ready, namespace_ready];
    conditions.extend(database_observed.clone());
    conditions.extend(within_quota);
    conditions.extend(ingest_observed);
    let observation = Observation {
        phase,
        namespace: Some(validated.namespace.clone()),
        database: outcome.as_ref().map(|outcome| outcome.status.clone()),
        usage: outcome.as_ref().map(|outcome| crate::crd::Usage {
            database_bytes: Some(outcome.bytes),
            // Without a new rate, what status said stays (`status::desired_status`).
            rows_per_second: outcome.inserted.and_then(|inserted| {
                context
                    .rates
                    .observe(&name, inserted, std::time::Instant::now())
            }),
        }),
        ingest_endpoint,
        conditions,
    };
    status::update(&context.client, &context.recorder, tenant, &observation).await?;
    context.metrics.set_phase(&name, Some(phase));

    let applied = applied?;
    if applied.writes > 0 {
        info!(writes = applied.writes, "children applied");
    }
    if let Some(error) = database_error {
        // Retried with backoff by error_policy.
        return Err(Error::Database(error));
    }
    if let Some(error) = ingest_error {
        return Err(Error::Ingest(error));
    }
    Ok(Action::requeue(context.requeue))
}

/// The tenant's phase and `Ready` condition from its parts' conditions.
///
/// A failed part makes a tenant that was Ready Degraded (Provisioning before it ever was).
/// A part on its way by itself (an ingest rollout) makes it Provisioning, whatever it was:
/// not Ready, since the change is not complete, and not Degraded, since nothing failed.
fn phase_and_ready(suspended: bool, was_ready: bool, parts: &[&Observed]) -> (Phase, Observed) {
    let failing = parts.iter().find(|part| !part.ok && !part.pending);
    let pending = parts.iter().find(|part| !part.ok && part.pending);
    if suspended {
        (
            Phase::Suspended,
            Observed::failed(
                READY,
                "Suspended",
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
            Observed::failed(READY, failing.reason, failing.message.clone()),
        )
    } else if let Some(pending) = pending {
        (
            Phase::Provisioning,
            Observed::pending(READY, pending.reason, pending.message.clone()),
        )
    } else {
        (
            Phase::Ready,
            Observed::ok(READY, "Ready", "every part of the tenant is ready"),
        )
    }
}

/// The error and its causes on one line, for conditions and logs. A cause whose text is
/// already there is left out (drivers often repeat their source in their own message),
/// and an API server refusal is given once, as its message and code, not as kube's
/// debug dump of the Status.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = link {
        let refusal = match current.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => Some(status),
            _ => None,
        };
        let part = match refusal {
            Some(status) => format!(
                "{} (HTTP {} {})",
                status.message, status.code, status.reason
            ),
            None => current.to_string(),
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        // kube's own source is the same Status again.
        link = match refusal {
            Some(_) => None,
            None => current.source(),
        };
    }
    text
}

pub fn error_policy(
    tenant: Arc<SmartRegionTenant>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let name = tenant.name_any();
    context
        .metrics
        .errors
        .get_or_create(&crate::metrics::ErrorLabels {
            reason: error.metric_label().to_string(),
        })
        .inc();
    let delay = context.backoff(&name).min(error.longest_backoff());
    warn!(tenant = %name, error = %error_chain(error), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("failed to apply Role tenant-admin")]
        Apply(#[source] kube::Error),
        #[error("the database is unreachable")]
        Database(#[source] Driver),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error connecting to server: {0}")]
    struct Driver(#[source] std::io::Error);

    #[test]
    fn error_chains_say_each_thing_once() {
        let status =
            kube::core::Status::failure("roles \"tenant-admin\" is forbidden", "Forbidden")
                .with_code(403);
        let refused = Outer::Apply(kube::Error::Api(Box::new(status)));
        assert_eq!(
            error_chain(&refused),
            "failed to apply Role tenant-admin: roles \"tenant-admin\" is forbidden (HTTP 403 Forbidden)"
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            error_chain(&Outer::Database(Driver(io))),
            "the database is unreachable: error connecting to server: Connection refused"
        );
    }

    fn namespace() -> Observed {
        Observed::ok(NAMESPACE_READY, "Applied", "in place")
    }

    #[test]
    fn a_rollout_keeps_a_tenant_provisioning_and_never_degrades_it() {
        let rolling = Observed::pending(INGEST_READY, "Progressing", "rolling out: 1 of 2");
        for was_ready in [false, true] {
            let (phase, ready) = phase_and_ready(false, was_ready, &[&namespace(), &rolling]);
            assert_eq!(phase, Phase::Provisioning, "was ready: {was_ready}");
            assert!(!ready.ok && ready.pending);
            assert_eq!(ready.reason, "Progressing");
        }
    }

    #[test]
    fn a_failure_degrades_a_ready_tenant_and_wins_over_a_rollout() {
        let rolling = Observed::pending(INGEST_READY, "Progressing", "rolling out");
        let down = Observed::failed(DATABASE_READY, "DatabaseUnavailable", "unreachable");
        let (phase, ready) = phase_and_ready(false, true, &[&namespace(), &rolling, &down]);
        assert_eq!(phase, Phase::Degraded);
        assert_eq!(
            (ready.reason, ready.pending),
            ("DatabaseUnavailable", false)
        );
        let (phase, _) = phase_and_ready(false, false, &[&down]);
        assert_eq!(phase, Phase::Provisioning, "never ready, so not degraded");
        let lost = Observed::failed(INGEST_READY, "Unavailable", "0 of 1 available");
        assert_eq!(phase_and_ready(false, true, &[&lost]).0, Phase::Degraded);
    }

    #[test]
    fn every_part_ready_is_ready_and_suspension_wins() {
        let available = Observed::ok(INGEST_READY, "Available", "1 of 1");
        let (phase, ready) = phase_and_ready(false, false, &[&namespace(), &available]);
        assert_eq!(phase, Phase::Ready);
        assert!(ready.ok);
        let zero = Observed::ok(INGEST_READY, "ScaledToZero", "suspended");
        assert_eq!(phase_and_ready(true, true, &[&zero]).0, Phase::Suspended);
    }
}
