//! Acts on the database for sharing: `ensure_shares_provided` (the provider's views, as
//! its shares declare, readable by their consumers' readers), `ensure_shared_with`
//! (the consumer's side of the same grants, for a consumer that appears after its
//! provider), `ensure_shares_absent` and `ensure_shared_revoked` (deleting either side).
//! Each is idempotent and reads only in the steady state; the statement text and the
//! plan are [`super::shares`]'s.

use tokio_postgres::Client;

use super::names::{TenantDb, quote};
use super::provision::Error;
use super::shares::{self, FoundView, Plan, Share};
use super::sql;

type Result<T, E = Error> = std::result::Result<T, E>;

fn failed(action: &'static str, db: &TenantDb) -> impl Fn(tokio_postgres::Error) -> Error {
    super::provision::failed(action, db)
}

/// The readers among `readers` whose role exists (a consumer not yet provisioned has
/// none to grant to).
pub async fn existing_roles(
    client: &Client,
    db: &TenantDb,
    readers: &[String],
) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&readers],
        )
        .await
        .map_err(failed("look up the consumers' readers", db))?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The views of the provider's share schema, with their comments, definitions (as
/// digests) and grantees; `None` when the schema does not exist.
async fn found_views(client: &Client, provider: &TenantDb) -> Result<Option<Vec<FoundView>>> {
    let wrap = failed("read the shared views", provider);
    let schema = shares::schema(provider);
    let exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(&wrap)?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT c.relname::text, obj_description(c.oid, 'pg_class'), pg_get_viewdef(c.oid), \
                    coalesce((SELECT array_agg((CASE WHEN a.grantee = 0 THEN 'public' \
                              ELSE pg_get_userbyid(a.grantee)::text END) || '=' || a.privilege_type) \
                              FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner), '{}') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'v'",
            &[&schema],
        )
        .await
        .map_err(&wrap)?;
    Ok(Some(
        rows.iter()
            .map(|row| {
                let privileges: Vec<String> = row.get(3);
                let mut grantees: Vec<(String, bool)> = Vec::new();
                for entry in privileges {
                    let (role, privilege) = entry.rsplit_once('=').unwrap_or((&entry, ""));
                    match grantees.iter_mut().find(|(r, _)| r == role) {
                        Some((_, only_select)) => {
                            *only_select = *only_select && privilege == "SELECT"
                        }
                        None => grantees.push((role.to_string(), privilege == "SELECT")),
                    }
                }
                FoundView {
                    name: row.get(0),
                    comment: row.get(1),
                    definition: shares::definition_digest(&row.get::<_, String>(2)),
                    grantees,
                }
            })
            .collect(),
    ))
}

/// What `ensure_shares_provided` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provided {
    /// Views made anew or dropped, grants given or taken.
    pub changed: bool,
}

/// The provider's share schema and views as its shares declare, each readable by the
/// given readers (those of its consumers that exist) and by no one else. Reads only when
/// they already are. The caller holds the provider's lock.
pub async fn ensure_shares_provided(
    client: &mut Client,
    provider: &TenantDb,
    declared: &[(Share, Vec<String>)],
) -> Result<Provided> {
    let wrap = failed("provide the shared views", provider);
    let found = found_views(client, provider).await?;
    if found.is_none() && declared.is_empty() {
        return Ok(Provided::default());
    }
    let found = found.unwrap_or_default();
    let plan = shares::plan(provider, declared, &found);
    let readers: Vec<String> = {
        let mut all: Vec<String> = declared.iter().flat_map(|(_, r)| r.clone()).collect();
        all.sort();
        all.dedup();
        all
    };
    let usage = schema_grantees(client, provider).await?;
    if plan.is_empty() && usage.as_ref() == Some(&readers) {
        return Ok(Provided::default());
    }
    let transaction = client.transaction().await.map_err(&wrap)?;
    let schema = quote(&shares::schema(provider));
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}; \
             REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
            owner = quote(&provider.owner)
        ))
        .await
        .map_err(&wrap)?;
    apply_plan(&transaction, provider, &plan)
        .await
        .map_err(&wrap)?;
    for role in usage.unwrap_or_default() {
        if !readers.contains(&role) {
            transaction
                .batch_execute(&format!(
                    "REVOKE ALL ON SCHEMA {schema} FROM {}",
                    role_name(&role)
                ))
                .await
                .map_err(&wrap)?;
        }
    }
    if !readers.is_empty() {
        let readers: Vec<String> = readers.iter().map(|r| quote(r)).collect();
        transaction
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA {schema} TO {}",
                readers.join(", ")
            ))
            .await
            .map_err(&wrap)?;
    }
    transaction.commit().await.map_err(&wrap)?;
    Ok(Provided { changed: true })
}

