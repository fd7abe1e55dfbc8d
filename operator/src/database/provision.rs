//! Acts on the database: `inspect_table`, `ensure_schema_exists`, `ensure_hypertable`,
//! `ensure_partitions`, `ensure_writes_allowed`, `measure_schema_bytes`, `rows_inserted`,
//! `writer_logins_enabled`, `ensure_logins_retired`, `ensure_logins_disabled` and
//! `ensure_schema_absent`. Each is idempotent; changes run in one transaction under the
//! tenant's advisory lock, and a tenant already in the desired state costs reads only.

use jiff::Timestamp;
use tokio_postgres::{Client, GenericClient};

pub use super::logins::WriterLogins;
use super::names::{TenantDb, quote};
use super::partitions::{self, Partition};
use super::scram_verifier;
use super::sql::{self, RoleLimits, SCHEMA_VERSION};
use super::storage::{Layout, Table};
use super::timescale::{self, Bind, Change, HypertableSettings, OWNER_CONNECTION_LIMIT};
use crate::crd::Storage;

#[derive(Debug, thiserror::Error)]
#[error("failed to {action} for schema {schema}")]
pub struct Error {
    action: &'static str,
    schema: String,
    #[source]
    pub source: tokio_postgres::Error,
}

impl Error {
    /// The connection failed, rather than a statement: no SQLSTATE, or one of class 08
    /// (connection exception) or 57 (the server shutting down or restarting ended it:
    /// `terminating connection due to administrator command`).
    pub fn is_connection(&self) -> bool {
        self.source
            .code()
            .is_none_or(|code| matches!(&code.code()[..2], "08" | "57"))
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

pub(super) fn failed(
    action: &'static str,
    db: &TenantDb,
) -> impl Fn(tokio_postgres::Error) -> Error {
    let schema = db.schema.clone();
    move |source| Error {
        action,
        schema: schema.clone(),
        source,
    }
}

/// When the admin is refused its own tenant's schema (it should act with the owner's
/// privileges), says in the log who the connection acts as and whether it has them: the
/// refusal then points at its cause (a membership revoked by hand, a role left set).
async fn explain_refusal(client: &Client, db: &TenantDb, error: &tokio_postgres::Error) {
    if error.code() != Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        return;
    }
    match client
        .query_one(
            "SELECT current_user::text, session_user::text, pg_has_role(current_user, $1, 'USAGE'), \
                    (SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
                     WHERE r.rolname = $1 AND m.member = (SELECT oid FROM pg_roles WHERE rolname = session_user))",
            &[&db.owner],
        )
        .await
    {
        Ok(row) => tracing::warn!(
            schema = %db.schema,
            current_user = row.get::<_, String>(0),
            session_user = row.get::<_, String>(1),
            has_owner_privileges = row.get::<_, bool>(2),
            memberships_of_login = row.get::<_, i64>(3),
            "refused the tenant's own schema"
        ),
        Err(error) => tracing::warn!(schema = %db.schema, %error, "refused the tenant's own schema; could not say as whom"),
    }
}

/// Passwords for login roles that are created now (or rotated); never logged. The
/// writer's is for the active one of `WriterLogins`.
pub struct Passwords<'a> {
    pub writer: &'a str,
    pub reader: &'a str,
}

/// What the tenant's database objects should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub limits: RoleLimits,
    pub layout: Layout,
    /// TimescaleDB's schema, when the database has it: on the login roles' search path
    /// (also for partitioned tenants, who may use `time_bucket` too).
    pub timescaledb_schema: Option<String>,
    pub hypertable: HypertableSettings,
}

/// What `ensure_schema_exists` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// Statements ran (the state was not already as desired).
    pub changed: bool,
    /// The login roles got the given passwords (created, or rotated).
    pub passwords_set: bool,
}

/// The tenant's `measurements` table as the database has it, if it exists.
/// `timescaledb`: the database has the extension (only then can a hypertable be seen).
pub async fn inspect_table(
    client: &Client,
    db: &TenantDb,
    timescaledb: bool,
) -> Result<Option<Table>> {
    let wrap = failed("inspect the measurements table", db);
    let kind: Option<String> = client
        .query_opt(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'measurements'",
            &[&db.schema],
        )
        .await
        .map_err(&wrap)?
        .map(|row| row.get(0));
    Ok(match kind.as_deref() {
        None => None,
        Some("p") => Some(Table::Partitioned),
        Some(_) if timescaledb => {
            let hypertable: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables \
                     WHERE hypertable_schema = $1 AND hypertable_name = 'measurements')",
                    &[&db.schema],
                )
                .await
                .map_err(&wrap)?
                .get(0);
            Some(if hypertable {
                Table::Hypertable
            } else {
                Table::Ordinary
            })
        }
        Some(_) => Some(Table::Ordinary),
    })
}

