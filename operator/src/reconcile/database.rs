//! Database (database; reads no Kubernetes object itself): the tenant's schema, roles,
//! tables and partitions or hypertable, its storage quota and maintenance, and the
//! credentials its Secrets carry. `current_passwords`, `rotated_at` and `within_quota`
//! are pure.
//!
//! The Secrets are the only place the passwords are kept; this step decides their
//! values from the Secrets as read ([`super::inputs`]) and `apply` writes them, over the
//! very versions read, while the pipeline still holds the tenant's lock ([`Locked`]).
//! Missing Secrets, or a new value of the rotate-credentials annotation, mean new
//! passwords. A writer login a rotation replaced is retired here once the inputs say no
//! ingest pod uses it any more. Nothing here logs, reports or returns a password but in
//! [`SecretValues`], which only `build` reads.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tracing::{info, warn};

use super::inputs::Inputs;
use super::status::{Observed, Reason, WITHIN_QUOTA};
use crate::crd::{DatabaseStatus, ROTATE_CREDENTIALS_ANNOTATION, SmartRegionTenant};
use crate::database::connect::{Database, Extension};
use crate::database::logins::{self, Plan, SecretLogin, WriterLogins};
use crate::database::names::TenantDb;
use crate::database::new_password;
use crate::database::provision::{self, Desired, Passwords, Provisioning, Writes};
use crate::database::quota::{self, RESUME_PERCENT, human_bytes};
use crate::database::sql::RoleLimits;
use crate::database::storage::{self, Layout};
use crate::database::timescale::HypertableSettings;
use crate::metrics::ErrorLabel;
use crate::resources::secrets::{
    READER_SECRET, ROTATION_ANNOTATION, WRITER_SECRET, password_of, retiring_of, user_of,
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
    /// What the Secrets `db-writer` and `db-reader` are to hold.
    pub secrets: SecretValues,
    /// What the tenant shares and what is shared with it, as enforced now.
    pub sharing: SharingOutcome,
}

/// The sharing the database step enforced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharingOutcome {
    /// Each of the tenant's own shares with the consumers that may read it now; `None`
    /// when the tenant may not share (its tier or spec): none of its views exist.
    pub provided: Option<Vec<(String, Vec<TenantName>)>>,
    /// What is shared with the tenant and its reader may read now: (provider, share).
    pub readable: Vec<(TenantName, String)>,
    /// A provider was busy: its grants to this tenant's reader wait for a moment later.
    pub busy: bool,
}

/// The values of `db-writer` and `db-reader` the database now agrees with, and the
/// versions of the Secrets they were decided from (apply writes only over those).
#[derive(Clone, PartialEq)]
pub struct SecretValues {
    pub writer_user: String,
    pub writer_password: String,
    pub reader_user: String,
    pub reader_password: String,
    /// The rotate-credentials value they were issued for.
    pub issued_for: String,
    /// Writer logins a rotation replaced that wait for the ingest pods.
    pub retiring: Vec<String>,
    pub writer_version: Option<String>,
    pub reader_version: Option<String>,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValues")
            .field("writer_user", &self.writer_user)
            .field("reader_user", &self.reader_user)
            .field("retiring", &self.retiring)
            .finish_non_exhaustive()
    }
}

/// The tenant's advisory lock, held in one pooled session from the database step until
/// `apply` has written the Secrets: two operators (a leader hand-over) never interleave
/// reading the Secrets, setting passwords and writing the Secrets.
pub struct Locked {
    connection: deadpool_postgres::Object,
    db: TenantDb,
}

impl Locked {
    pub async fn take(database: &Database, tenant: &TenantName) -> Result<Locked, Error> {
        let db = TenantDb::for_tenant(tenant);
        let connection = database.pool.get().await.map_err(Error::Unreachable)?;
        provision::lock_tenant(&connection, &db).await?;
        Ok(Locked { connection, db })
    }