/// `PUBLIC` as SQL writes it, any other role quoted.
fn role_name(role: &str) -> String {
    if role == "public" {
        "PUBLIC".into()
    } else {
        quote(role)
    }
}

/// The roles that hold a privilege on the provider's share schema, but its owner,
/// sorted; `None` when it does not exist.
async fn schema_grantees(client: &Client, provider: &TenantDb) -> Result<Option<Vec<String>>> {
    let row = client
        .query_opt(
            "SELECT coalesce((SELECT array_agg(g.grantee ORDER BY g.grantee) \
                     FROM (SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'public' \
                             ELSE pg_get_userbyid(a.grantee)::text END AS grantee \
                           FROM aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner) g), \
                     '{}') \
             FROM pg_namespace n WHERE n.nspname = $1",
            &[&shares::schema(provider)],
        )
        .await
        .map_err(failed("read the share schema's grants", provider))?;
    Ok(row.map(|row| row.get(0)))
}

/// The plan's statements: views as the provider's owner, grants and revokes by it.
async fn apply_plan(
    transaction: &tokio_postgres::Transaction<'_>,
    provider: &TenantDb,
    plan: &Plan,
) -> Result<(), tokio_postgres::Error> {
    let admin: String = transaction
        .query_one("SELECT current_user::text", &[])
        .await?
        .get(0);
    transaction
        .batch_execute(&sql::as_role(&provider.owner))
        .await?;
    let schema = quote(&shares::schema(provider));
    for view in &plan.drop {
        transaction
            .batch_execute(&format!("DROP VIEW IF EXISTS {schema}.{}", quote(view)))
            .await?;
    }
    for share in &plan.make {
        for statement in shares::view_statements(provider, share) {
            transaction.batch_execute(&statement).await?;
        }
        let digest = shares::digest(provider, share);
        for view in [shares::view(&share.name), shares::sensors_view(&share.name)] {
            let qualified = format!("{schema}.{}", quote(&view));
            let definition: String = transaction
                .query_one("SELECT pg_get_viewdef($1::text::regclass)", &[&qualified])
                .await?
                .get(0);
            let comment = shares::comment(&digest, &shares::definition_digest(&definition));
            transaction
                .batch_execute(&format!(
                    "COMMENT ON VIEW {qualified} IS {}",
                    postgres_protocol::escape::escape_literal(&comment)
                ))
                .await?;
        }
    }
    for (view, role) in &plan.revoke {
        transaction
            .batch_execute(&format!(
                "REVOKE ALL ON {schema}.{} FROM {}",
                quote(view),
                role_name(role)
            ))
            .await?;
    }
    for (view, role) in &plan.grant {
        transaction
            .batch_execute(&format!(
                "GRANT SELECT ON {schema}.{} TO {}",
                quote(view),
                quote(role)
            ))
            .await?;
    }
    transaction.batch_execute(&sql::as_role(&admin)).await
}

/// What `ensure_shared_with` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedWith {
    /// The (provider, share) pairs whose views exist: the reader may read them now.
    pub readable: Vec<usize>,
    /// Grants were given.
    pub changed: bool,
    /// A provider was busy (its lock held by its own reconcile): try again soon.
    pub busy: bool,
}

