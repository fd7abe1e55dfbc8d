//! The reconcile pipeline of one tenant, one call per step, top to bottom: validate →
//! inputs (what the namespace holds) → database (schema, quota, maintenance,
//! credentials; under the tenant's lock) → build (every child, pure) → apply (every
//! child, in one place) → status; and the finalizer path on deletion. No step is
//! visited twice: a rotated writer login retires in the database step of a later
//! reconcile, once the inputs see no pod using it.
//!
//! Pure: `validate`, `build`, `conditions` (reasons, phase and readiness), `ingest` and
//! `maintenance` (conditions) and `step` (the shape every step returns). Talk to the API
//! server: `inputs` (reads), `apply` with `kinds` (writes), `status`, `finalize`;
//! `database` to PostgreSQL. Errors a user can fix end up in a condition and an Event,
//! not only in a log.

pub mod apply;
pub mod build;
pub mod child_status;
pub mod conditions;
pub mod context;
pub mod database;
pub mod exposure;
pub mod finalize;
pub mod grafana;
pub mod ingest;
pub mod inputs;
pub mod kinds;
pub mod maintenance;
pub mod open_data;
pub mod sharing;
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
use status::{DATABASE_READY, INGEST_READY, NAMESPACE_READY, READ_READY, READY};
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
    Inputs(#[from] inputs::Error),
    #[error("failed to write the status of a SmartRegionShare")]
    ShareStatus(#[source] kube::Error),
    #[error("failed to write the status of a SmartRegionDataset")]
    DatasetStatus(#[source] kube::Error),
    #[error(transparent)]
    Grafana(#[from] grafana::Error),
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
            Error::Status(_) | Error::ShareStatus(_) | Error::DatasetStatus(_) => {
                ErrorLabel::Status
            }
            Error::Finalize(error) => error.metric_label(),
            Error::Database(error) => error.metric_label(),
            Error::Inputs(error) => error.metric_label(),
            Error::Grafana(grafana::Error::NotOurs(_)) => ErrorLabel::NotOurs,
            Error::Grafana(grafana::Error::Read(..)) => ErrorLabel::Read,
            Error::Grafana(grafana::Error::Write(..)) => ErrorLabel::Apply,
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
    let inputs = inputs_step(context, &validated).await;
    let mut locked = lock_step(context, &validated).await;
    let database = database_step(context, tenant, &validated, &inputs, &mut locked).await;
    let children = build::children(
        &validated,
        &context.config,
        &facts(context, &inputs, &database),
    );
    let applied = apply_step(context, &validated, children, &inputs).await;
    // Held until the Secrets are written: see `database::Locked`.
    let released = match locked {
        Some(Ok(locked)) => locked.release().await,
        _ => Ok(()),
    };
    let ingest = ingest_step(context, &validated, &inputs, &database, &applied);
    let observation = observe(tenant, context, &validated, &applied, &database, &ingest);
    status::update(&context.client, &context.recorder, tenant, &observation).await?;
    let shares = share_step(context, &validated, &inputs, &database).await;
    let datasets = dataset_step(context, &validated, &inputs, &database).await;
    let dashboards = grafana_step(context, &validated, &database).await;
    record_metrics(context, tenant, &observation, &database, &applied);
    let retiring = database
        .done()
        .is_some_and(|outcome| !outcome.secrets.retiring.is_empty());
    let busy = database.done().is_some_and(|outcome| outcome.sharing.busy);
    // Retried with backoff by error_policy.
    inputs.into_result()?;
    applied.into_result()?;
    database.into_result()?;
    released?;
    shares?;
    datasets?;
    dashboards?;
    // A rotated writer login retires once no ingest pod may still use it; until then the
    // tenant is looked at again soon (a pod that finally goes changes nothing watched).
    // So is a consumer whose provider was busy when its reader was to be granted.
    if retiring || busy {
        return Ok(Action::requeue(context.requeue.min(RETIREMENT_POLL)));
    }
    Ok(Action::requeue(context.requeue))
}

fn record_metrics(
    context: &Context,
    tenant: &SmartRegionTenant,
    observation: &Observation,
    database: &Step<database::Outcome, database::Error>,
    applied: &Step<apply::Outcome, apply::Error>,
) {
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
    if let Some(applied) = applied.done()
        && applied.writes > 0
    {
        info!(writes = applied.writes, "children applied");
    }
}

/// The status of the tenant's own shares, from what the database step enforced (nothing
/// when it did not run: the shares keep what they said).
async fn share_step(
    context: &Context,
    validated: &Validated,
    inputs: &Step<inputs::Inputs, inputs::Error>,
    database: &Step<database::Outcome, database::Error>,
) -> Result<(), Error> {
    let Some(found) = inputs.done() else {
        return Ok(());
    };
    if found.shares.is_empty() {
        return Ok(());
    }
    let provided = match database {
        Step::Done(outcome, _) => Ok(outcome.sharing.provided.as_ref()),
        Step::Failed(observed, _) | Step::Waiting(observed) => Err(observed.message.as_str()),
        Step::Skipped => return Ok(()),
    };
    let declared = sharing::declared(&found.shares, &validated.name);
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let live = live(&found.shares);
    let desired = |object: &crate::crd::SmartRegionShare, previous: Option<&_>| {
        let mine = declared.iter().find(|d| d.share.name == object.name_any());
        let enforced = match provided {
            Err(why) => sharing::Enforced::Failed(why),
            Ok(None) => sharing::Enforced::Forbidden,
            Ok(Some(provided)) => provided
                .iter()
                .find(|(name, _)| *name == object.name_any())
                .map(|(_, active)| sharing::Enforced::Active(active))
                .unwrap_or(sharing::Enforced::Active(&[])),
        };
        sharing::share_status(object, previous, &validated.name, mine, enforced, &now)
    };
    sharing::update_share_statuses(&context.client, &context.recorder, &live, desired)
        .await
        .map(|_| ())
        .map_err(Error::ShareStatus)
}

/// The tenant's Grafana data source and dashboard, with the reader's credentials the
/// database step decided (nothing is written when it did not run).
async fn grafana_step(
    context: &Context,
    validated: &Validated,
    database: &Step<database::Outcome, database::Error>,
) -> Result<(), Error> {
    let reader = database
        .done()
        .zip(context.database.as_ref())
        .map(|(outcome, shared)| grafana::Reader {
            password: &outcome.secrets.reader_password,
            endpoint: &shared.endpoint,
            timescaledb: outcome.status.storage == Some(crate::crd::Storage::Hypertable),
        });
    grafana::ensure_grafana(
        &context.client,
        context.config.grafana_namespace.as_deref(),
        validated,
        reader,
    )
    .await
    .inspect_err(|error| warn!(error = %error_chain(error), "placing the Grafana objects failed"))
    .map_err(Error::from)
}

/// The status of the tenant's open datasets, from what the database step published
/// (nothing when it did not run).
async fn dataset_step(
    context: &Context,
    validated: &Validated,
    inputs: &Step<inputs::Inputs, inputs::Error>,
    database: &Step<database::Outcome, database::Error>,
) -> Result<(), Error> {
    let Some(found) = inputs.done() else {
        return Ok(());
    };
    if found.datasets.is_empty() {
        return Ok(());
    }
    let published = match database {
        Step::Done(..) if validated.ipa_code.is_none() => open_data::Published::NoIpaCode,
        Step::Done(..) => open_data::Published::Yes,
        Step::Failed(observed, _) | Step::Waiting(observed) => {
            open_data::Published::Failed(&observed.message)
        }
        Step::Skipped => return Ok(()),
    };
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let desired = |object: &crate::crd::SmartRegionDataset, previous: Option<&_>| {
        open_data::dataset_status(
            object,
            previous,
            validated,
            &context.config,
            published,
            &now,
        )
    };
    open_data::update_dataset_statuses(&context.client, &live(&found.datasets), desired)
        .await
        .map(|_| ())
        .map_err(Error::DatasetStatus)
}

/// The objects not being deleted: the ones whose status is still worth writing.
fn live<K: kube::Resource + Clone>(objects: &[K]) -> Vec<K> {
    objects
        .iter()
        .filter(|object| object.meta().deletion_timestamp.is_none())
        .cloned()
        .collect()
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
        read_endpoint: None,
        shared_with_me: None,
        exposure: conditions::ExposureSeen::NotObserved,
        conditions: vec![Observed::not_ok(READY, Reason::InvalidSpec, message)],
    };
    status::update(&context.client, &context.recorder, tenant, &observation).await?;
    context
        .metrics
        .set_phase(&tenant.name_any(), Some(Phase::Degraded));
    Ok(Action::await_change())
}

/// What the namespace holds now. Skipped without a database: the Secrets and the
/// ingest Deployment are then the database's concern, not this operator's.
async fn inputs_step(
    context: &Context,
    validated: &Validated,
) -> Step<inputs::Inputs, inputs::Error> {
    if context.database.is_none() {
        return Step::Skipped;
    }
    match inputs::read_inputs(&context.client, validated).await {
        Ok(inputs) => Step::Done(inputs, Vec::new()),
        Err(error) => {
            warn!(error = %error_chain(&error), "reading the tenant's Secrets failed");
            Step::Failed(
                Observed::not_ok(NAMESPACE_READY, Reason::ApplyFailed, error_chain(&error)),
                error,
            )
        }
    }
}

/// The tenant's lock in the database, for the database step and the writes of its
/// Secrets. `None` without a database.
async fn lock_step(
    context: &Context,
    validated: &Validated,
) -> Option<Result<database::Locked, database::Error>> {
    let shared = context.database.as_ref()?;
    Some(database::Locked::take(shared, &validated.name).await)
}

/// The tenant's database part: it needs the Secrets as they are (inputs).
async fn database_step(
    context: &Context,
    tenant: &SmartRegionTenant,
    validated: &Validated,
    inputs: &Step<inputs::Inputs, inputs::Error>,
    locked: &mut Option<Result<database::Locked, database::Error>>,
) -> Step<database::Outcome, database::Error> {
    let Some(shared) = &context.database else {
        return Step::Skipped;
    };
    let Some(found) = inputs.done() else {
        return Step::Waiting(Observed::not_ok(
            DATABASE_READY,
            Reason::WaitingForNamespace,
            "the database part waits until the tenant's Secrets can be read",
        ));
    };
    if matches!(locked, Some(Err(_)))
        && let Some(Err(error)) = locked.take()
    {
        return database_failed(error);
    }
    let Some(Ok(locked)) = locked.as_mut() else {
        return Step::Skipped;
    };
    let sharing = database::Sharing {
        declared: sharing::declared(&found.shares, &validated.name),
        with_me: sharing::shared_with(&found.shared_with_me, &context.config.namespace_prefix),
        consumers_present: found.consumers_present.clone(),
    };
    let open = open_data::declared(&found.datasets, validated);
    match database::ensure_database(locked, shared, tenant, validated, found, &sharing, &open).await
    {
        Ok(outcome) => {
            let provisioned = Observed::ok(
                DATABASE_READY,
                Reason::Provisioned,
                format!(
                    "schema {} with its roles and tables is in place",
                    outcome.status.schema
                ),
            );
            let within_quota = outcome.within_quota.clone();
            let maintained = outcome.maintained.clone();
            Step::Done(outcome, vec![provisioned, within_quota, maintained])
        }
        Err(error) => database_failed(error),
    }
}

fn database_failed(error: database::Error) -> Step<database::Outcome, database::Error> {
    warn!(error = %error_chain(&error), "database step failed");
    Step::Failed(
        Observed::not_ok(DATABASE_READY, error.reason(), error_chain(&error)),
        error,
    )
}

/// What `build` may rely on: the Secrets as read and the credentials decided.
fn facts<'a>(
    context: &'a Context,
    inputs: &'a Step<inputs::Inputs, inputs::Error>,
    database: &'a Step<database::Outcome, database::Error>,
) -> build::Facts<'a> {
    build::Facts {
        inputs: inputs.done(),
        credentials: database
            .done()
            .zip(context.database.as_ref())
            .map(|(outcome, shared)| (&outcome.secrets, &shared.endpoint)),
    }
}