    /// Gives the lock back; the pooled session outlives the reconcile.
    pub async fn release(self) -> Result<(), Error> {
        provision::unlock_tenant(&self.connection, &self.db).await?;
        Ok(())
    }
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

/// Makes the tenant's database objects exist, holds its storage quota and suspension,
/// maintains its storage, and decides its credentials. Suspension and the quota are
/// enforced on an existing schema before anything else, so a later step that fails
/// (TimescaleDB refusing a statement, say) never leaves a suspended or over-quota
/// writer with INSERT.
/// (Long: one call per stage, in the order the rules require, and the outcome they add
/// up to.)
pub async fn ensure_database(
    locked: &mut Locked,
    database: &Database,
    tenant: &SmartRegionTenant,
    validated: &Validated,
    inputs: &Inputs,
    sharing: &Sharing,
    open: &[crate::database::datasets::Dataset],
) -> Result<Outcome, Error> {
    let connection = &mut locked.connection;
    let db = TenantDb::for_tenant(&validated.name);
    // Every later statement may act as the tenant's roles: the admin's membership first.
    provision::ensure_admin_membership(connection, &db).await?;
    let quota_bytes = validated.limits.database_storage.whole_units();
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
    let rotation = tenant
        .annotations()
        .get(ROTATE_CREDENTIALS_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let mut credentials = credentials(connection, &db, inputs, &rotation).await?;
    let desired = desired(
        validated,
        found.layout.clone(),
        found.timescaledb_schema.clone(),
    );
    let provisioned =
        provision_schema(connection, &db, validated, &found, &credentials, &desired).await?;
    retire_previous_logins(connection, &db, inputs, &mut credentials).await?;
    let sharing = ensure_sharing(connection, &db, validated, sharing).await?;
    if crate::database::dataset_provision::ensure_datasets_published(
        connection,
        &db,
        open,
        found.timescaledb_schema.as_deref(),
    )
    .await?
    {
        info!(schema = %db.schema, datasets = open.len(), "open datasets brought to what the tenant publishes");
    }
    let maintenance = maintain_storage(connection, &db, &found.layout, &desired).await?;
    let (maintained, maintenance_status) = maintenance_condition(maintenance.as_ref(), recorded);
    let held = match found.held {
        Some(held) => held,
        // A schema created now: measured and held to the rules now.
        None => {
            let bytes = provision::measure_schema_bytes(connection, &db, &found.layout).await?;
            hold_the_rules(connection, &db, validated, Some(bytes), quota_bytes).await?
        }
    };
    let inserted = provision::rows_inserted(connection, &db, &found.layout).await?;
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
            validated.limits.database_storage.as_str(),
            held.within,
        ),
        maintained,
        maintenance,
        secrets: SecretValues {
            writer_user: credentials.logins.active.clone(),
            writer_password: credentials.writer,
            reader_user: db.reader.clone(),
            reader_password: credentials.reader,
            issued_for: credentials.issued_for,
            retiring: credentials.logins.retiring,
            writer_version: inputs.writer.as_ref().and_then(|s| s.resource_version()),
            reader_version: inputs.reader.as_ref().and_then(|s| s.resource_version()),
        },
        sharing,
    })
}

/// The tenant's side of sharing: what it provides and what is shared with it.
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    pub declared: Vec<super::sharing::Declared>,
    pub with_me: Vec<(TenantName, String)>,
    /// The consumers that are tenants now, not being deleted.
    pub consumers_present: Vec<String>,
}

/// As a provider: its shares' views, readable by the readers of the consumers that exist
/// (none when its tier forbids sharing: the views go). As a consumer: its reader's
/// grants on what is shared with it.
async fn ensure_sharing(
    connection: &mut tokio_postgres::Client,
    db: &TenantDb,
    validated: &Validated,
    sharing: &Sharing,
) -> Result<SharingOutcome, Error> {
    use crate::database::share_provision;
    let mut provided = Vec::new();
    let mut enforced = Vec::new();
    if validated.limits.sharing {
        for declared in &sharing.declared {
            // A consumer deleted with Retain keeps its roles: only a tenant that is
            // there is granted anything.
            let readers: Vec<String> = declared
                .consumers
                .iter()
                .filter(|consumer| {
                    sharing
                        .consumers_present
                        .iter()
                        .any(|c| c == consumer.as_str())
                })
                .map(|consumer| TenantDb::for_tenant(consumer).reader)
                .collect();
            let existing = share_provision::existing_roles(connection, db, &readers).await?;
            let active = declared
                .consumers
                .iter()
                .filter(|consumer| existing.contains(&TenantDb::for_tenant(consumer).reader))
                .cloned()
                .collect();
            provided.push((declared.share.clone(), existing));
            enforced.push((declared.share.name.clone(), active));
        }
    }
    if share_provision::ensure_shares_provided(connection, db, &provided)
        .await?
        .changed
    {
        info!(schema = %db.schema, shares = provided.len(), "shared views brought to the tenant's shares");
    }
    let with: Vec<(TenantDb, String)> = sharing
        .with_me
        .iter()
        .map(|(provider, share)| (TenantDb::for_tenant(provider), share.clone()))
        .collect();
    let consumed = share_provision::ensure_shared_with(connection, db, &with).await?;
    if consumed.changed {
        info!(schema = %db.schema, "the reader's grants brought to what is shared with the tenant");
    }
    Ok(SharingOutcome {
        provided: validated.limits.sharing.then_some(enforced),
        readable: consumed
            .readable
            .iter()
            .map(|&index| sharing.with_me[index].clone())
            .collect(),
        busy: consumed.busy,
    })
}