async fn current_user(client: &impl GenericClient) -> Result<String, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .await?
        .get(0))
}

/// Whether provisioning gives the login roles the passwords it is handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Roles that exist keep their passwords (adoption after a Retain, a later reconcile);
    /// only roles created now get the new ones.
    Keep,
    /// A rotation: the active writer login and the reader get the new passwords.
    Issue,
}

/// Whether the writer may INSERT into a `measurements` table created now (later, only
/// the quota and suspension change it: [`ensure_writes_allowed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    Allowed,
    Refused,
}

/// What the catalogs say of a tenant before provisioning: read under the tenant's lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The role the session acts as (`current_user`).
    pub admin: String,
    /// Those of the tenant's roles that exist.
    pub roles: Vec<String>,
    /// `measurements` exists.
    pub measurements: bool,
}

/// A statement of a provisioning plan, with the parameters it binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    Sql(String),
    /// TimescaleDB's `create_hypertable` as the owner: `$1` the relation, `$2` hours.
    CreateHypertable {
        statement: String,
        relation: String,
        hours: i32,
    },
}

/// What provisioning is asked to make of a tenant.
pub struct Provisioning<'a> {
    pub desired: &'a Desired,
    /// What [`inspect_table`] found.
    pub table: Option<Table>,
    /// Which writer roles log in; the active one gets the writer's password when set.
    pub logins: &'a WriterLogins,
    /// For login roles created now (or rotated); never logged.
    pub passwords: Passwords<'a>,
    pub credentials: Credentials,
    pub writes: Writes,
}

/// The statements that bring a tenant from `catalog` to what `request` asks (pure).
/// Returns them with whether the login roles get the given passwords.
pub fn plan_schema(
    db: &TenantDb,
    catalog: &Catalog,
    request: &Provisioning<'_>,
) -> (Vec<Planned>, bool) {
    let Provisioning {
        desired,
        logins,
        passwords,
        credentials,
        writes,
        ..
    } = request;
    let exists = |role: &String| catalog.roles.contains(role);
    let rotate = *credentials == Credentials::Issue;
    let mut statements = Vec::new();
    if !exists(&db.owner) {
        statements.push(sql::create_owner_role(&db.owner));
    }
    for role in db.writer_roles() {
        if !exists(&role) {
            statements.push(sql::create_nologin_role(&role));
        }
    }
    // The writer's roles are created without a password; the active login gets the
    // writer's. The others keep theirs: pods may still be using a retiring one.
    let mut passwords_set = false;
    if rotate || !exists(&logins.active) {
        statements.push(sql::set_password(
            &logins.active,
            &scram_verifier(passwords.writer),
        ));
        passwords_set = true;
    }
    let reader = scram_verifier(passwords.reader);
    if !exists(&db.reader) {
        statements.push(sql::create_login_role(&db.reader, &reader));
        passwords_set = true;
    } else if rotate {
        statements.push(sql::set_password(&db.reader, &reader));
        passwords_set = true;
    }
    // The admin acts as the owner, and may end the login roles' sessions (Retain) and
    // drop what they own (Delete); a no-op for a superuser.
    statements.push(sql::grant_roles_to_admin(&db.roles()));
    statements.extend(sql::schema_statements(
        db,
        &desired.limits,
        desired.layout.storage(),
        desired.timescaledb_schema.as_deref(),
        logins,
        &catalog.admin,
    ));
    let mut planned: Vec<Planned> = statements.into_iter().map(Planned::Sql).collect();
    if !catalog.measurements {
        if let Layout::Hypertable { timescaledb } = &desired.layout {
            planned.extend([
                Planned::Sql(sql::as_role(&db.owner)),
                Planned::CreateHypertable {
                    statement: timescale::create_hypertable(timescaledb),
                    relation: timescale::relation(db),
                    hours: desired.hypertable.chunk_interval_hours,
                },
                Planned::Sql(sql::as_role(&catalog.admin)),
            ]);
        }
        // Later only the quota and suspension decide.
        planned.push(Planned::Sql(sql::writes_statement(
            db,
            *writes == Writes::Allowed,
        )));
    }
    (planned, passwords_set)
}