/// Apply: the namespace and every child in it, in one place; `NamespaceReady` and, while
/// ingest is exposed, `ExposureReady`. After a failure to read the inputs, nothing is
/// written (the condition already says why).
async fn apply_step(
    context: &Context,
    validated: &Validated,
    children: build::Children,
    inputs: &Step<inputs::Inputs, inputs::Error>,
) -> Step<apply::Outcome, apply::Error> {
    if let Step::Failed(observed, _) = inputs {
        return Step::Waiting(observed.clone());
    }
    match apply::apply_children(&context.client, validated, children).await {
        Ok(outcome) => {
            let applied = Observed::ok(
                NAMESPACE_READY,
                Reason::Applied,
                format!(
                    "namespace {} with quota, limits, network policies, admin access, \
                     credentials and ingest is in place",
                    validated.namespace
                ),
            );
            let (_, exposure) =
                exposure::observe(validated, &context.config, outcome.exposure().as_ref());
            Step::Done(outcome, std::iter::once(applied).chain(exposure).collect())
        }
        Err(error) => {
            let reason = match &error {
                apply::Error::NamespaceTerminating(_) => Reason::NamespaceTerminating,
                apply::Error::NotOurs { .. } => Reason::NotOwnedByTenant,
                _ => Reason::ApplyFailed,
            };
            warn!(error = %error_chain(&error), "applying the children failed");
            Step::Failed(
                Observed::not_ok(NAMESPACE_READY, reason, error_chain(&error)),
                error,
            )
        }
    }
}

