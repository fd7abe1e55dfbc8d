//! `ensure_schema_exists`: creates or completes a tenant's roles, schema and tables, in
//! one transaction under a per-tenant advisory lock. Talks to the database; idempotent.

use tokio_postgres::Client;

use super::names::TenantDb;
use super::scram_verifier;
use super::sql::{self, RoleLimits};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to provision the database schema {schema}")]
    Provision {
        schema: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Passwords for roles that are created now (or rotated); never logged.
pub struct Passwords<'a> {
    pub writer: &'a str,
    pub reader: &'a str,
}

/// What `ensure_schema_exists` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// The login roles were created by this call, with the given passwords.
    pub created_logins: bool,
}

/// Brings the tenant's database objects to the current version. Login roles that do not
/// exist yet are created with `passwords`; existing ones keep theirs (adoption after a
/// Retain, or a second call) unless `rotate` is set.
pub async fn ensure_schema_exists(
    client: &mut Client,
    db: &TenantDb,
    limits: &RoleLimits,
    passwords: &Passwords<'_>,
    rotate: bool,
) -> Result<Provisioned, Error> {
    let wrap = |source| Error::Provision {
        schema: db.schema.clone(),
        source,
    };
    // The steady state: everything exists at the current version. Checked with reads
    // only, so a periodic reconcile does not rewrite catalogs.
    if !rotate && is_current(client, db).await.map_err(wrap)? {
        return Ok(Provisioned::default());
    }
    let transaction = client.transaction().await.map_err(wrap)?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&db.lock_key()],
        )
        .await
        .map_err(wrap)?;
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
        .map_err(wrap)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let exists = |role: &String| existing.contains(role);
    let mut statements = Vec::new();
    if !exists(&db.owner) {
        statements.push(sql::create_owner_role(&db.owner));
    }
    let mut created_logins = false;
    for (role, password) in [
        (&db.writer, passwords.writer),
        (&db.reader, passwords.reader),
    ] {
        if !exists(role) {
            statements.push(sql::create_login_role(role, &scram_verifier(password)));
            created_logins = true;
        } else if rotate {
            statements.push(sql::set_password(role, &scram_verifier(password)));
        }
    }
    // The admin must be able to act as the owner (a no-op for a superuser).
    statements.push(format!(
        "GRANT {} TO CURRENT_USER",
        super::names::quote(&db.owner)
    ));
    statements.extend(sql::schema_statements(db, limits));
    for statement in &statements {
        transaction.batch_execute(statement).await.map_err(wrap)?;
    }
    transaction.commit().await.map_err(wrap)?;
    Ok(Provisioned { created_logins })
}

async fn is_current(client: &Client, db: &TenantDb) -> Result<bool, tokio_postgres::Error> {
    let roles: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1) AND \
             (rolname = $2 OR rolcanlogin)",
            &[
                &vec![db.owner.clone(), db.writer.clone(), db.reader.clone()],
                &db.owner,
            ],
        )
        .await?
        .get(0);
    if roles != 3 {
        return Ok(false);
    }
    let table = format!("{}.schema_version", super::names::quote(&db.schema));
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&table])
        .await?
        .get(0);
    if exists.is_none() {
        return Ok(false);
    }
    let current: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {table}"), &[])
        .await?
        .get(0);
    Ok(current == Some(super::sql::SCHEMA_VERSION))
}

/// Retain: the data stays, the logins stop, open sessions end.
pub async fn ensure_logins_disabled(client: &Client, db: &TenantDb) -> Result<(), Error> {
    let wrap = |source| Error::Provision {
        schema: db.schema.clone(),
        source,
    };
    for role in [&db.writer, &db.reader] {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(wrap)?
            .is_some();
        if exists {
            client
                .batch_execute(&format!("ALTER ROLE {} NOLOGIN", super::names::quote(role)))
                .await
                .map_err(wrap)?;
        }
    }
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
            &[&vec![db.writer.clone(), db.reader.clone()]],
        )
        .await
        .map_err(wrap)?;
    Ok(())
}

/// Delete (confirmed): sessions end, then the schema, its data and the roles go.
pub async fn ensure_schema_absent(client: &Client, db: &TenantDb) -> Result<(), Error> {
    ensure_logins_disabled(client, db).await?;
    let wrap = |source| Error::Provision {
        schema: db.schema.clone(),
        source,
    };
    let quote = super::names::quote;
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&db.schema)
        ))
        .await
        .map_err(wrap)?;
    for role in [&db.writer, &db.reader, &db.owner] {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(wrap)?
            .is_some();
        if exists {
            client
                .batch_execute(&format!(
                    "REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE {role}",
                    role = quote(role)
                ))
                .await
                .map_err(wrap)?;
        }
    }
    Ok(())
}