/// The consumer's side: `reader` may read each of `shared` (provider, share) whose views
/// exist. For a consumer that appears after its provider shared with it; reads only when
/// it already may. Each grant runs under the provider's lock, as the provider's own; the
/// lock is only tried (the caller holds the consumer's, and two tenants may share with
/// each other): a busy provider is left for a moment later.
pub async fn ensure_shared_with(
    client: &mut Client,
    consumer: &TenantDb,
    shared: &[(TenantDb, String)],
) -> Result<SharedWith> {
    let wrap = failed("read what is shared with the tenant", consumer);
    // Grants only. Taking away is the provider's alone: its reconcile revokes, under its
    // lock, every grant on its views and schema that no share of its declares (a share
    // narrowed or removed, a grant by hand). A consumer that revoked what its own,
    // possibly older, reading of the shares did not list took away a grant its provider
    // had just given (seen on TimescaleDB: a share Ready, its consumer refused).
    let mut outcome = SharedWith::default();
    for (index, (provider, share)) in shared.iter().enumerate() {
        let views: Vec<String> = [shares::view(share), shares::sensors_view(share)]
            .iter()
            .map(|view| shares::read_as(provider, &quote(view)))
            .collect();
        // (views that exist, of which the reader may not read yet)
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE to_regclass(v) IS NOT NULL), \
                        count(*) FILTER (WHERE to_regclass(v) IS NOT NULL \
                                         AND NOT has_table_privilege($1, v, 'SELECT')) \
                 FROM unnest($2::text[]) AS v",
                &[&consumer.reader, &views],
            )
            .await
            .map_err(&wrap)?;
        let (exist, missing): (i64, i64) = (row.get(0), row.get(1));
        if exist < views.len() as i64 {
            continue;
        }
        if missing == 0 {
            outcome.readable.push(index);
            continue;
        }
        let transaction = client.transaction().await.map_err(&wrap)?;
        let locked: bool = transaction
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))",
                &[&provider.lock_key()],
            )
            .await
            .map_err(&wrap)?
            .get(0);
        if !locked {
            outcome.busy = true;
            continue;
        }
        transaction
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA {} TO {reader}; GRANT SELECT ON {} TO {reader}",
                quote(&shares::schema(provider)),
                views.join(", "),
                reader = quote(&consumer.reader)
            ))
            .await
            .map_err(&wrap)?;
        transaction.commit().await.map_err(&wrap)?;
        outcome.readable.push(index);
        outcome.changed = true;
    }
    Ok(outcome)
}

/// Deleting a provider: its share schema and every view in it go, whatever the
/// deletion policy (the data it shares stays or goes with the tenant's own schema).
pub async fn ensure_shares_absent(client: &Client, provider: &TenantDb) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&shares::schema(provider))
        ))
        .await
        .map_err(failed("drop the shared views", provider))
}

/// Deleting a consumer: its reader loses everything it may read of any provider.
pub async fn ensure_shared_revoked(client: &Client, consumer: &TenantDb) -> Result<()> {
    let wrap = failed("revoke what was shared with the tenant", consumer);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&consumer.reader],
        )
        .await
        .map_err(&wrap)?
        .is_some();
    if !exists {
        return Ok(());
    }
    let schemas: Vec<String> = client
        .query(
            "SELECT n.nspname::text FROM pg_namespace n WHERE n.nspname LIKE 's\\_%' \
               AND has_schema_privilege($1, n.oid, 'USAGE')",
            &[&consumer.reader],
        )
        .await
        .map_err(&wrap)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for schema in schemas {
        client
            .batch_execute(&format!(
                "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {reader}; \
                 REVOKE ALL ON SCHEMA {schema} FROM {reader}",
                schema = quote(&schema),
                reader = quote(&consumer.reader)
            ))
            .await
            .map_err(&wrap)?;
    }
    Ok(())
}