/// Brings the tenant's roles, schema and tables to the desired state ([`plan_schema`]),
/// in one transaction under the tenant's lock; reads only when they already are.
/// `table` is what [`inspect_table`] found.
pub async fn ensure_schema_exists(
    client: &mut Client,
    db: &TenantDb,
    request: &Provisioning<'_>,
) -> Result<Provisioned> {
    let wrap = failed("provision the roles, schema and tables", db);
    if request.credentials == Credentials::Keep
        && request.table.is_some()
        && is_current(client, db, request.desired, request.logins)
            .await
            .map_err(&wrap)?
    {
        return Ok(Provisioned::default());
    }
    let transaction = client.transaction().await.map_err(&wrap)?;
    lock(&transaction, db).await.map_err(&wrap)?;
    let catalog = Catalog {
        admin: current_user(&transaction).await.map_err(&wrap)?,
        roles: transaction
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
                &[&db.roles()],
            )
            .await
            .map_err(&wrap)?
            .iter()
            .map(|row| row.get(0))
            .collect(),
        measurements: table_exists(&transaction, db, "measurements")
            .await
            .map_err(&wrap)?,
    };
    let (planned, passwords_set) = plan_schema(db, &catalog, request);
    for statement in &planned {
        match statement {
            Planned::Sql(text) => transaction.batch_execute(text).await.map(|_| ()),
            Planned::CreateHypertable {
                statement,
                relation,
                hours,
            } => transaction
                .execute(statement, &[relation, hours])
                .await
                .map(|_| ()),
        }
        .map_err(&wrap)?;
    }
    transaction.commit().await.map_err(&wrap)?;
    Ok(Provisioned {
        changed: true,
        passwords_set,
    })
}

/// Takes the tenant's advisory lock for the session (the transactions inside take it
/// again, which the same session may). Waits at most the session's lock timeout.
pub async fn lock_tenant(client: &Client, db: &TenantDb) -> Result<()> {
    session_lock(client, db, "pg_advisory_lock", "take the tenant's lock").await
}

/// Gives back [`lock_tenant`]'s lock.
pub async fn unlock_tenant(client: &Client, db: &TenantDb) -> Result<()> {
    session_lock(
        client,
        db,
        "pg_advisory_unlock",
        "give back the tenant's lock",
    )
    .await
}

async fn session_lock(
    client: &Client,
    db: &TenantDb,
    function: &str,
    action: &'static str,
) -> Result<()> {
    client
        .execute(
            &format!("SELECT {function}(hashtext($1))"),
            &[&db.lock_key()],
        )
        .await
        .map_err(failed(action, db))?;
    Ok(())
}

/// Makes the admin a member of every tenant role that exists (it acts as the owner,
/// ends the logins' sessions and drops what they own), before any statement relies on
/// it. Reads only when it already is. A no-op for a superuser.
pub async fn ensure_admin_membership(client: &Client, db: &TenantDb) -> Result<()> {
    let wrap = failed("make the admin a member of the tenant's roles", db);
    let missing: Vec<String> = client
        .query(
            "SELECT r.rolname::text FROM pg_roles r WHERE r.rolname = ANY($1) \
               AND NOT pg_has_role(current_user, r.oid, 'MEMBER')",
            &[&db.roles()],
        )
        .await
        .map_err(&wrap)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !missing.is_empty() {
        client
            .batch_execute(&sql::grant_roles_to_admin(&missing))
            .await
            .map_err(&wrap)?;
    }
    Ok(())
}

async fn lock(client: &impl GenericClient, db: &TenantDb) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&db.lock_key()],
        )
        .await
        .map(|_| ())
}

async fn table_exists(
    client: &impl GenericClient,
    db: &TenantDb,
    table: &str,
) -> Result<bool, tokio_postgres::Error> {
    let name = format!("{}.{}", quote(&db.schema), quote(table));
    let found: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&name])
        .await?
        .get(0);
    Ok(found.is_some())
}

/// Everything `ensure_schema_exists` sets, read back: true when nothing needs doing.
/// (Long: one read-back of everything `plan_schema` sets, compared in one place so that
/// the two stay in step.)
async fn is_current(
    client: &Client,
    db: &TenantDb,
    desired: &Desired,
    logins: &WriterLogins,
) -> Result<bool, tokio_postgres::Error> {
    // The login roles' settings as PostgreSQL stores them, computed by the server
    // (identifiers in the search path as quote_ident writes them).
    let roles = client
        .query(
            "SELECT r.rolname::text, r.rolcanlogin, r.rolconnlimit, \
                    coalesce(s.setconfig, '{}'::text[]), \
                    ARRAY['search_path=' || concat_ws(', ', quote_ident($2), quote_ident($3)), \
                          'statement_timeout=' || $4], \
                    r.rolname = $5 OR r.rolinherit AND EXISTS (\
                        SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                        WHERE m.member = r.oid AND g.rolname = $5) \
             FROM pg_roles r \
             LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 \
             WHERE r.rolname = ANY($1)",
            &[
                &db.roles(),
                &db.schema,
                &desired.timescaledb_schema,
                &desired.limits.statement_timeout_ms.to_string(),
                &db.writer,
            ],
        )
        .await?;
    let role_ok = |name: &str| {
        roles.iter().any(|row| {
            let (rolname, login, limit, mut config, mut wanted, writes): (
                String,
                bool,
                i32,
                Vec<String>,
                Vec<String>,
                bool,
            ) = (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            );
            config.sort();
            wanted.sort();
            rolname == name
                && if name == db.owner {
                    match desired.layout.storage() {
                        Storage::Hypertable => login && limit == OWNER_CONNECTION_LIMIT,
                        Storage::Partitions => !login,
                    }
                } else {
                    let writer_role = db.writer_roles().iter().any(|role| role == name);
                    let login_wanted = !writer_role || logins.enabled(name);
                    login == login_wanted
                        && (!writer_role || writes)
                        && limit == desired.limits.connection_limit
                        && config == wanted
                }
        })
    };
    if !db.roles().iter().all(|role| role_ok(role)) {
        return Ok(false);
    }
    let owner: Option<String> = client
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
            &[&db.schema],
        )
        .await?
        .map(|row| row.get(0));
    if owner.as_ref() != Some(&db.owner) || !table_exists(client, db, "schema_version").await? {
        return Ok(false);
    }
    let version: Option<i32> = client
        .query_one(
            &format!(
                "SELECT max(version) FROM {}.schema_version",
                quote(&db.schema)
            ),
            &[],
        )
        .await?
        .get(0);
    Ok(version == Some(SCHEMA_VERSION))
}

