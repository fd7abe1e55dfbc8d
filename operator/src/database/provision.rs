//! Acts on the database: `ensure_schema_exists`, `ensure_partitions`,
//! `ensure_writes_allowed`, `measure_schema_bytes`, `ensure_logins_disabled` and
//! `ensure_schema_absent`. Each is idempotent; changes run in one transaction under the
//! tenant's advisory lock, and a tenant already in the desired state costs reads only.

use jiff::Timestamp;
use tokio_postgres::{Client, GenericClient};

use super::connect::Flavor;
use super::names::{TenantDb, quote};
use super::partitions::{self, Partition};
use super::scram_verifier;
use super::sql::{self, RoleLimits, SCHEMA_VERSION};
use super::timescale::{self, HypertableSettings};

#[derive(Debug, thiserror::Error)]
#[error("failed to {action} for schema {schema}")]
pub struct Error {
    action: &'static str,
    schema: String,
    #[source]
    pub source: tokio_postgres::Error,
}

impl Error {
    /// The connection failed, rather than a statement (which would have a SQLSTATE).
    pub fn is_connection(&self) -> bool {
        self.source.code().is_none()
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn failed(action: &'static str, db: &TenantDb) -> impl Fn(tokio_postgres::Error) -> Error {
    let schema = db.schema.clone();
    move |source| Error {
        action,
        schema: schema.clone(),
        source,
    }
}

/// Passwords for login roles that are created now (or rotated); never logged.
pub struct Passwords<'a> {
    pub writer: &'a str,
    pub reader: &'a str,
}

/// What the tenant's database objects should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub limits: RoleLimits,
    pub flavor: Flavor,
    pub storage: HypertableSettings,
}

/// What `ensure_schema_exists` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// Statements ran (the state was not already as desired).
    pub changed: bool,
    /// The login roles got the given passwords (created, or rotated).
    pub passwords_set: bool,
}

/// Brings the tenant's roles, schema and tables to the desired state. Login roles that
/// do not exist yet get `passwords`; existing ones keep theirs (adoption after a Retain,
/// or a later reconcile) unless `rotate` is set.
pub async fn ensure_schema_exists(
    client: &mut Client,
    db: &TenantDb,
    desired: &Desired,
    passwords: &Passwords<'_>,
    rotate: bool,
) -> Result<Provisioned> {
    let wrap = failed("provision the roles, schema and tables", db);
    if !rotate && is_current(client, db, desired).await.map_err(&wrap)? {
        return Ok(Provisioned::default());
    }
    let transaction = client.transaction().await.map_err(&wrap)?;
    lock(&transaction, db).await.map_err(&wrap)?;
    let existing: Vec<String> = transaction
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1)",
            &[&vec![
                db.owner.clone(),
                db.writer.clone(),
                db.reader.clone(),
            ]],
        )
        .await
        .map_err(&wrap)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let exists = |role: &String| existing.contains(role);
    let mut statements = Vec::new();
    if !exists(&db.owner) {
        statements.push(sql::create_owner_role(&db.owner));
    }
    let mut passwords_set = false;
    for (role, password) in [
        (&db.writer, passwords.writer),
        (&db.reader, passwords.reader),
    ] {
        if !exists(role) {
            statements.push(sql::create_login_role(role, &scram_verifier(password)));
            passwords_set = true;
        } else if rotate {
            statements.push(sql::set_password(role, &scram_verifier(password)));
            passwords_set = true;
        }
    }
    // The admin must be able to act as the owner (a no-op for a superuser).
    statements.push(format!("GRANT {} TO CURRENT_USER", quote(&db.owner)));
    statements.extend(sql::schema_statements(
        db,
        &desired.limits,
        desired.flavor,
        &desired.storage,
    ));
    let new_schema = !table_exists(&transaction, db, "measurements")
        .await
        .map_err(&wrap)?;
    for statement in &statements {
        transaction.batch_execute(statement).await.map_err(&wrap)?;
    }
    if new_schema {
        // A new tenant may write; later only the quota and suspension decide.
        transaction
            .batch_execute(&sql::writes_statement(db, true))
            .await
            .map_err(&wrap)?;
    }
    transaction.commit().await.map_err(&wrap)?;
    Ok(Provisioned {
        changed: true,
        passwords_set,
    })
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

