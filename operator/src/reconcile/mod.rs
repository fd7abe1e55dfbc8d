//! The reconcile pipeline of one tenant, one call per step: validate → namespace (build
//! and apply) → database → ingest → status; and the finalizer path on deletion.
//!
//! Pure: `validate`, `build`, `conditions` (reasons, phase and readiness) and `step` (the
//! shape every step returns). Talk to the API server: `apply`, `ingest`, `status`,
//! `finalize`; `database` to PostgreSQL as well. Errors a user can fix end up in a
//! condition and an Event, not only in a log.

pub mod apply;
pub mod build;
pub mod conditions;
pub mod context;
pub mod database;
pub mod exposure;
pub mod finalize;
pub mod ingest;
pub mod maintenance;
pub mod status;
pub mod step;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{info, instrument, warn};

use crate::crd::{Phase, SmartRegionTenant};
use crate::metrics::ErrorLabel;
use crate::tenant::Validated;
use conditions::{Observation, Observed, Reason};
use status::{DATABASE_READY, INGEST_READY, NAMESPACE_READY, READY};
use step::Step;

pub use context::Context;

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
            Error::Database(error) | Error::Finalize(finalize::Error::Database(error))
                if error.reason() == Reason::DatabaseUnavailable =>
            {
                Duration::from_secs(15)
            }
            _ => Duration::from_secs(300),
        }
    }

    /// Short, stable label for the errors metric.
    pub fn metric_label(&self) -> ErrorLabel {
        match self {
            Error::Apply(error) => error.metric_label(),
            Error::Status(_) => ErrorLabel::Status,
            Error::Finalize(error) => error.metric_label(),
            Error::Database(error) => error.metric_label(),
            Error::Ingest(error) => error.metric_label(),
        }
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
        finalize::cleanup(&tenant, &context)
            .await
            .map_err(Error::from)
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
    tracing::debug!(tenant = %tenant.name_any(), ok = result.is_ok(), elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
    result
}

async fn reconcile_live(tenant: &SmartRegionTenant, context: &Context) -> Result<Action, Error> {
    finalize::ensure_finalizer(&context.client, tenant).await?;
    let validated = match validate::validate(tenant, &context.config) {
        Ok(validated) => validated,
        Err(error) => return report_invalid(tenant, context, error).await,
    };
    let namespace = namespace_step(context, &validated).await;
    let database = database_step(context, tenant, &validated, &namespace).await;
    let retiring = database
        .done()
        .is_some_and(|outcome| !outcome.retiring.is_empty());
    let ingest = ingest_step(context, &validated, &namespace, retiring).await;
    // A rotated writer login retires once no ingest pod may still use it; until then the
    // tenant is looked at again soon (a pod that finally goes changes nothing watched).
    let retired = match ingest.done().and_then(|o| o.rolled_out_with.as_deref()) {
        Some(version) if retiring => match context.database.as_ref() {
            Some(shared) => Some(
                database::ensure_previous_logins_retired(
                    &context.client,
                    shared,
                    &validated,
                    version,
                )
                .await,
            ),
            None => None,
        },
        _ => None,
    };
    let still_retiring = retiring && !matches!(&retired, Some(Ok(roles)) if !roles.is_empty());

    let observation = observe(tenant, context, &validated, &namespace, &database, &ingest);
    status::update(&context.client, &context.recorder, tenant, &observation).await?;
    let name = tenant.name_any();
    context.metrics.set_phase(&name, Some(observation.phase));
    if let Some(outcome) = database.done() {
        context
            .metrics
            .set_database_bytes(&name, Some(outcome.bytes));
        context
            .metrics
            .set_maintenance(&name, outcome.maintenance.as_ref());
    }
    if let Some(applied) = namespace.done()
        && applied.writes > 0
    {
        info!(writes = applied.writes, "children applied");
    }
    // Retried with backoff by error_policy.
    namespace.into_result()?;
    database.into_result()?;
    ingest.into_result()?;
    if let Some(Err(error)) = retired {
        warn!(error = %error_chain(&error), "retiring the previous writer login failed");
        return Err(error.into());
    }
    if still_retiring {
        return Ok(Action::requeue(context.requeue.min(RETIREMENT_POLL)));
    }
    Ok(Action::requeue(context.requeue))
}

/// How often a tenant whose rotated writer login waits for the pods is looked at.
const RETIREMENT_POLL: Duration = Duration::from_secs(3);

/// A spec that can never succeed as written: said in a condition, and nothing to retry
/// until the spec changes.
async fn report_invalid(
    tenant: &SmartRegionTenant,
    context: &Context,
    error: validate::Error,
) -> Result<Action, Error> {
    let message = format!("{error}; fix the spec");
    warn!(%message, "tenant is invalid");
    let observation = Observation {
        phase: Phase::Degraded,
        namespace: None,
        database: None,
        usage: None,
        ingest_endpoint: None,
        exposure: conditions::ExposureSeen::NotObserved,
        conditions: vec![Observed::not_ok(READY, Reason::InvalidSpec, message)],
    };
    status::update(&context.client, &context.recorder, tenant, &observation).await?;
    context
        .metrics
        .set_phase(&tenant.name_any(), Some(Phase::Degraded));
    Ok(Action::await_change())
}

/// Build and apply: the namespace and every child in it.
async fn namespace_step(
    context: &Context,
    validated: &Validated,
) -> Step<apply::Outcome, apply::Error> {
    let children = build::children(validated, &context.config);
    match apply::apply_children(&context.client, validated, children).await {
        Ok(outcome) => {
            let applied = Observed::ok(
                NAMESPACE_READY,
                Reason::Applied,
                format!(
                    "namespace {} with quota, limits, network policies and admin access is in place",
                    validated.namespace
                ),
            );
            let (_, exposure) =
                exposure::observe(validated, &context.config, outcome.exposure.as_ref());
            Step::Done(outcome, std::iter::once(applied).chain(exposure).collect())
        }
        Err(error @ apply::Error::NamespaceTerminating(_)) => Step::Failed(
            Observed::not_ok(
                NAMESPACE_READY,
                Reason::NamespaceTerminating,
                format!(
                    "namespace {} is being deleted; it is created again once it is gone",
                    validated.namespace
                ),
            ),
            error,
        ),
        Err(error @ apply::Error::NotOurs { .. }) => Step::Failed(
            Observed::not_ok(
                NAMESPACE_READY,
                Reason::NotOwnedByTenant,
                error_chain(&error),
            ),
            error,
        ),
        Err(error) => Step::Failed(
            Observed::not_ok(NAMESPACE_READY, Reason::ApplyFailed, error_chain(&error)),
            error,
        ),
    }
}

/// The tenant's database part; it needs the namespace (for its Secrets).
async fn database_step(
    context: &Context,
    tenant: &SmartRegionTenant,
    validated: &Validated,
    namespace: &Step<apply::Outcome, apply::Error>,
) -> Step<database::Outcome, database::Error> {
    let Some(shared) = &context.database else {
        return Step::Skipped;
    };
    if namespace.done().is_none() {
        return Step::Waiting(Observed::not_ok(
            DATABASE_READY,
            Reason::WaitingForNamespace,
            "the database part waits until the namespace is in place",
        ));
    }
    match database::ensure_database(&context.client, shared, tenant, validated).await {
        Ok(outcome) => {
            let provisioned = Observed::ok(
                DATABASE_READY,
                Reason::Provisioned,
                format!(
                    "schema {} with its roles, tables and Secrets is in place",
                    outcome.status.schema
                ),
            );
            let within_quota = outcome.within_quota.clone();
            let maintained = outcome.maintained.clone();
            Step::Done(outcome, vec![provisioned, within_quota, maintained])
        }
        Err(error) => {
            warn!(error = %error_chain(&error), "database step failed");
            Step::Failed(
                Observed::not_ok(DATABASE_READY, error.reason(), error_chain(&error)),
                error,
            )
        }
    }
}

/// The ingest Deployment. It reads the db-writer Secret, so it comes after the database
/// step, but is tried even when that failed: suspension and drift are handled during a
/// database outage too. Without a database there is nothing for ingest to write to.
async fn ingest_step(
    context: &Context,
    validated: &Validated,
    namespace: &Step<apply::Outcome, apply::Error>,
    retiring: bool,
) -> Step<ingest::Outcome, ingest::Error> {
    if context.database.is_none() {
        return Step::Skipped;
    }
    if namespace.done().is_none() {
        return Step::Waiting(Observed::not_ok(
            INGEST_READY,
            Reason::WaitingForNamespace,
            "the ingest part waits until the namespace is in place",
        ));
    }
    match ingest::ensure_ingest(&context.client, validated, &context.config, retiring).await {
        Ok(outcome) => {
            let readiness = outcome.readiness.clone();
            Step::Done(outcome, vec![readiness])
        }
        Err(error) => {
            warn!(error = %error_chain(&error), "ingest step failed");
            Step::Failed(
                Observed::not_ok(INGEST_READY, error.reason(), error_chain(&error)),
                error,
            )
        }
    }
}

/// The status the steps add up to.
fn observe(
    tenant: &SmartRegionTenant,
    context: &Context,
    validated: &Validated,
    namespace: &Step<apply::Outcome, apply::Error>,
    database: &Step<database::Outcome, database::Error>,
    ingest: &Step<ingest::Outcome, ingest::Error>,
) -> Observation {
    let was_ready = tenant
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(|phase| phase == Phase::Ready || phase == Phase::Degraded);
    let parts: Vec<&Observed> = [
        namespace.conditions(),
        database.conditions(),
        ingest.conditions(),
    ]
    .concat();
    let (phase, ready) = conditions::phase_and_ready(validated.suspended, was_ready, &parts);
    let outcome = database.done();
    Observation {
        phase,
        namespace: Some(validated.namespace.clone()),
        database: outcome.map(|outcome| outcome.status.clone()),
        usage: outcome.map(|outcome| crate::crd::Usage {
            database_bytes: Some(outcome.bytes),
            // Without a new rate, what status said stays (`status::desired_status`).
            rows_per_second: outcome.inserted.and_then(|inserted| {
                context
                    .rates
                    .observe(validated.name.as_str(), inserted, std::time::Instant::now())
            }),
        }),
        ingest_endpoint: ingest.done().map(|outcome| outcome.endpoint.clone()),
        exposure: namespace
            .done()
            .map(|outcome| {
                exposure::observe(validated, &context.config, outcome.exposure.as_ref()).0
            })
            .unwrap_or_default(),
        conditions: std::iter::once(ready)
            .chain(parts.into_iter().cloned())
            .collect(),
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
            reason: error.metric_label().as_str().to_string(),
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
}