/// TimescaleDB only: the hypertable's chunk interval, compression and jobs as
/// `settings` want them. Reads only when they are (the steady state); otherwise changes
/// exactly what differs, as the owner role, under the tenant's lock. `timescaledb` is
/// the extension's schema.
pub async fn ensure_hypertable(
    client: &mut Client,
    db: &TenantDb,
    settings: &HypertableSettings,
    timescaledb: &str,
) -> Result<Vec<Change>> {
    let wrap = failed(
        "bring the hypertable and its jobs to the tenant's settings",
        db,
    );
    let row = client
        .query_one(
            timescale::HYPERTABLE_QUERY,
            &[&db.schema, &settings.chunk_interval_hours],
        )
        .await
        .map_err(&wrap)?;
    let jobs = client
        .query(
            timescale::JOBS_QUERY,
            &[
                &db.schema,
                &settings.retention_days,
                &settings.compress_after_days,
            ],
        )
        .await
        .map_err(&wrap)?
        .iter()
        .map(|job| timescale::Job {
            id: job.get(0),
            proc_name: job.get(1),
            scheduled: job.get(2),
            as_wanted: job.get::<_, Option<bool>>(3).unwrap_or(false),
        })
        .collect();
    let observed = timescale::Observed {
        chunk_interval_as_wanted: row.get(0),
        compression_enabled: row.get(1),
        jobs,
    };
    let changes = timescale::plan(&observed);
    if changes.is_empty() {
        return Ok(changes);
    }
    let transaction = client.transaction().await.map_err(&wrap)?;
    lock(&transaction, db).await.map_err(&wrap)?;
    transaction
        .batch_execute(&sql::as_role(&db.owner))
        .await
        .map_err(&wrap)?;
    for change in &changes {
        let (text, bind) = timescale::statement(db, change, settings, timescaledb);
        match bind {
            Bind::None => transaction.batch_execute(&text).await.map(|_| 0),
            Bind::Relation(relation, value) => {
                transaction.execute(&text, &[&relation, &value]).await
            }
            Bind::JobSetting(job, value) => transaction.execute(&text, &[&job, &value]).await,
            Bind::Job(job) => transaction.execute(&text, &[&job]).await,
        }
        .map_err(&wrap)?;
    }
    transaction.commit().await.map_err(&wrap)?;
    Ok(changes)
}

/// How long the operator's own run of a due policy may take, per reconcile. The policies
/// commit chunk by chunk, so a run stopped here has kept what it did, and the next
/// reconcile goes on from there.
pub const FOREGROUND_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What `ensure_maintenance` found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct Maintenance {
    pub jobs: Vec<timescale::JobHealth>,
    /// Overdue after the operator's own run, if it ran.
    pub overdue: timescale::Overdue,
    /// The policies the operator ran itself now, each with its error if it failed.
    pub ran: Vec<(crate::crd::MaintenancePolicy, Option<String>)>,
}

