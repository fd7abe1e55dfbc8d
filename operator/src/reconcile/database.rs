//! Database (database + client): the tenant's schema, roles, tables and partitions or
//! hypertable, its storage quota, and the Secrets that carry its credentials into the
//! namespace. `current_passwords`, `rotated_at` and `within_quota` are pure.
//!
//! The Secrets are the only place the passwords are kept. Missing Secrets, or a new
//! value of the rotate-credentials annotation, mean new passwords. Nothing here logs,
//! reports or returns a password.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::status::{Observed, Reason, WITHIN_QUOTA};
use crate::crd::{DatabaseStatus, ROTATE_CREDENTIALS_ANNOTATION, SmartRegionTenant};
use crate::database::connect::{Database, Extension};
use crate::database::logins::{self, Plan, SecretLogin, WriterLogins};
use crate::database::names::TenantDb;
use crate::database::new_password;
use crate::database::provision::{self, Desired, Passwords};
use crate::database::quota::{self, RESUME_PERCENT, human_bytes};
use crate::database::sql::RoleLimits;
use crate::database::storage::{self, Layout};
use crate::database::timescale::HypertableSettings;
use crate::metrics::ErrorLabel;
use crate::resources::secrets::{
    READER_SECRET, RETIRING_ANNOTATION, ROTATION_ANNOTATION, WRITER_SECRET, database_secret,
    password_of, retiring_of, user_of,
};
use crate::tenant::{TenantName, Validated};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database is unreachable")]
    Unreachable(#[source] deadpool_postgres::PoolError),
    #[error(transparent)]
    Provision(#[from] provision::Error),
    #[error("failed to look at the database's TimescaleDB extension")]
    Inspect(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("failed to read Secret {0}")]
    ReadSecret(String, #[source] kube::Error),
    #[error("failed to record on Secret {WRITER_SECRET} that the previous login is retired")]
    RecordRetired(#[source] kube::Error),
    #[error(transparent)]
    Apply(#[from] super::apply::Error),
}

impl Error {
    pub fn metric_label(&self) -> ErrorLabel {
        match self {
            Error::Unreachable(_) => ErrorLabel::DatabaseUnreachable,
            Error::Provision(error) if error.is_connection() => ErrorLabel::DatabaseUnreachable,
            Error::Provision(_) => ErrorLabel::DatabaseProvision,
            Error::Inspect(error) if error.code().is_none() => ErrorLabel::DatabaseUnreachable,
            Error::Inspect(_) => ErrorLabel::DatabaseProvision,
            Error::Storage(_) => ErrorLabel::DatabaseStorage,
            Error::ReadSecret(..) => ErrorLabel::ReadSecret,
            Error::RecordRetired(_) => ErrorLabel::Apply,
            Error::Apply(error) => error.metric_label(),
        }
    }

    /// The condition reason: an outage the operator waits out, or a failure to look at.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Unreachable(_) => Reason::DatabaseUnavailable,
            Error::Provision(error) if error.is_connection() => Reason::DatabaseUnavailable,
            Error::Inspect(error) if error.code().is_none() => Reason::DatabaseUnavailable,
            Error::Storage(_) => Reason::StorageUnavailable,
            _ => Reason::ProvisioningFailed,
        }
    }
}

/// What the database step found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: DatabaseStatus,
    pub bytes: i64,
    /// Rows ever inserted into measurements (PostgreSQL's counter).
    pub inserted: Option<i64>,
    pub within_quota: Observed,
    /// Whether retention and compression do their work (`StorageMaintained`).
    pub maintained: Observed,
    /// TimescaleDB tenants: what the jobs recorded and achieved, and the policies the
    /// operator ran itself now.
    pub maintenance: Option<provision::Maintenance>,
    /// Kubernetes writes made (0 in the steady state).
    pub writes: usize,
    /// Writer logins a rotation replaced that wait for the ingest pods to roll; a
    /// rotation asked for meanwhile waits too.
    pub retiring: Vec<String>,
}

/// The tenant's database objects as its tier and spec want them. Connection limit: room
/// for every ingest pod's pool plus a few dashboard sessions.
pub fn desired(tenant: &Validated, layout: Layout, timescaledb_schema: Option<String>) -> Desired {
    Desired {
        limits: RoleLimits {
            connection_limit: 2 + 4 * tenant.limits.ingest_replicas,
            statement_timeout_ms: 30_000,
        },
        layout,
        timescaledb_schema,
        hypertable: HypertableSettings {
            chunk_interval_hours: tenant.limits.chunk_interval_hours,
            retention_days: tenant.limits.retention_days,
            compress_after_days: tenant.limits.compress_after_days,
        },
    }
}

/// Makes the tenant's database objects and Secrets exist and enforces its storage quota:
/// storage and rules first, then credentials, provisioning, storage maintenance,
/// measurement and the Secrets.
///
/// Suspension and the quota are enforced on an existing schema before anything else,
/// so a later step that fails (TimescaleDB refusing a statement, say) never leaves a
/// suspended or over-quota writer with INSERT.
///
/// The whole step holds the tenant's advisory lock in the database: two operators (a
/// leader hand-over) never interleave reading the Secrets, setting passwords and writing
/// the Secrets, so the database and the Secrets never disagree.
pub async fn ensure_database(
    client: &Client,
    database: &Database,
    tenant: &SmartRegionTenant,
    validated: &Validated,
) -> Result<Outcome, Error> {
    let db = TenantDb::for_tenant(&validated.name);
    let mut connection = database.pool.get().await.map_err(Error::Unreachable)?;
    provision::lock_tenant(&connection, &db).await?;
    let result = ensure_database_locked(client, database, &mut connection, tenant, validated).await;
    // Given back on every path: the pooled session outlives this reconcile.
    let unlocked = provision::unlock_tenant(&connection, &db).await;
    let outcome = result?;
    unlocked?;
    Ok(outcome)
}

async fn ensure_database_locked(
    client: &Client,
    database: &Database,
    connection: &mut deadpool_postgres::Object,
    tenant: &SmartRegionTenant,
    validated: &Validated,
) -> Result<Outcome, Error> {
    let db = TenantDb::for_tenant(&validated.name);
    // Every later statement may act as the tenant's roles: the admin's membership first.
    provision::ensure_admin_membership(connection, &db).await?;
    // Validation refused anything that is not a positive quantity.
    let quota_bytes =
        crate::quantity::whole_units(&validated.limits.database_storage).unwrap_or(i128::MAX);
    let recorded = tenant
        .status
        .as_ref()
        .and_then(|status| status.database.as_ref());
    let found = storage_and_rules(
        connection,
        database,
        &db,
        validated,
        recorded.and_then(|d| d.storage),
        quota_bytes,
    )
    .await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &validated.namespace);
    let rotation = tenant
        .annotations()
        .get(ROTATE_CREDENTIALS_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let credentials = credentials(connection, &db, &secrets, &rotation).await?;

    let desired = desired(
        validated,
        found.layout.clone(),
        found.timescaledb_schema.clone(),
    );
    let provisioned = provision::ensure_schema_exists(
        connection,
        &db,
        &desired,
        found.table,
        &credentials.logins,
        &Passwords {
            writer: &credentials.writer,
            reader: &credentials.reader,
        },
        credentials.issue,
        !validated.suspended,
    )
    .await?;
    if provisioned.changed {
        info!(schema = %db.schema, storage = ?found.layout.storage(), passwords_issued = provisioned.passwords_set, writer_login = %credentials.logins.active, retiring = ?credentials.logins.retiring, "database objects provisioned");
    }
    if credentials.deferred {
        info!(schema = %db.schema, retiring = ?credentials.logins.retiring, "rotation waits until the previous login is retired");
    }
    let maintenance = maintain_storage(connection, &db, &found.layout, &desired).await?;
    let (maintained, maintenance_status) = match &maintenance {
        Some(maintenance) => {
            let previous_run = recorded
                .and_then(|d| d.maintenance.as_ref())
                .and_then(|m| m.operator_run_at.as_ref());
            let (observed, status) =
                super::maintenance::hypertable(maintenance, previous_run, jiff::Timestamp::now());
            (observed, Some(status))
        }
        None => (super::maintenance::partitions(), None),
    };

    let held = match found.held {
        Some(held) => held,
        // A schema created now: measured and held to the rules now.
        None => {
            let bytes = provision::measure_schema_bytes(connection, &db, &found.layout).await?;
            hold_the_rules(connection, &db, validated, Some(bytes), quota_bytes).await?
        }
    };
    let inserted = provision::rows_inserted(connection, &db, &found.layout).await?;

    let mut writes = 0;
    for (name, user, password, retiring, read) in [
        (
            WRITER_SECRET,
            &credentials.logins.active,
            &credentials.writer,
            Some(credentials.logins.retiring.as_slice()),
            &credentials.read.0,
        ),
        (
            READER_SECRET,
            &db.reader,
            &credentials.reader,
            None,
            &credentials.read.1,
        ),
    ] {
        let secret = database_secret(
            validated,
            name,
            &database.endpoint,
            user,
            password,
            &credentials.issued_for,
            retiring,
        );
        writes += super::apply::ensure_secret(&secrets, &secret, read.as_ref()).await?;
    }
    Ok(Outcome {
        status: DatabaseStatus {
            schema: db.schema.clone(),
            writer_secret: WRITER_SECRET.into(),
            reader_secret: READER_SECRET.into(),
            storage: Some(found.layout.storage()),
            credentials_rotated_at: rotated_at(
                recorded.and_then(|d| d.credentials_rotated_at.clone()),
                provisioned.passwords_set,
                Time(jiff::Timestamp::now()),
            ),
            maintenance: maintenance_status,
        },
        bytes: held.bytes,
        inserted: Some(inserted),
        within_quota: within_quota(
            held.bytes,
            quota_bytes,
            &validated.limits.database_storage,
            held.within,
        ),
        maintained,
        maintenance,
        writes,
        retiring: credentials.logins.retiring,
    })
}

/// Retires the writer logins a rotation replaced, once the ingest step saw every pod
/// run from the current template (`rolled_out_with`: the resourceVersion of the
/// `db-writer` Secret that template was made from). The Secret then records that
/// nothing is pending any more; if it changed since, this waits for the next reconcile.
/// Returns the logins retired.
pub async fn ensure_previous_logins_retired(
    client: &Client,
    database: &Database,
    validated: &Validated,
    rolled_out_with: &str,
) -> Result<Vec<String>, Error> {
    let db = TenantDb::for_tenant(&validated.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &validated.namespace);
    let Some(writer) = secrets
        .get_opt(WRITER_SECRET)
        .await
        .map_err(|source| Error::ReadSecret(WRITER_SECRET.to_string(), source))?
    else {
        return Ok(Vec::new());
    };
    if writer.metadata.resource_version.as_deref() != Some(rolled_out_with) {
        return Ok(Vec::new());
    }
    let user = user_of(&writer).unwrap_or_default();
    let retiring: Vec<String> = retiring_of(&writer)
        .into_iter()
        .filter(|role| *role != user && db.writer_roles().contains(role))
        .collect();
    if retiring.is_empty() {
        return Ok(retiring);
    }
    let mut connection = database.pool.get().await.map_err(Error::Unreachable)?;
    provision::ensure_logins_retired(&mut connection, &db, &retiring).await?;
    // Only if the Secret is still the one the pods rolled onto.
    let patch = serde_json::json!({ "metadata": {
        "resourceVersion": rolled_out_with,
        "annotations": { RETIRING_ANNOTATION: "" },
    } });
    secrets
        .patch(
            WRITER_SECRET,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(Error::RecordRetired)?;
    info!(schema = %db.schema, retired = ?retiring, "previous writer login retired");
    Ok(retiring)
}

/// The tenant's table and storage as found, with the rules already held on an existing
/// schema.
struct Found {
    table: Option<storage::Table>,
    layout: Layout,
    timescaledb_schema: Option<String>,
    /// `None` for a schema that does not exist yet.
    held: Option<Held>,
}

/// Looks at TimescaleDB and the tenant's table, holds suspension and the quota on an
/// existing schema, and decides the storage (refusing one that cannot be used).
async fn storage_and_rules(
    connection: &tokio_postgres::Client,
    database: &Database,
    db: &TenantDb,
    validated: &Validated,
    recorded: Option<crate::crd::Storage>,
    quota_bytes: i128,
) -> Result<Found, Error> {
    let extension = database
        .timescaledb(connection)
        .await
        .map_err(Error::Inspect)?;
    if let Extension::NotLoaded { version } = &extension {
        // No DDL works in the database, GRANT and REVOKE included: the rules hold at the
        // writer's login instead, which is no DDL.
        hold_without_ddl(connection, db, validated, quota_bytes).await?;
        return Err(storage::Error::TimescaleDbNotLoaded(version.clone()).into());
    }
    let timescaledb_schema = extension.loaded().map(|t| t.schema.clone());
    let table = provision::inspect_table(connection, db, timescaledb_schema.is_some()).await?;
    let decide = || {
        storage::decide(
            table,
            recorded,
            timescaledb_schema.as_deref(),
            database.storage,
        )
    };
    let held = match table {
        None => None,
        Some(_) => match hold_existing(connection, db, validated, decide().ok(), quota_bytes).await
        {
            Ok(held) => Some(held),
            Err(error) => {
                // The privilege could not be taken away (a hand edit the admin cannot
                // undo, say): a tenant that must not write loses its writer's login.
                if validated.suspended {
                    provision::ensure_writer_locked_out(connection, db).await?;
                }
                return Err(error);
            }
        },
    };
    Ok(Found {
        table,
        layout: decide()?,
        timescaledb_schema,
        held,
    })
}

/// Partitions ahead of now and none past retention, or the hypertable's settings and
/// jobs as the tenant's, with how the jobs do (the due policies run by the operator
/// where they do not).
async fn maintain_storage(
    connection: &mut tokio_postgres::Client,
    db: &TenantDb,
    layout: &Layout,
    desired: &Desired,
) -> Result<Option<provision::Maintenance>, Error> {
    match layout {
        Layout::Partitions => {
            let changes = provision::ensure_partitions(
                connection,
                db,
                jiff::Timestamp::now(),
                desired.hypertable.chunk_interval_hours,
                desired.hypertable.retention_days,
            )
            .await?;
            if changes != provision::PartitionChanges::default() {
                info!(schema = %db.schema, created = ?changes.created, dropped = ?changes.dropped, expired_rows = changes.expired_rows, "partitions maintained");
            }
        }
        Layout::Hypertable { timescaledb } => {
            let changes =
                provision::ensure_hypertable(connection, db, &desired.hypertable, timescaledb)
                    .await?;
            if !changes.is_empty() {
                let changes: Vec<String> = changes.iter().map(|c| c.describe()).collect();
                info!(schema = %db.schema, ?changes, "hypertable brought to the tenant's settings");
            }
            let maintenance =
                provision::ensure_maintenance(connection, db, &desired.hypertable, timescaledb)
                    .await?;
            for (policy, error) in &maintenance.ran {
                match error {
                    None => {
                        info!(schema = %db.schema, ?policy, "the jobs left work overdue: the operator ran the policy itself")
                    }
                    Some(error) => {
                        warn!(schema = %db.schema, ?policy, %error, "the operator's own run of an overdue policy failed")
                    }
                }
            }
            return Ok(Some(maintenance));
        }
    }
    Ok(None)
}

/// The passwords to provision with, whether they are new (to be issued), and the
/// writer's logins.
struct Credentials {
    writer: String,
    reader: String,
    issue: bool,
    /// A rotation asked for waits for the previous one's retirement.
    deferred: bool,
    logins: WriterLogins,
    /// The rotate-credentials value the Secrets are issued for.
    issued_for: String,
    /// `db-writer` and `db-reader` as read: they are written only over exactly these
    /// versions (or created only where they were absent), so a Secret deleted meanwhile
    /// never comes back with the passwords it had.
    read: (Option<Secret>, Option<Secret>),
}

/// The passwords in the tenant's Secrets, or new ones when a Secret is missing or the
/// rotate-credentials annotation has a value they were not issued for — unless the
/// previous rotation still waits for the pods ([`logins::plan`]).
async fn credentials(
    connection: &tokio_postgres::Client,
    db: &TenantDb,
    secrets: &Api<Secret>,
    rotation: &str,
) -> Result<Credentials, Error> {
    let read = |name: &'static str| async move {
        secrets
            .get_opt(name)
            .await
            .map_err(|source| Error::ReadSecret(name.to_string(), source))
    };
    let (writer, reader) = (read(WRITER_SECRET).await?, read(READER_SECRET).await?);
    let current = current_passwords(&writer, &reader, rotation);
    let stored = stored_passwords(&writer, &reader);
    // Only a Secret with both a user and a password says which login pods use.
    let login = writer
        .as_ref()
        .zip(stored.as_ref())
        .and_then(|(secret, _)| {
            Some(SecretLogin {
                user: user_of(secret)?,
                retiring: retiring_of(secret),
            })
        });
    let can_login = match login {
        Some(_) => Vec::new(),
        None => provision::writer_logins_enabled(connection, db).await?,
    };
    let plan = logins::plan(db, login.as_ref(), current.is_none(), &can_login);
    let read = (writer.clone(), reader.clone());
    let issued = |logins: WriterLogins| Credentials {
        writer: new_password(),
        reader: new_password(),
        issue: true,
        deferred: false,
        logins,
        issued_for: rotation.to_string(),
        read: read.clone(),
    };
    Ok(match (plan, current, stored) {
        (Plan::Keep(logins), Some((writer, reader)), _) => Credentials {
            writer,
            reader,
            issue: false,
            deferred: false,
            logins,
            issued_for: rotation.to_string(),
            read: read.clone(),
        },
        (Plan::Deferred(logins), _, Some((writer_password, reader_password))) => Credentials {
            writer: writer_password,
            reader: reader_password,
            issue: false,
            deferred: true,
            logins,
            // Still what they were issued for, so the rotation is noticed once it may run.
            issued_for: issued_for(&writer),
            read: read.clone(),
        },
        (Plan::Issue(logins), ..) => issued(logins),
        // Not reached: a plan to keep needs current passwords, one to defer stored ones.
        (_, _, _) => issued(WriterLogins::first(db)),
    })
}

/// When the credentials were last issued: `now` if they were just now, else what status
/// said.
fn rotated_at(previous: Option<Time>, issued_now: bool, now: Time) -> Option<Time> {
    if issued_now { Some(now) } else { previous }
}

/// The measurement and verdict [`hold_the_rules`] acted on.
struct Held {
    bytes: i64,
    within: bool,
}

/// The writer may INSERT only while the tenant is within its storage quota (with the
/// hysteresis of [`quota::writes_allowed`]) and not suspended. `bytes`: `None` when the
/// schema cannot be measured, which takes INSERT away too.
async fn hold_the_rules(
    connection: &tokio_postgres::Client,
    db: &TenantDb,
    validated: &Validated,
    bytes: Option<i64>,
    quota_bytes: i128,
) -> Result<Held, Error> {
    let allowed_now = provision::writes_allowed(connection, db).await?;
    let within = bytes.is_some_and(|bytes| quota::writes_allowed(bytes, quota_bytes, allowed_now));
    let allowed = within && !validated.suspended;
    if provision::ensure_writes_allowed(connection, db, allowed).await? {
        info!(schema = %db.schema, writes_allowed = allowed, "writer INSERT privilege changed");
    }
    Ok(Held {
        bytes: bytes.unwrap_or(0),
        within,
    })
}

/// [`hold_the_rules`] for a tenant whose tables exist: measured first, where its storage
/// can be measured (`layout`); one that cannot be loses INSERT.
async fn hold_existing(
    connection: &tokio_postgres::Client,
    db: &TenantDb,
    validated: &Validated,
    layout: Option<Layout>,
    quota_bytes: i128,
) -> Result<Held, Error> {
    let bytes = match &layout {
        Some(layout) => Some(provision::measure_schema_bytes(connection, db, layout).await?),
        None => None,
    };
    hold_the_rules(connection, db, validated, bytes, quota_bytes).await
}

/// The rules while no DDL works in the database (TimescaleDB installed, not loaded): a
/// suspended tenant, or a partitioned one over its quota, loses its writer's login. A
/// hypertable cannot be written anyway without TimescaleDB's library.
async fn hold_without_ddl(
    connection: &tokio_postgres::Client,
    db: &TenantDb,
    validated: &Validated,
    quota_bytes: i128,
) -> Result<(), Error> {
    let over_quota = match provision::inspect_table(connection, db, false).await? {
        Some(storage::Table::Partitioned) => {
            let bytes =
                provision::measure_schema_bytes(connection, db, &Layout::Partitions).await?;
            i128::from(bytes) > quota_bytes
        }
        _ => false,
    };
    if validated.suspended || over_quota {
        provision::ensure_writer_locked_out(connection, db).await?;
    }
    Ok(())
}

/// The passwords in the tenant's Secrets, if both are there and were issued for the
/// tenant's current rotate-credentials value; otherwise new ones are due.
fn current_passwords(
    writer: &Option<Secret>,
    reader: &Option<Secret>,
    rotation: &str,
) -> Option<(String, String)> {
    match stored_passwords(writer, reader) {
        Some(passwords) if issued_for(writer) == rotation && issued_for(reader) == rotation => {
            Some(passwords)
        }
        _ => None,
    }
}

/// The passwords in both Secrets, whatever they were issued for.
fn stored_passwords(writer: &Option<Secret>, reader: &Option<Secret>) -> Option<(String, String)> {
    writer
        .as_ref()
        .and_then(password_of)
        .zip(reader.as_ref().and_then(password_of))
}

/// The rotate-credentials value a Secret was issued for.
fn issued_for(secret: &Option<Secret>) -> String {
    secret
        .as_ref()
        .and_then(|s| s.annotations().get(ROTATION_ANNOTATION).cloned())
        .unwrap_or_default()
}

/// The WithinQuota condition. Its message changes only with the whole percentage, so a
/// growing tenant does not rewrite its status on every reconcile.
fn within_quota(bytes: i64, quota_bytes: i128, quota: &str, within: bool) -> Observed {
    let percent = i128::from(bytes) * 100 / quota_bytes.max(1);
    if within {
        Observed::ok(
            WITHIN_QUOTA,
            Reason::WithinQuota,
            format!("database storage at {percent}% of the {quota} quota"),
        )
    } else {
        Observed::not_ok(
            WITHIN_QUOTA,
            Reason::DatabaseStorageExceeded,
            format!(
                "the schema uses {} ({percent}% of the {quota} databaseStorage quota): inserts \
                 are refused, reads keep working; they resume below {RESUME_PERCENT}% \
                 ({}); raise spec.quotas.databaseStorage or shorten spec.database.retentionDays",
                human_bytes(i128::from(bytes)),
                human_bytes(quota_bytes * RESUME_PERCENT / 100)
            ),
        )
    }
}

/// The data side of deleting a tenant: Retain disables the logins, Delete drops it all.
pub async fn ensure_database_released(
    database: &Database,
    tenant: &TenantName,
    drop_data: bool,
) -> Result<(), Error> {
    let db = TenantDb::for_tenant(tenant);
    let mut connection = database.pool.get().await.map_err(Error::Unreachable)?;
    let extension = database
        .timescaledb(&connection)
        .await
        .map_err(Error::Inspect)?;
    if let Extension::NotLoaded { version } = &extension {
        // Dropping or disabling needs DDL, which the database refuses until it loads
        // TimescaleDB again; the tenant stays Terminating with the reason.
        return Err(storage::Error::TimescaleDbNotLoaded(version.clone()).into());
    }
    let timescaledb = extension.loaded().map(|t| t.schema.as_str());
    if drop_data {
        provision::ensure_schema_absent(&mut connection, &db, timescaledb).await?;
    } else {
        provision::ensure_logins_disabled(&connection, &db, timescaledb).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(password: &str, issued_for: &str) -> Option<Secret> {
        let mut secret = Secret::default();
        secret.metadata.annotations = Some(
            [(ROTATION_ANNOTATION.to_string(), issued_for.to_string())]
                .into_iter()
                .collect(),
        );
        secret.data = Some(
            [(
                "password".to_string(),
                ByteString(password.as_bytes().to_vec()),
            )]
            .into_iter()
            .collect(),
        );
        Some(secret)
    }

    #[test]
    fn passwords_are_kept_until_a_secret_is_missing_or_a_rotation_is_asked_for() {
        let (writer, reader) = (secret("w", "2026-11"), secret("r", "2026-11"));
        assert_eq!(
            current_passwords(&writer, &reader, "2026-11"),
            Some(("w".into(), "r".into()))
        );
        assert_eq!(
            current_passwords(&writer, &reader, "2026-12"),
            None,
            "rotation"
        );
        assert_eq!(
            current_passwords(&None, &reader, "2026-11"),
            None,
            "missing"
        );
        let half = secret("w", "2026-12");
        assert_eq!(
            current_passwords(&half, &reader, "2026-12"),
            None,
            "both or neither"
        );
    }

    #[test]
    fn the_rotation_time_moves_only_when_passwords_are_issued() {
        let (before, now) = (
            Time(jiff::Timestamp::from_second(1).unwrap()),
            Time(jiff::Timestamp::from_second(2).unwrap()),
        );
        assert_eq!(
            rotated_at(Some(before.clone()), false, now.clone()),
            Some(before)
        );
        assert_eq!(rotated_at(None, true, now.clone()), Some(now));
        assert_eq!(
            rotated_at(None, false, Time(jiff::Timestamp::from_second(3).unwrap())),
            None
        );
    }

    #[test]
    fn the_quota_condition_says_what_to_do_and_moves_by_whole_percents() {
        let over = within_quota(1_100_000, 1_048_576, "1Mi", false);
        assert!(!over.ok);
        assert_eq!(over.reason, Reason::DatabaseStorageExceeded);
        assert!(
            over.message.contains("raise spec.quotas.databaseStorage"),
            "{}",
            over.message
        );
        assert!(over.message.contains("104%"), "{}", over.message);
        let a = within_quota(300_000, 1_048_576, "1Mi", true);
        let b = within_quota(301_000, 1_048_576, "1Mi", true);
        assert_eq!(a, b, "small growth leaves the condition unchanged");
    }
}
