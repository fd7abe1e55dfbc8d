//! Acts on the database for open data: `ensure_datasets_published` (the tenant's open
//! schema as its datasets declare, readable by its public role only) and
//! `ensure_datasets_absent` (deleting the tenant). Idempotent; one read in the steady
//! state. The statements and their digest are [`super::datasets`]'s.

use tokio_postgres::Client;

use super::datasets::{self, Dataset};
use super::names::{TenantDb, quote};
use super::provision::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

fn failed(action: &'static str, db: &TenantDb) -> impl Fn(tokio_postgres::Error) -> Error {
    super::provision::failed(action, db)
}

/// The open schema's comment and the digest of what the catalog holds for it now;
/// `None` when the schema does not exist.
async fn read_found(
    client: &impl tokio_postgres::GenericClient,
    db: &TenantDb,
) -> Result<Option<(Option<String>, String)>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            datasets::FOUND,
            &[
                &datasets::schema(db),
                &datasets::public_role(db),
                &db.reader,
            ],
        )
        .await?
        .map(|row| (row.get(0), datasets::short_digest(&row.get::<_, String>(1)))))
}

/// The tenant's open schema as `declared` says (none when nothing is declared), under
/// the tenant's lock. Returns whether anything was made anew.
pub async fn ensure_datasets_published(
    client: &mut Client,
    db: &TenantDb,
    declared: &[Dataset],
    timescaledb: Option<&str>,
) -> Result<bool> {
    let wrap = failed("publish the open datasets", db);
    let found = read_found(&*client, db).await.map_err(&wrap)?;
    let digest = datasets::digest(db, declared, timescaledb);
    match &found {
        None if declared.is_empty() => return Ok(false),
        Some((comment, now)) if comment.as_deref() == Some(&datasets::comment(&digest, now)) => {
            return Ok(false);
        }
        _ => {}
    }
    let transaction = client.transaction().await.map_err(&wrap)?;
    if declared.is_empty() {
        transaction
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote(&datasets::schema(db))
            ))
            .await
            .map_err(&wrap)?;
        transaction.commit().await.map_err(&wrap)?;
        return Ok(true);
    }
    let admin: String = transaction
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(&wrap)?
        .get(0);
    let public = datasets::public_role(db);
    let exists = transaction
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&public])
        .await
        .map_err(&wrap)?
        .is_some();
    if !exists {
        transaction
            .batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote(&public)))
            .await
            .map_err(&wrap)?;
    }
    transaction
        .batch_execute(&format!(
            "GRANT {} TO {}",
            quote(&public),
            quote(&db.reader)
        ))
        .await
        .map_err(&wrap)?;
    for statement in datasets::statements(db, declared, timescaledb, &admin) {
        transaction.batch_execute(&statement).await.map_err(&wrap)?;
    }
    let (_, now) = read_found(&transaction, db)
        .await
        .map_err(&wrap)?
        .expect("the open schema was just made");
    transaction
        .batch_execute(&format!(
            "COMMENT ON SCHEMA {} IS {}",
            quote(&datasets::schema(db)),
            postgres_protocol::escape::escape_literal(&datasets::comment(&digest, &now))
        ))
        .await
        .map_err(&wrap)?;
    transaction.commit().await.map_err(&wrap)?;
    Ok(true)
}

/// Deleting a tenant: its open schema and public role go, whatever the deletion policy.
pub async fn ensure_datasets_absent(client: &Client, db: &TenantDb) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP ROLE IF EXISTS {}",
            quote(&datasets::schema(db)),
            quote(&datasets::public_role(db))
        ))
        .await
        .map_err(failed("drop the open datasets", db))
}