/// TimescaleDB only: reads how TimescaleDB records the tenant's jobs and what they
/// achieved (reads only, in the steady state); where work is overdue, runs the due
/// policy itself in this session (which holds the tenant's lock: [`lock_tenant`]), as the
/// owner role, for at most [`FOREGROUND_RUN_TIMEOUT`], then measures again.
pub async fn ensure_maintenance(
    client: &Client,
    db: &TenantDb,
    settings: &HypertableSettings,
    timescaledb: &str,
) -> Result<Maintenance> {
    let wrap = failed("read the hypertable's jobs and chunks", db);
    let jobs: Vec<timescale::JobHealth> = client
        .query(timescale::JOB_HEALTH_QUERY, &[&db.schema])
        .await
        .map_err(&wrap)?
        .iter()
        .filter_map(|row| {
            Some(timescale::JobHealth {
                id: row.get(0),
                policy: timescale::policy_of(row.get(1))?,
                schedule_seconds: row.get(2),
                last_start: row.get(3),
                last_success: row.get(4),
                last_status: row.get(5),
                consecutive_failures: row.get(6),
                last_error: row.get(7),
            })
        })
        .collect();
    let grace = |policy| {
        jobs.iter()
            .find(|job| job.policy == policy)
            .map_or(86_400.0, timescale::JobHealth::grace_seconds)
    };
    let measure = || async {
        let row = client
            .query_one(
                timescale::OVERDUE_QUERY,
                &[
                    &db.schema,
                    &settings.compress_after_days,
                    &settings.retention_days,
                    &grace(crate::crd::MaintenancePolicy::Compression),
                    &grace(crate::crd::MaintenancePolicy::Retention),
                ],
            )
            .await
            .map_err(&wrap)?;
        Ok::<_, Error>(timescale::Overdue {
            compression: row.get(0),
            retention: row.get(1),
        })
    };
    let mut overdue = measure().await?;
    let mut ran = Vec::new();
    for policy in overdue.policies() {
        let Some(job) = jobs.iter().find(|job| job.policy == policy) else {
            continue;
        };
        let result = run_job_in_foreground(client, db, timescaledb, job.id).await;
        ran.push((policy, result.err().map(|error| error_text(&error))));
    }
    if !ran.is_empty() {
        overdue = measure().await?;
    }
    Ok(Maintenance { jobs, overdue, ran })
}

/// A driver error as one line: the server's message where there is one.
fn error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => db_error.message().to_string(),
        None => error.to_string(),
    }
}

/// `CALL run_job` as the job's owner, with a statement timeout, in the session that holds
/// the tenant's lock. The session is given back as it was, whatever happened.
async fn run_job_in_foreground(
    client: &Client,
    db: &TenantDb,
    timescaledb: &str,
    job: i32,
) -> Result<(), tokio_postgres::Error> {
    let timeout_ms = FOREGROUND_RUN_TIMEOUT.as_millis();
    let attempt = async {
        client
            .batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
            .await?;
        client
            .batch_execute(&format!("SET ROLE {}", quote(&db.owner)))
            .await?;
        // The procedure commits as it goes: simple protocol, no transaction block.
        client
            .batch_execute(&timescale::run_job_statement(timescaledb, job))
            .await
    };
    let result = attempt.await;
    let cleanup = client
        .batch_execute("RESET ROLE; RESET statement_timeout")
        .await;
    result.and(cleanup)
}

/// What `ensure_partitions` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionChanges {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Rows past retention deleted from the default partition.
    pub expired_rows: u64,
}

/// Plain PostgreSQL only: partitions ahead of `now`, none wholly past retention, and no
/// row past retention left in the default partition.
pub async fn ensure_partitions(
    client: &mut Client,
    db: &TenantDb,
    now: Timestamp,
    chunk_interval_hours: i32,
    retention_days: i32,
) -> Result<PartitionChanges> {
    let wrap = failed("maintain the partitions", db);
    let existing: Vec<Partition> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = 'measurements'",
            &[&db.schema],
        )
        .await
        .map_err(&wrap)?
        .iter()
        .filter_map(|row| Partition::from_name(row.get(0)))
        .collect();
    let plan = partitions::plan(&existing, now, chunk_interval_hours, retention_days);
    let mut changes = PartitionChanges::default();
    let transaction = client.transaction().await.map_err(&wrap)?;
    if !plan.create.is_empty() || !plan.drop.is_empty() {
        lock(&transaction, db).await.map_err(&wrap)?;
        let admin = current_user(&transaction).await.map_err(&wrap)?;
        transaction
            .batch_execute(&sql::as_role(&db.owner))
            .await
            .map_err(&wrap)?;
        for partition in &plan.create {
            let [create, moved, attach] = sql::create_partition_statements(db, partition);
            transaction.batch_execute(&create).await.map_err(&wrap)?;
            let (start, end) = (
                std::time::SystemTime::from(partition.start),
                std::time::SystemTime::from(partition.end),
            );
            transaction
                .execute(&moved, &[&start, &end])
                .await
                .map_err(&wrap)?;
            transaction.batch_execute(&attach).await.map_err(&wrap)?;
            changes.created.push(partition.name());
        }
        // Dropped as the admin: a partition attached by hand may belong to somebody else.
        transaction
            .batch_execute(&sql::as_role(&admin))
            .await
            .map_err(&wrap)?;
        for partition in &plan.drop {
            transaction
                .batch_execute(&sql::drop_partition_statement(db, partition))
                .await
                .map_err(&wrap)?;
            changes.dropped.push(partition.name());
        }
    }
    if let Some(cutoff) = plan.cutoff {
        changes.expired_rows = transaction
            .execute(
                &format!(
                    "DELETE FROM {}.measurements_default WHERE time < $1",
                    quote(&db.schema)
                ),
                &[&std::time::SystemTime::from(cutoff)],
            )
            .await
            .map_err(&wrap)?;
    }
    transaction.commit().await.map_err(&wrap)?;
    Ok(changes)
}