/// The role settings `ensure_schema_exists` gives a login role, as `pg_db_role_setting`
/// stores them.
fn role_settings(db: &TenantDb, limits: &RoleLimits) -> Vec<String> {
    // PostgreSQL stores the search_path as quote_ident would write it; tenant schemas
    // are lower-case letters, digits and `_` after `t_`, which it leaves unquoted.
    let mut settings = vec![
        format!("search_path={}", db.schema),
        format!("statement_timeout={}", limits.statement_timeout_ms),
    ];
    settings.sort();
    settings
}

/// Everything `ensure_schema_exists` sets, read back: true when nothing needs doing.
async fn is_current(
    client: &Client,
    db: &TenantDb,
    desired: &Desired,
) -> Result<bool, tokio_postgres::Error> {
    let roles = client
        .query(
            "SELECT r.rolname, r.rolcanlogin, r.rolconnlimit, \
                    coalesce(s.setconfig, '{}'::text[]) \
             FROM pg_roles r \
             LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 \
             WHERE r.rolname = ANY($1)",
            &[&vec![
                db.owner.clone(),
                db.writer.clone(),
                db.reader.clone(),
            ]],
        )
        .await?;
    let settings = role_settings(db, &desired.limits);
    let role_ok = |name: &str| {
        roles.iter().any(|row| {
            let (rolname, login, limit, mut config): (String, bool, i32, Vec<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            config.sort();
            rolname == name
                && if name == db.owner {
                    !login
                } else {
                    login && limit == desired.limits.connection_limit && config == settings
                }
        })
    };
    if !(role_ok(&db.owner) && role_ok(&db.writer) && role_ok(&db.reader)) {
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
        transaction
            .batch_execute(&format!("SET LOCAL ROLE {}", quote(&db.owner)))
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
            .batch_execute("RESET ROLE")
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

/// Bytes the tenant's tables (with indexes and TOAST) take on disk; 0 for a schema that
/// does not exist.
pub async fn measure_schema_bytes(client: &Client, db: &TenantDb, flavor: Flavor) -> Result<i64> {
    let query = match flavor {
        Flavor::Plain => "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                          WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')"
            .to_string(),
        Flavor::TimescaleDb => timescale::usage_query(db),
    };
    let row = client
        .query_one(&query, &[&db.schema])
        .await
        .map_err(failed("measure the size", db))?;
    Ok(row.get(0))
}

/// Rows ever inserted into the tenant's measurements, as PostgreSQL counts them
/// (`n_tup_ins` of every partition); `None` on TimescaleDB, whose chunks live in its own
/// schema.
pub async fn rows_inserted(client: &Client, db: &TenantDb, flavor: Flavor) -> Result<Option<i64>> {
    if flavor == Flavor::TimescaleDb {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables \
             WHERE schemaname = $1 AND relname LIKE 'measurements%'",
            &[&db.schema],
        )
        .await
        .map_err(failed("count the rows inserted", db))?;
    Ok(Some(row.get(0)))
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
    client
        .query_one(
            "SELECT has_table_privilege($1, $2, 'INSERT') AND has_table_privilege($1, $3, 'INSERT')",
            &[
                &db.writer,
                &format!("{schema}.measurements"),
                &format!("{schema}.sensors"),
            ],
        )
        .await
        .map(|row| row.get(0))
        .map_err(failed("read the writer's INSERT privilege", db))
}

/// Retain: the data stays, the logins stop, open sessions end.
pub async fn ensure_logins_disabled(client: &Client, db: &TenantDb) -> Result<()> {
    let wrap = failed("disable the logins", db);
    for role in [&db.writer, &db.reader] {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(&wrap)?
            .is_some();
        if exists {
            client
                .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote(role)))
                .await
                .map_err(&wrap)?;
        }
    }
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
            &[&vec![db.writer.clone(), db.reader.clone()]],
        )
        .await
        .map_err(&wrap)?;
    Ok(())
}

/// Delete (confirmed): sessions end, then the schema, its data and the roles go.
pub async fn ensure_schema_absent(client: &mut Client, db: &TenantDb) -> Result<()> {
    ensure_logins_disabled(client, db).await?;
    let wrap = failed("drop the schema and roles", db);
    let transaction = client.transaction().await.map_err(&wrap)?;
    lock(&transaction, db).await.map_err(&wrap)?;
    transaction
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&db.schema)
        ))
        .await
        .map_err(&wrap)?;
    for role in [&db.writer, &db.reader, &db.owner] {
        let exists = transaction
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(&wrap)?
            .is_some();
        if exists {
            transaction
                .batch_execute(&format!(
                    "REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE {role}",
                    role = quote(role)
                ))
                .await
                .map_err(&wrap)?;
        }
    }
    transaction.commit().await.map_err(&wrap)?;
    Ok(())
}