/// The roles, schema and tables as the tenant wants them, with the credentials decided.
async fn provision_schema(
    connection: &mut tokio_postgres::Client,
    db: &TenantDb,
    validated: &Validated,
    found: &Found,
    credentials: &Credentials,
    desired: &Desired,
) -> Result<provision::Provisioned, Error> {
    let provisioned = provision::ensure_schema_exists(
        connection,
        db,
        &Provisioning {
            desired,
            table: found.table,
            logins: &credentials.logins,
            passwords: Passwords {
                writer: &credentials.writer,
                reader: &credentials.reader,
            },
            credentials: if credentials.issue {
                provision::Credentials::Issue
            } else {
                provision::Credentials::Keep
            },
            writes: if validated.suspended {
                Writes::Refused
            } else {
                Writes::Allowed
            },
        },
    )
    .await?;
    if provisioned.changed {
        info!(schema = %db.schema, storage = ?found.layout.storage(), passwords_issued = provisioned.passwords_set, writer_login = %credentials.logins.active, retiring = ?credentials.logins.retiring, "database objects provisioned");
    }
    if credentials.deferred {
        info!(schema = %db.schema, retiring = ?credentials.logins.retiring, "rotation waits until the previous login is retired");
    }
    Ok(provisioned)
}

/// Retires the writer logins a rotation replaced once no ingest pod runs from older
/// Secrets than the current ones (the inputs looked); the Secret written after this step
/// then names none as retiring.
async fn retire_previous_logins(
    connection: &mut tokio_postgres::Client,
    db: &TenantDb,
    inputs: &Inputs,
    credentials: &mut Credentials,
) -> Result<(), Error> {
    if !inputs.retirement_due || credentials.logins.retiring.is_empty() || credentials.issue {
        return Ok(());
    }
    let retiring: Vec<String> = credentials
        .logins
        .retiring
        .iter()
        .filter(|role| **role != credentials.logins.active && db.writer_roles().contains(role))
        .cloned()
        .collect();
    provision::ensure_logins_retired(connection, db, &retiring).await?;
    info!(schema = %db.schema, retired = ?retiring, "previous writer login retired");
    credentials.logins.retiring.clear();
    Ok(())
}

/// `StorageMaintained` and `status.database.maintenance` from what maintenance found.
fn maintenance_condition(
    maintenance: Option<&provision::Maintenance>,
    recorded: Option<&DatabaseStatus>,
) -> (Observed, Option<crate::crd::MaintenanceStatus>) {
    match maintenance {
        Some(maintenance) => {
            let previous_run = recorded
                .and_then(|d| d.maintenance.as_ref())
                .and_then(|m| m.operator_run_at.as_ref());
            let (observed, status) =
                super::maintenance::hypertable(maintenance, previous_run, jiff::Timestamp::now());
            (observed, Some(status))
        }
        None => (super::maintenance::partitions(), None),
    }
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
}

/// The passwords in the tenant's Secrets, or new ones when a Secret is missing or the
/// rotate-credentials annotation has a value they were not issued for — unless the
/// previous rotation still waits for the pods ([`logins::plan`]).
async fn credentials(
    connection: &tokio_postgres::Client,
    db: &TenantDb,
    inputs: &Inputs,
    rotation: &str,
) -> Result<Credentials, Error> {
    let (writer, reader) = (inputs.writer.clone(), inputs.reader.clone());
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
    let issued = |logins: WriterLogins| Credentials {
        writer: new_password(),
        reader: new_password(),
        issue: true,
        deferred: false,
        logins,
        issued_for: rotation.to_string(),
    };
    Ok(match (plan, current, stored) {
        (Plan::Keep(logins), Some((writer, reader)), _) => Credentials {
            writer,
            reader,
            issue: false,
            deferred: false,
            logins,
            issued_for: rotation.to_string(),
        },
        (Plan::Deferred(logins), _, Some((writer_password, reader_password))) => Credentials {
            writer: writer_password,
            reader: reader_password,
            issue: false,
            deferred: true,
            logins,
            // Still what they were issued for, so the rotation is noticed once it may run.
            issued_for: issued_for(&writer),
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
    // Whatever the policy: what it shared is no longer readable by others, and what
    // others shared with it is no longer readable by its reader.
    crate::database::share_provision::ensure_shares_absent(&connection, &db).await?;
    crate::database::share_provision::ensure_shared_revoked(&connection, &db).await?;
    crate::database::dataset_provision::ensure_datasets_absent(&connection, &db).await?;
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