/// Bytes the tenant's tables (with indexes and TOAST, and on TimescaleDB the chunks,
/// compressed ones included) take on disk; 0 for a schema that does not exist.
pub async fn measure_schema_bytes(client: &Client, db: &TenantDb, layout: &Layout) -> Result<i64> {
    let wrap = failed("measure the size", db);
    let row = match layout {
        Layout::Partitions => {
            client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
                    &[&db.schema],
                )
                .await
        }
        Layout::Hypertable { timescaledb } => {
            client
                .query_one(
                    &timescale::usage_query(timescaledb),
                    &[&db.schema, &timescale::relation(db)],
                )
                .await
        }
    };
    match row {
        Ok(row) => Ok(row.get(0)),
        Err(error) => {
            explain_refusal(client, db, &error).await;
            Err(wrap(error))
        }
    }
}

/// Rows ever inserted into the tenant's measurements, as PostgreSQL counts them
/// (`n_tup_ins` of every partition or chunk).
pub async fn rows_inserted(client: &Client, db: &TenantDb, layout: &Layout) -> Result<i64> {
    let wrap = failed("count the rows inserted", db);
    let row = match layout {
        Layout::Partitions => {
            client
                .query_one(
                    "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables \
                     WHERE schemaname = $1 AND relname LIKE 'measurements%'",
                    &[&db.schema],
                )
                .await
        }
        Layout::Hypertable { timescaledb } => {
            client
                .query_one(
                    &timescale::rows_inserted_query(timescaledb),
                    &[&timescale::relation(db)],
                )
                .await
        }
    }
    .map_err(wrap)?;
    Ok(row.get(0))
}

/// Gives or takes the writer's INSERT. Returns whether it changed anything.
pub async fn ensure_writes_allowed(client: &Client, db: &TenantDb, allowed: bool) -> Result<bool> {
    let wrap = failed("change the writer's INSERT privilege", db);
    if writes_allowed(client, db).await? == allowed {
        return Ok(false);
    }
    client
        .batch_execute(&sql::writes_statement(db, allowed))
        .await
        .map_err(&wrap)?;
    Ok(true)
}

/// Whether the writer may INSERT into both tables ingest fills.
pub async fn writes_allowed(client: &Client, db: &TenantDb) -> Result<bool> {
    let schema = quote(&db.schema);
    let answer = client
        .query_one(
            "SELECT has_table_privilege($1, $2, 'INSERT') AND has_table_privilege($1, $3, 'INSERT')",
            &[
                &db.writer,
                &format!("{schema}.measurements"),
                &format!("{schema}.sensors"),
            ],
        )
        .await;
    match answer {
        Ok(row) => Ok(row.get(0)),
        Err(error) => {
            explain_refusal(client, db, &error).await;
            Err(failed("read the writer's INSERT privilege", db)(error))
        }
    }
}

/// Retain: the data stays as it is. Every login stops (the owner's too, so no job runs
/// as it), TimescaleDB's jobs for the tenant are paused (retention would go on dropping
/// the kept data), and open sessions end. A tenant created again resumes all of it.
/// `timescaledb`: the extension's schema, if the database has it.
pub async fn ensure_logins_disabled(
    client: &Client,
    db: &TenantDb,
    timescaledb: Option<&str>,
) -> Result<()> {
    let wrap = failed("disable the logins", db);
    let existing: Vec<String> = client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&db.roles()],
        )
        .await
        .map_err(&wrap)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    // Tenants provisioned before the admin was made a member of every role.
    client
        .batch_execute(&sql::grant_roles_to_admin(&existing))
        .await
        .map_err(&wrap)?;
    for role in &existing {
        client
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote(role)))
            .await
            .map_err(&wrap)?;
    }
    if let Some(timescaledb) = timescaledb
        && inspect_table(client, db, true).await? == Some(Table::Hypertable)
    {
        client
            .execute(&timescale::pause_jobs(timescaledb), &[&db.schema])
            .await
            .map_err(&wrap)?;
    }
    end_sessions(client, &db.roles()).await.map_err(&wrap)?;
    Ok(())
}

/// The last resort when the writer's INSERT cannot be taken away: its login goes, and
/// its sessions end (role commands are no DDL, so this works where GRANT and REVOKE do
/// not). Re-provisioning gives the login back once the privileges hold again.
pub async fn ensure_writer_locked_out(client: &Client, db: &TenantDb) -> Result<()> {
    let wrap = failed("lock the writer out", db);
    for role in writer_logins_enabled(client, db).await? {
        client
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote(&role)))
            .await
            .map_err(&wrap)?;
    }
    end_sessions(client, &db.writer_roles())
        .await
        .map_err(&wrap)?;
    Ok(())
}

