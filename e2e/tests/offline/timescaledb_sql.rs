//! The operator's TimescaleDB statements and the ingest writer's statements on a real
//! TimescaleDB engine in CI: PGlite (PostgreSQL 17, TimescaleDB 2.23, compiled to WASM,
//! from npm), one session at a time, always a superuser. Every statement runs as the
//! role it is meant to run as (`SET ROLE`): provisioning as a role with exactly the
//! privileges the operator guide recommends, jobs as the tenant's owner, ingest as its
//! writer, dashboards as its reader.
//!
//! What this cannot show — background workers starting jobs as the owner login, several
//! sessions, TLS, PostgreSQL 15, TimescaleDB 2.28 — `e2e/test-timescaledb` shows on a
//! real server (docs/database.md, "How the TimescaleDB path is verified").

use std::collections::BTreeSet;
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};
use smartregion_e2e::pglite::PgLite;
use smartregion_e2e::unique_name;
use smartregion_ingest::writer::Statements;
use smartregion_operator::crd::Storage;
use smartregion_operator::surface::TenantName;
use smartregion_operator::surface::provisioning::RoleLimits;
use smartregion_operator::surface::provisioning::{self as provision, Desired, Passwords};
use smartregion_operator::surface::provisioning::{Change, HypertableSettings};
use smartregion_operator::surface::provisioning::{StorageMode, storage};
use smartregion_operator::surface::provisioning::{TenantDb, quote};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const ADMIN: &str = "smartregion_admin";

/// A fresh PGlite and its one session, acting as the least-privileged admin. The
/// extension is created by the superuser, as a DBA would: PGlite's TimescaleDB build is
/// not marked trusted (TimescaleDB 2.28's own control file is; the full suite lets the
/// admin create it). PGlite refuses `GRANT CREATE ON DATABASE` ("tuple concurrently
/// deleted"), so the admin owns the database instead, which includes that privilege.
async fn start() -> Result<(PgLite, Client)> {
    let server = PgLite::start()?;
    let (client, connection) = tokio_postgres::connect(&server.url(), NoTls)
        .await
        .context("failed to connect to PGlite")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("pglite connection: {error}");
        }
    });
    // The first request after start-up goes as a simple query: PGlite's socket closes
    // the connection when the first one is an extended-protocol query.
    let database = client
        .simple_query("SELECT current_database()")
        .await
        .context("the first query")?
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .context("no current database")?;
    for statement in [
        "CREATE EXTENSION IF NOT EXISTS timescaledb".to_string(),
        format!("CREATE ROLE {ADMIN} NOLOGIN CREATEROLE"),
        format!("ALTER DATABASE {} OWNER TO {ADMIN}", quote(&database)),
        format!("SET ROLE {ADMIN}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .with_context(|| format!("failed to set up PGlite: {statement}"))?;
    }
    Ok((server, client))
}

/// Back to the admin, as the operator's own session is.
async fn as_admin(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!("SET ROLE {ADMIN}; RESET search_path"))
        .await?;
    Ok(())
}

/// Acts as `role` with the settings its login would get (`ALTER ROLE ... SET`).
async fn as_login(client: &Client, role: &str) -> Result<()> {
    as_admin(client).await?;
    let settings: Vec<String> = client
        .query_opt(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
             WHERE r.rolname = $1 AND s.setdatabase = 0",
            &[&role],
        )
        .await?
        .map(|row| row.get(0))
        .unwrap_or_default();
    client
        .batch_execute(&format!("SET ROLE {}", quote(role)))
        .await?;
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .context("a role setting without =")?;
        client
            .execute("SELECT set_config($1, $2, false)", &[&name, &value])
            .await?;
    }
    Ok(())
}

fn settings() -> HypertableSettings {
    HypertableSettings {
        chunk_interval_hours: 24,
        retention_days: 365,
        compress_after_days: 7,
    }
}