/// `IngestReady`, from the Deployment as applied or from why it is not desired yet. A
/// step of its own in the status only: it writes nothing.
fn ingest_step(
    context: &Context,
    validated: &Validated,
    inputs: &Step<inputs::Inputs, inputs::Error>,
    database: &Step<database::Outcome, database::Error>,
    applied: &Step<apply::Outcome, apply::Error>,
) -> Step<(), ()> {
    if context.database.is_none() {
        return Step::Skipped;
    }
    let (Some(found), Some(outcome)) = (inputs.done(), applied.done()) else {
        return Step::Waiting(Observed::not_ok(
            INGEST_READY,
            Reason::WaitingForNamespace,
            "the ingest part waits until the namespace is in place",
        ));
    };
    let writer_known = database.done().is_some() || found.writer.is_some();
    let pods = ingest::Pods::ingest(validated);
    let readiness = match (
        ingest::waiting(validated, found, writer_known),
        outcome.deployment(pods.name),
    ) {
        (Some(waiting), _) => waiting,
        (None, Some(deployment)) => ingest::readiness(deployment, validated, &pods),
        (None, None) => Observed::not_ok(
            INGEST_READY,
            Reason::WaitingForDatabase,
            "the ingest pods wait for the database part",
        ),
    };
    let reader_known = database.done().is_some() || found.reader.is_some();
    let pods = ingest::Pods::read(validated);
    let read = match outcome.deployment(pods.name) {
        Some(deployment) if reader_known => ingest::readiness(deployment, validated, &pods),
        _ => Observed::not_ok(
            READ_READY,
            Reason::WaitingForDatabase,
            "the read pod waits for the Secret db-reader, which the database step writes",
        ),
    };
    Step::Done((), vec![readiness, read])
}

/// The status the steps add up to.
fn observe(
    tenant: &SmartRegionTenant,
    context: &Context,
    validated: &Validated,
    applied: &Step<apply::Outcome, apply::Error>,
    database: &Step<database::Outcome, database::Error>,
    ingest: &Step<(), ()>,
) -> Observation {
    let was_ready = tenant
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(|phase| phase == Phase::Ready || phase == Phase::Degraded);
    let parts: Vec<&Observed> = [
        applied.conditions(),
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
        shared_with_me: outcome.map(|outcome| sharing::shared_with_me(&outcome.sharing.readable)),
        ingest_endpoint: ingest
            .done()
            .map(|()| crate::resources::ingest::ingest_endpoint(validated)),
        read_endpoint: ingest.done().map(|()| {
            (crate::resources::read::read_replicas(validated) > 0)
                .then(|| crate::resources::read::read_endpoint(validated))
        }),
        exposure: applied
            .done()
            .map(|outcome| {
                exposure::observe(validated, &context.config, outcome.exposure().as_ref()).0
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