/// Ends every session of `roles` (after their LOGIN went, so none comes back).
async fn end_sessions(client: &Client, roles: &[String]) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
            &[&roles],
        )
        .await
        .map(|_| ())
}

/// The writer's roles that can log in now.
pub async fn writer_logins_enabled(client: &Client, db: &TenantDb) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) AND rolcanlogin",
            &[&db.writer_roles()],
        )
        .await
        .map_err(failed("read the writer's logins", db))?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Retires writer logins a rotation replaced, once no pod uses them: no LOGIN, no
/// password, and their sessions end. Under the tenant's lock; idempotent. `roles` are
/// writer roles (never the owner or reader: the caller checked).
pub async fn ensure_logins_retired(
    client: &mut Client,
    db: &TenantDb,
    roles: &[String],
) -> Result<()> {
    let wrap = failed("retire the writer's previous login", db);
    let transaction = client.transaction().await.map_err(&wrap)?;
    lock(&transaction, db).await.map_err(&wrap)?;
    for role in roles {
        let exists = transaction
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(&wrap)?
            .is_some();
        if exists {
            transaction
                .batch_execute(&sql::retire_login(role))
                .await
                .map_err(&wrap)?;
        }
    }
    transaction.commit().await.map_err(&wrap)?;
    // After the commit: a session opened meanwhile would otherwise survive.
    end_sessions(client, roles).await.map_err(&wrap)?;
    Ok(())
}