async fn timescaledb_schema(client: &Client) -> Result<String> {
    Ok(client
        .query_one(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?
        .get(0))
}

/// The operator's database step for one tenant, as `reconcile::database` runs it:
/// storage decided, roles and schema, then the hypertable's settings.
async fn provision(
    client: &mut Client,
    db: &TenantDb,
    hypertable: &HypertableSettings,
    rotate: bool,
) -> Result<(provision::Provisioned, Vec<Change>)> {
    as_admin(client).await.context("back to the admin")?;
    let table = provision::inspect_table(client, db, true).await?;
    let timescaledb = timescaledb_schema(client).await?;
    let layout = storage::decide(table, None, Some(&timescaledb), StorageMode::Auto)?;
    ensure!(
        layout.storage() == Storage::Hypertable,
        "auto storage with TimescaleDB: {layout:?}"
    );
    let desired = Desired {
        limits: RoleLimits {
            connection_limit: 6,
            statement_timeout_ms: 30_000,
        },
        layout,
        timescaledb_schema: Some(timescaledb.clone()),
        hypertable: hypertable.clone(),
    };
    let passwords = Passwords {
        writer: "writer-password-writer-password-writer",
        reader: "reader-password-reader-password-reader",
    };
    let provisioned = provision::ensure_schema_exists(
        client,
        db,
        &provision::Provisioning {
            desired: &desired,
            table,
            logins: &provision::WriterLogins::first(db),
            passwords: provision::Passwords {
                writer: passwords.writer,
                reader: passwords.reader,
            },
            credentials: if rotate {
                provision::Credentials::Issue
            } else {
                provision::Credentials::Keep
            },
            writes: provision::Writes::Allowed,
        },
    )
    .await
    .context("the operator's provisioning")?;
    let changes = provision::ensure_hypertable(client, db, hypertable, &timescaledb)
        .await
        .context("the operator's hypertable settings")?;
    Ok((provisioned, changes))
}

/// The tenant's jobs: (id, proc_name, owner, config as text, scheduled).
async fn jobs(client: &Client, db: &TenantDb) -> Result<Vec<(i32, String, String, String, bool)>> {
    Ok(client
        .query(
            "SELECT job_id, proc_name::text, owner::text, config::text, scheduled \
             FROM timescaledb_information.jobs WHERE hypertable_schema = $1 ORDER BY job_id",
            &[&db.schema],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect())
}

fn job_id(jobs: &[(i32, String, String, String, bool)], proc_name: &str) -> Result<i32> {
    jobs.iter()
        .find(|job| job.1 == proc_name)
        .map(|job| job.0)
        .with_context(|| format!("no {proc_name} job in {jobs:?}"))
}

/// One ingest batch as the writer commits a few rows, or a batch that holds a row already
/// stored: one statement that absorbs duplicates and fills the sensor catalog — the
/// writer's own. (PGlite's socket does not carry COPY, the writer's way for new rows in
/// bulk, which the full suite runs.)
async fn ingest(
    client: &mut Client,
    schema: &str,
    rows: &[(String, SystemTime, f64)],
) -> Result<(), tokio_postgres::Error> {
    let statements = Statements::new(schema);
    let transaction = client.transaction().await?;
    // In slices: PGlite's socket drops a connection on a very large message.
    for slice in rows.chunks(500) {
        let sensors: Vec<&str> = slice.iter().map(|row| row.0.as_str()).collect();
        let metrics = vec!["pm10"; slice.len()];
        let times: Vec<SystemTime> = slice.iter().map(|row| row.1).collect();
        let values: Vec<f64> = slice.iter().map(|row| row.2).collect();
        let received = vec![SystemTime::now(); slice.len()];
        let mut catalog = sensors.clone();
        catalog.sort_unstable();
        catalog.dedup();
        transaction
            .execute(
                &statements.insert_skipping,
                &[&sensors, &metrics, &times, &values, &received, &catalog],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Hourly rows for `days` days back from now, for 3 sensors.
fn hourly(days: u64) -> Vec<(String, SystemTime, f64)> {
    let now = SystemTime::now();
    (1..days * 24)
        .flat_map(|hour| {
            (0..3).map(move |sensor| {
                (
                    format!("sensor-{sensor}"),
                    now - std::time::Duration::from_secs(hour * 3600),
                    hour as f64,
                )
            })
        })
        .collect()
}

async fn count(client: &Client, db: &TenantDb, filter: &str) -> Result<i64> {
    Ok(client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.measurements WHERE {filter}",
                quote(&db.schema)
            ),
            &[],
        )
        .await?
        .get(0))
}

fn expect_denied<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tokio_postgres::Error>,
) -> Result<()> {
    match result {
        Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => Ok(()),
        other => bail!("{what}: expected permission denied, got {other:?}"),
    }
}

#[tokio::test]
async fn provisioning_gives_the_owner_jobs_it_can_run_and_settings_reach_them() -> Result<()> {
    let (_server, mut client) = start().await?;
    let db = TenantDb::for_tenant(&TenantName::parse(&unique_name("prato"))?);

    let (first, changes) = provision(&mut client, &db, &settings(), false).await?;
    ensure!(first.changed && first.passwords_set, "{first:?}");
    ensure!(
        changes
            == [
                Change::EnableCompression,
                Change::AddRetentionPolicy,
                Change::AddCompressionPolicy
            ],
        "{changes:?}"
    );
    let created = jobs(&client, &db).await?;
    ensure!(created.len() == 2, "{created:?}");
    for (_, proc_name, owner, config, scheduled) in &created {
        ensure!(
            owner == &db.owner && *scheduled,
            "{proc_name}: owned by {owner}"
        );
        let wanted = if proc_name == "policy_retention" {
            "\"drop_after\": \"365 days\""
        } else {
            "\"compress_after\": \"7 days\""
        };
        ensure!(config.contains(wanted), "{proc_name}: {config}");
    }
    let owner: (bool, i32) = client
        .query_one(
            "SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&db.owner],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))?;
    ensure!(owner == (true, 4), "the owner can start jobs: {owner:?}");

    // Idle, and a rotation: nothing of the hypertable changes, jobs keep their ids.
    let (again, changes) = provision(&mut client, &db, &settings(), false).await?;
    ensure!(
        !again.changed && changes.is_empty(),
        "{again:?} {changes:?}"
    );
    let (rotated, changes) = provision(&mut client, &db, &settings(), true).await?;
    ensure!(rotated.passwords_set && changes.is_empty(), "{changes:?}");
    ensure!(
        jobs(&client, &db).await? == created,
        "jobs unchanged by idle and rotation"
    );

    // Every setting reaches the jobs and the hypertable, with the same job ids.
    let changed = HypertableSettings {
        chunk_interval_hours: 12,
        retention_days: 30,
        compress_after_days: 3,
    };
    let (_, changes) = provision(&mut client, &db, &changed, false).await?;
    let (retention, compression) = (
        job_id(&created, "policy_retention")?,
        job_id(&created, "policy_compression")?,
    );
    ensure!(
        changes
            == [
                Change::SetChunkInterval,
                Change::SetRetention(retention),
                Change::SetCompressAfter(compression)
            ],
        "{changes:?}"
    );
    let after = jobs(&client, &db).await?;
    let ids = |jobs: &[(i32, String, String, String, bool)]| -> Vec<i32> {
        jobs.iter().map(|job| job.0).collect()
    };
    ensure!(ids(&after) == ids(&created), "same jobs: {after:?}");
    ensure!(
        after
            .iter()
            .any(|j| j.3.contains("\"drop_after\": \"30 days\"")),
        "{after:?}"
    );
    ensure!(
        after
            .iter()
            .any(|j| j.3.contains("\"compress_after\": \"3 days\"")),
        "{after:?}"
    );
    let interval: String = client
        .query_one(
            "SELECT time_interval::text FROM timescaledb_information.dimensions \
             WHERE hypertable_schema = $1 AND hypertable_name = 'measurements'",
            &[&db.schema],
        )
        .await?
        .get(0);
    ensure!(interval == "12:00:00", "chunk interval {interval}");
    let (_, changes) = provision(&mut client, &db, &changed, false).await?;
    ensure!(changes.is_empty(), "settled: {changes:?}");

    // The jobs run as their owner and do their work.
    as_login(&client, &db.writer_logins[0]).await?;
    ingest(&mut client, &db.schema, &hourly(40)).await?;
    as_login(&client, &db.owner).await?;
    // One CALL per request: the jobs commit, which a multi-statement request forbids.
    for job in [compression, retention] {
        client
            .batch_execute(&format!("CALL public.run_job({job})"))
            .await
            .with_context(|| format!("the owner runs job {job}"))?;
    }
    let compressed: i64 = client
        .query_one(
            "SELECT count(*) FROM timescaledb_information.chunks \
             WHERE hypertable_schema = $1 AND is_compressed",
            &[&db.schema],
        )
        .await?
        .get(0);
    ensure!(compressed > 0, "chunks past compress-after are compressed");
    ensure!(
        count(&client, &db, "time < now() - interval '31 days'").await? == 0,
        "chunks past retention are dropped"
    );
    ensure!(count(&client, &db, "time > now() - interval '29 days'").await? > 0);
    Ok(())
}

#[tokio::test]
async fn writers_readers_and_compressed_chunks_behave_as_on_any_table() -> Result<()> {
    let (_server, mut client) = start().await?;
    let (own, other) = (
        TenantDb::for_tenant(&TenantName::parse(&unique_name("pisa"))?),
        TenantDb::for_tenant(&TenantName::parse(&unique_name("siena"))?),
    );
    provision(&mut client, &own, &settings(), false).await?;
    provision(&mut client, &other, &settings(), false).await?;

    as_login(&client, &own.writer_logins[0]).await?;
    let rows = hourly(20);
    ingest(&mut client, &own.schema, &rows).await?;
    // A retried batch stores nothing new.
    ingest(&mut client, &own.schema, &rows).await?;
    as_login(&client, &own.reader).await?;
    let stored = count(&client, &own, "true").await?;
    ensure!(
        stored == rows.len() as i64,
        "{stored} rows for {} sent twice",
        rows.len()
    );

    // Compress the older chunks as the owner's job would, then write into them.
    as_login(&client, &own.owner).await?;
    client
        .query(
            "SELECT public.compress_chunk(c) FROM public.show_chunks($1::text::regclass, older_than => interval '7 days') c",
            &[&format!("{}.measurements", quote(&own.schema))],
        )
        .await?;
    as_login(&client, &own.writer_logins[0]).await?;
    let old = SystemTime::now() - std::time::Duration::from_secs(10 * 86_400 + 1800);
    let into_compressed = vec![
        ("sensor-new".to_string(), old, 1.0),
        // Already stored (hour 240 of sensor-0), now inside a compressed chunk.
        rows.iter()
            .find(|row| row.0 == "sensor-0" && row.2 == 240.0)
            .cloned()
            .context("row of hour 240")?,
    ];
    ingest(&mut client, &own.schema, &into_compressed).await?;
    ingest(&mut client, &own.schema, &into_compressed).await?;
    as_login(&client, &own.reader).await?;
    ensure!(
        count(&client, &own, "true").await? == stored + 1,
        "a new row into a compressed chunk is stored once, a duplicate absorbed"
    );

    // The reader uses TimescaleDB's functions unqualified, and only reads.
    let buckets: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT time_bucket('1 day', time), first(value, time), \
             last(value, time) FROM measurements GROUP BY 1) AS days",
            &[],
        )
        .await
        .context("time_bucket, first and last on the reader's search path")?
        .get(0);
    ensure!(buckets >= 20, "{buckets} daily buckets");
    expect_denied(
        "the reader inserts",
        client
            .execute(
                "INSERT INTO measurements (sensor, metric, time, value) VALUES ('s', 'm', now(), 1)",
                &[],
            )
            .await,
    )?;
    expect_denied(
        "a reader reads another tenant",
        client
            .query(
                &format!("SELECT * FROM {}.measurements", quote(&other.schema)),
                &[],
            )
            .await,
    )?;
    let foreign_chunk: String = {
        as_admin(&client).await?;
        client
            .query_one(
                "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks \
                 WHERE hypertable_schema = $1 LIMIT 1",
                &[&own.schema],
            )
            .await?
            .get(0)
    };
    as_login(&client, &other.reader).await?;
    expect_denied(
        "a reader reads another tenant's chunk",
        client
            .query(&format!("SELECT * FROM {foreign_chunk}"), &[])
            .await,
    )?;

    // Quota or suspension: the writer loses INSERT, on the hypertable and its chunks.
    as_admin(&client).await?;
    ensure!(provision::ensure_writes_allowed(&client, &own, false).await?);
    as_login(&client, &own.writer_logins[0]).await?;
    expect_denied(
        "a refused writer ingests",
        ingest(&mut client, &own.schema, &hourly(1)).await,
    )?;
    expect_denied(
        "a refused writer inserts into a chunk directly",
        client
            .execute(
                &format!(
                    "INSERT INTO {foreign_chunk} (sensor, metric, time, value) VALUES ('s', 'm', now(), 1)"
                ),
                &[],
            )
            .await,
    )?;

    // Usage and the insert counter read the hypertable's chunks.
    as_admin(&client).await?;
    let layout = storage::Layout::Hypertable {
        timescaledb: timescaledb_schema(&client).await?,
    };
    let bytes = provision::measure_schema_bytes(&client, &own, &layout).await?;
    ensure!(bytes > 100_000, "usage {bytes} bytes");
    // PGlite keeps no statistics (one backend never reports them), so the count itself
    // is checked by the full suite; here the query runs on the hypertable's chunks.
    provision::rows_inserted(&client, &own, &layout).await?;
    Ok(())
}

/// Every row of the catalogs a tenant leaves marks in, as text (read as the superuser:
/// some of TimescaleDB's tables are not readable by the admin).
async fn catalog_rows(client: &Client) -> Result<BTreeSet<String>> {
    client.batch_execute("RESET ROLE").await?;
    let rows = catalog_rows_as_superuser(client).await;
    as_admin(client).await?;
    rows
}

async fn catalog_rows_as_superuser(client: &Client) -> Result<BTreeSet<String>> {
    let mut tables: Vec<String> = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname LIKE '\\_timescaledb%'",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    tables.extend(
        [
            "pg_catalog.pg_shdepend",
            "pg_catalog.pg_default_acl",
            "pg_catalog.pg_db_role_setting",
            "pg_catalog.pg_auth_members",
            "pg_catalog.pg_init_privs",
        ]
        .map(String::from),
    );
    let mut rows = BTreeSet::new();
    for table in tables {
        for row in client
            .query(&format!("SELECT t::text FROM {table} AS t"), &[])
            .await
            .with_context(|| format!("reading {table}"))?
        {
            rows.insert(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    for (what, query) in [
        (
            "relation",
            "SELECT oid::text || ' ' || relname FROM pg_class",
        ),
        // Temporary schemas belong to the session (the writer's staging table), not to
        // the tenant.
        (
            "schema",
            "SELECT nspname::text FROM pg_namespace WHERE nspname !~ '^pg_(toast_)?temp_'",
        ),
        ("role", "SELECT rolname::text FROM pg_roles"),
        ("type", "SELECT oid::text FROM pg_type"),
        (
            "dependency",
            "SELECT objid::text || ' ' || refobjid::text FROM pg_depend",
        ),
    ] {
        for row in client.query(query, &[]).await? {
            rows.insert(format!("{what}: {}", row.get::<_, String>(0)));
        }
    }
    Ok(rows)
}

#[tokio::test]
async fn retain_pauses_adoption_resumes_and_delete_leaves_the_database_as_it_was() -> Result<()> {
    let (_server, mut client) = start().await?;
    let db = TenantDb::for_tenant(&TenantName::parse(&unique_name("grosseto"))?);
    let before = catalog_rows(&client).await?;

    provision(&mut client, &db, &settings(), false).await?;
    as_login(&client, &db.writer_logins[0]).await?;
    ingest(&mut client, &db.schema, &hourly(20)).await?;
    client.batch_execute("DISCARD TEMP").await?;
    as_login(&client, &db.owner).await?;
    client
        .query(
            "SELECT public.compress_chunk(c) FROM public.show_chunks($1::text::regclass, older_than => interval '7 days') c",
            &[&format!("{}.measurements", quote(&db.schema))],
        )
        .await?;

    // Retain: no login, no job; the data stays.
    as_admin(&client).await?;
    let timescaledb = timescaledb_schema(&client).await?;
    provision::ensure_logins_disabled(&client, &db, Some(&timescaledb)).await?;
    let logins: Vec<bool> = client
        .query(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = ANY($1)",
            &[&db.roles()],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(
        logins.len() == db.roles().len() && logins.iter().all(|login| !login),
        "{logins:?}"
    );
    let paused = jobs(&client, &db).await?;
    ensure!(
        paused.len() == 2 && paused.iter().all(|job| !job.4),
        "{paused:?}"
    );
    ensure!(count(&client, &db, "true").await? > 0);

    // Adoption: the tenant is created again and everything runs again.
    let (adopted, changes) = provision(&mut client, &db, &settings(), false).await?;
    ensure!(adopted.changed, "logins come back");
    ensure!(
        changes
            .iter()
            .filter(|c| matches!(c, Change::Resume(_)))
            .count()
            == 2,
        "{changes:?}"
    );

    // Delete: nothing of the tenant anywhere, TimescaleDB's own schemas included.
    provision::ensure_schema_absent(&mut client, &db, Some(&timescaledb)).await?;
    let after = catalog_rows(&client).await?;
    let left: Vec<&String> = after.difference(&before).collect();
    let gone: Vec<&String> = before.difference(&after).collect();
    ensure!(
        left.is_empty() && gone.is_empty(),
        "the database differs from before the tenant: left {left:#?}, gone {gone:#?}"
    );
    ensure!(
        provision::inspect_table(&client, &db, true)
            .await?
            .is_none()
    );
    Ok(())
}