/// Delete (confirmed): sessions end, then the schema with its data goes — on TimescaleDB
/// with its chunks, compressed hypertable and jobs — and so do the roles, with whatever
/// else they own or were granted: nothing is handed over to the admin.
pub async fn ensure_schema_absent(
    client: &mut Client,
    db: &TenantDb,
    timescaledb: Option<&str>,
) -> Result<()> {
    ensure_logins_disabled(client, db, timescaledb).await?;
    let wrap = failed("drop the schema and roles", db);
    let transaction = client.transaction().await.map_err(&wrap)?;
    lock(&transaction, db).await.map_err(&wrap)?;
    let jobs: Vec<i32> = match timescaledb {
        Some(_) => transaction
            .query(timescale::JOB_IDS_QUERY, &[&db.schema])
            .await
            .map_err(&wrap)?
            .iter()
            .map(|row| row.get(0))
            .collect(),
        None => Vec::new(),
    };
    transaction
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&db.schema)
        ))
        .await
        .map_err(&wrap)?;

    // Members before the role they are members of; the owner, who owns the rest, last.
    let roles = db
        .writer_logins
        .iter()
        .chain([&db.writer, &db.reader, &db.owner]);
    for role in roles {
        let exists = transaction
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(&wrap)?
            .is_some();
        if exists {
            transaction
                .batch_execute(&format!(
                    "DROP OWNED BY {role}; DROP ROLE {role}",
                    role = quote(role)
                ))
                .await
                .map_err(&wrap)?;
        }
    }
    transaction.commit().await.map_err(&wrap)?;
    // The jobs went with the hypertable; TimescaleDB keeps their runs (failed ones
    // always), which go too. Needs a grant TimescaleDB's installation does not give the
    // admin (`database::checks`): without it the tenant is still deleted, and the log
    // says what is left and how to allow it.
    if !jobs.is_empty() {
        match client
            .execute(timescale::DELETE_JOB_HISTORY, &[&jobs])
            .await
        {
            Ok(_) => {}
            Err(error)
                if error.code()
                    == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                tracing::warn!(
                    schema = %db.schema,
                    ?jobs,
                    fix = "GRANT SELECT, DELETE ON _timescaledb_internal.bgw_job_stat_history TO <the operator's role>",
                    "the deleted tenant's job runs stay in TimescaleDB's job history: the admin may not delete them"
                );
            }
            Err(error) => return Err(wrap(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(layout: Layout) -> Desired {
        Desired {
            limits: RoleLimits {
                connection_limit: 6,
                statement_timeout_ms: 30_000,
            },
            layout,
            timescaledb_schema: None,
            hypertable: HypertableSettings {
                chunk_interval_hours: 24,
                retention_days: 365,
                compress_after_days: 7,
            },
        }
    }

    const WRITER_PASSWORD: &str = "writer-plaintext-secret";
    const READER_PASSWORD: &str = "reader-plaintext-secret";

    fn plan(
        db: &TenantDb,
        layout: Layout,
        catalog: &Catalog,
        credentials: Credentials,
        writes: Writes,
    ) -> (Vec<String>, Vec<Planned>, bool) {
        let desired = desired(layout);
        let logins = WriterLogins::first(db);
        let request = Provisioning {
            desired: &desired,
            table: None,
            logins: &logins,
            passwords: Passwords {
                writer: WRITER_PASSWORD,
                reader: READER_PASSWORD,
            },
            credentials,
            writes,
        };
        let (planned, passwords_set) = plan_schema(db, catalog, &request);
        let text = planned
            .iter()
            .map(|planned| match planned {
                Planned::Sql(text) => text.clone(),
                Planned::CreateHypertable { statement, .. } => statement.clone(),
            })
            .collect();
        (text, planned, passwords_set)
    }

    fn new_catalog() -> Catalog {
        Catalog {
            admin: "smartregion_admin".into(),
            roles: Vec::new(),
            measurements: false,
        }
    }

    fn existing_catalog(db: &TenantDb) -> Catalog {
        Catalog {
            admin: "smartregion_admin".into(),
            roles: db.roles(),
            measurements: true,
        }
    }

    #[test]
    fn a_new_tenant_gets_every_role_its_passwords_and_a_writable_table() {
        let db = TenantDb::test("prato");
        let (text, _, passwords_set) = plan(
            &db,
            Layout::Partitions,
            &new_catalog(),
            Credentials::Keep,
            Writes::Allowed,
        );
        assert!(passwords_set);
        for role in db.roles() {
            assert!(
                text.iter()
                    .any(|s| s.starts_with("CREATE ROLE") && s.contains(&format!("\"{role}\""))),
                "{role} created: {text:#?}"
            );
        }
        assert!(text.iter().any(|s| s.starts_with(&format!(
            "ALTER ROLE \"{}\" LOGIN PASSWORD 'SCRAM-SHA-256$",
            db.writer_logins[0]
        ))));
        assert_eq!(
            text.last().unwrap(),
            &sql::writes_statement(&db, true),
            "the table is writable, last"
        );
        assert!(
            text.iter()
                .all(|s| !s.contains(WRITER_PASSWORD) && !s.contains(READER_PASSWORD)),
            "only SCRAM verifiers reach the server"
        );
    }

    #[test]
    fn an_existing_tenant_keeps_its_roles_passwords_and_grants() {
        let db = TenantDb::test("prato");
        let (text, _, passwords_set) = plan(
            &db,
            Layout::Partitions,
            &existing_catalog(&db),
            Credentials::Keep,
            Writes::Refused,
        );
        assert!(!passwords_set);
        assert!(
            text.iter().all(|s| !s.starts_with("CREATE ROLE")),
            "{text:#?}"
        );
        assert!(text.iter().all(|s| !s.contains("PASSWORD")), "{text:#?}");
        // The writer's INSERT is the quota's and suspension's, not re-provisioning's.
        assert!(text.iter().all(|s| !s.contains("INSERT ON")), "{text:#?}");
    }

    #[test]
    fn a_rotation_gives_the_active_login_and_the_reader_new_passwords_only() {
        let db = TenantDb::test("prato");
        let (text, _, passwords_set) = plan(
            &db,
            Layout::Partitions,
            &existing_catalog(&db),
            Credentials::Issue,
            Writes::Allowed,
        );
        assert!(passwords_set);
        let passwords: Vec<&String> = text.iter().filter(|s| s.contains("PASSWORD")).collect();
        assert_eq!(passwords.len(), 2, "{passwords:#?}");
        assert!(passwords[0].starts_with(&format!("ALTER ROLE \"{}\"", db.writer_logins[0])));
        assert!(passwords[1].starts_with(&format!("ALTER ROLE \"{}\"", db.reader)));
    }

    #[test]
    fn a_new_hypertable_is_created_as_the_owner_and_starts_refused_when_suspended() {
        let db = TenantDb::test("prato");
        let (text, planned, _) = plan(
            &db,
            Layout::Hypertable {
                timescaledb: "public".into(),
            },
            &new_catalog(),
            Credentials::Keep,
            Writes::Refused,
        );
        let at = planned
            .iter()
            .position(|p| matches!(p, Planned::CreateHypertable { .. }))
            .expect("a hypertable is created");
        assert_eq!(text[at - 1], sql::as_role(&db.owner));
        assert_eq!(text[at + 1], sql::as_role("smartregion_admin"));
        assert_eq!(
            planned[at],
            Planned::CreateHypertable {
                statement: timescale::create_hypertable("public"),
                relation: "\"t_prato\".measurements".into(),
                hours: 24,
            }
        );
        assert_eq!(text.last().unwrap(), &sql::writes_statement(&db, false));
        // The same on an existing table: nothing of the table's creation again.
        let (_, planned, _) = plan(
            &db,
            Layout::Hypertable {
                timescaledb: "public".into(),
            },
            &existing_catalog(&db),
            Credentials::Keep,
            Writes::Refused,
        );
        assert!(
            !planned
                .iter()
                .any(|p| matches!(p, Planned::CreateHypertable { .. }))
        );
    }
}
