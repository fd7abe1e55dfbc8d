//! The database part of tenants, through the operator and the Secrets it writes, exactly
//! as a tenant's client uses them: isolation, idempotent inserts, TLS, partitions and
//! retention, rotation, Retain and Delete, and names at the edges.

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::{Phase, Storage};
use tokio_postgres::error::SqlState;

/// The operator as these tests run it: TLS to PostgreSQL with the server's certificate
/// checked against the cluster CA, as production should.
fn operator(shard: &str, extra: &[&str]) -> Result<Operator> {
    let ca = format!("--database-ca-file={}", shared().ca_cert.display());
    let mut args = vec!["--database-sslmode=verify-full", ca.as_str()];
    args.extend_from_slice(extra);
    Operator::start(shared(), shard, &args)
}

async fn admin() -> Result<tokio_postgres::Client> {
    connect_plain(&shared().database_url).await
}

const INSERT: &str = "INSERT INTO measurements (sensor, metric, time, value) \
                      VALUES ($1, 'pm10', $2::text::timestamptz, 21.5) ON CONFLICT DO NOTHING";

#[tokio::test]
async fn secrets_give_a_client_its_own_schema_and_nothing_else() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("isolation");
    let _operator = operator(&shard, &[])?;
    let (own, other) = (unique_name("prato"), unique_name("firenze"));
    apply_tenant(&client, &example("prato", &own, &shard)?).await?;
    apply_tenant(&client, &example("firenze", &other, &shard)?).await?;
    for name in [&own, &other] {
        let tenant = wait_ready(&client, name).await?;
        ensure!(condition(&tenant, "DatabaseReady").is_some_and(|c| c.status == "True"));
        ensure!(condition(&tenant, "WithinQuota").is_some_and(|c| c.status == "True"));
        let status = tenant.status.as_ref().unwrap();
        ensure!(status.database.as_ref().unwrap().schema == schema_of(name));
        ensure!(
            storage_of(&tenant) == Some(default_storage()),
            "storage in status: {:?}",
            storage_of(&tenant)
        );
        ensure!(
            status.usage.as_ref().and_then(|u| u.database_bytes) > Some(0),
            "measured usage in status: {:?}",
            status.usage
        );
    }
    ensure!(secret_value(&client, &own, "db-writer", "sslmode").await? == "verify-full");
    // The operator's own sessions are encrypted.
    let admin = admin().await?;
    let unencrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'smartregion-operator' AND NOT s.ssl",
            &[],
        )
        .await?
        .get(0);
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'smartregion-operator' AND s.ssl",
            &[],
        )
        .await?
        .get(0);
    ensure!(
        unencrypted == 0 && encrypted > 0,
        "operator sessions: {encrypted} with TLS, {unencrypted} without"
    );

    // Exactly as a user would: the uri from the Secret (this client does not verify the
    // server, so it connects in plain text; the libpq sslmode is for real clients).
    let uri = |name: &str, secret: &str| {
        let client = client.clone();
        let (name, secret) = (name.to_string(), secret.to_string());
        async move {
            let uri = secret_value(&client, &name, &secret, "uri").await?;
            anyhow::Ok(uri.replace("sslmode=verify-full", "sslmode=disable"))
        }
    };
    let writer = connect_plain(&uri(&own, "db-writer").await?).await?;
    let time = "2026-11-23T10:00:00+01:00";
    let first = writer.execute(INSERT, &[&"via-roma", &time]).await?;
    let again = writer.execute(INSERT, &[&"via-roma", &time]).await?;
    ensure!(
        (first, again) == (1, 0),
        "the same measurement is stored once: {first}, {again}"
    );

    let theirs = format!("\"{}\".measurements", schema_of(&other));
    denied(
        "reading another tenant's measurements",
        writer.query(&format!("SELECT * FROM {theirs}"), &[]).await,
    )?;
    denied(
        "writing another tenant's measurements",
        writer
            .execute(
                &format!(
                    "INSERT INTO {theirs} (sensor, metric, time, value) VALUES ('s', 'm', now(), 1)"
                ),
                &[],
            )
            .await,
    )?;
    denied(
        "listing another tenant's sensors",
        writer
            .query(
                &format!("SELECT id FROM \"{}\".sensors", schema_of(&other)),
                &[],
            )
            .await,
    )?;
    denied(
        "creating a table in public",
        writer
            .batch_execute("CREATE TABLE public.intruder (x int)")
            .await,
    )?;
    denied(
        "creating a table in its own schema",
        writer.batch_execute("CREATE TABLE intruder (x int)").await,
    )?;
    match default_storage() {
        // Inserting straight into a partition would go around the storage quota.
        Storage::Partitions => {
            let partition: String = admin
                .query_one(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname LIKE 'measurements_p%' LIMIT 1",
                    &[&schema_of(&own)],
                )
                .await?
                .get(0);
            denied(
                "inserting into a partition directly",
                writer
                    .execute(
                        &format!(
                            "INSERT INTO \"{partition}\" (sensor, metric, time, value) VALUES ('s', 'm', now(), 1)"
                        ),
                        &[],
                    )
                    .await,
            )?;
        }
        // A hypertable's chunks live in TimescaleDB's schema: another tenant's writer can
        // neither read nor write them there.
        Storage::Hypertable => {
            let chunk: String = admin
                .query_one(
                    "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks \
                     WHERE hypertable_schema = $1 LIMIT 1",
                    &[&schema_of(&own)],
                )
                .await?
                .get(0);
            let intruder = connect_plain(&uri(&other, "db-writer").await?).await?;
            denied(
                "reading another tenant's chunk",
                intruder.query(&format!("SELECT * FROM {chunk}"), &[]).await,
            )?;
            denied(
                "writing another tenant's chunk",
                intruder
                    .execute(
                        &format!(
                            "INSERT INTO {chunk} (sensor, metric, time, value) VALUES ('s', 'm', '2026-11-23T10:00:00+01:00', 1)"
                        ),
                        &[],
                    )
                    .await,
            )?;
        }
    }

    let reader = connect_plain(&uri(&own, "db-reader").await?).await?;
    let rows: i64 = reader
        .query_one("SELECT count(*) FROM measurements", &[])
        .await?
        .get(0);
    ensure!(rows == 1, "the reader sees the one row, found {rows}");
    denied(
        "the reader inserting",
        reader.execute(INSERT, &[&"s2", &time]).await,
    )?;
    let other_writer_password = secret_value(&client, &other, "db-writer", "password").await?;
    let mut wrong = uri(&own, "db-writer").await?;
    let own_password = secret_value(&client, &own, "db-writer", "password").await?;
    wrong = wrong.replace(&own_password, &other_writer_password);
    ensure!(
        connect_plain(&wrong).await.is_err(),
        "another tenant's password is refused"
    );

    drop((writer, reader));
    delete_all_and_wait(&client, &[own, other]).await?;
    Ok(())
}

#[tokio::test]
async fn partitions_stay_ahead_of_now_and_retention_drops_old_ones() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("partitions");
    // A short requeue: the periodic reconcile is what maintains partitions. Partitions
    // asked for explicitly: on TimescaleDB too, where they are what an operator with
    // --database-storage=partitions gives.
    let _operator = operator(
        &shard,
        &["--requeue-seconds=2", "--database-storage=partitions"],
    )?;
    let name = unique_name("partitions");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["database"] = json!({ "retentionDays": 365, "chunkIntervalHours": 24 });
    apply_tenant(&client, &tenant).await?;
    let ready = wait_ready(&client, &name).await?;
    ensure!(storage_of(&ready) == Some(Storage::Partitions));
    let schema = schema_of(&name);
    let admin = admin().await?;

    let found: Vec<(String, String)> = admin
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&schema],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    ensure!(
        found.iter().any(|(name, _)| name == "measurements_default"),
        "{found:?}"
    );
    // Partitions reach at least three days past now.
    for days_ahead in [0i32, 1, 2, 3] {
        let routed: String = admin
            .query_one(
                &format!(
                    "WITH probe AS (INSERT INTO \"{schema}\".measurements (sensor, metric, time, value) \
                     VALUES ('probe', 'ahead', now() + make_interval(days => $1), 0) RETURNING tableoid) \
                     SELECT tableoid::regclass::text FROM probe"
                ),
                &[&days_ahead],
            )
            .await?
            .get(0);
        ensure!(
            routed.contains("measurements_p"),
            "now + {days_ahead} days landed in {routed}, not a range partition ({found:?})"
        );
    }
    // Far outside any range: the default partition takes it, nothing is refused.
    let far: String = admin
        .query_one(
            &format!(
                "WITH probe AS (INSERT INTO \"{schema}\".measurements (sensor, metric, time, value) \
                 VALUES ('probe', 'far', '2100-01-01T00:00:00Z', 0) RETURNING tableoid) \
                 SELECT tableoid::regclass::text FROM probe"
            ),
            &[],
        )
        .await?
        .get(0);
    ensure!(far.ends_with("measurements_default"), "{far}");

    // An old partition (as an earlier, longer retention left it) and an old row in the
    // default partition; then retention is shortened to 7 days.
    let old = "measurements_p2026010100_2026010200";
    admin
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".{old} PARTITION OF \"{schema}\".measurements \
             FOR VALUES FROM ('2026-01-01T00:00:00Z') TO ('2026-01-02T00:00:00Z'); \
             INSERT INTO \"{schema}\".measurements (sensor, metric, time, value) VALUES \
             ('old', 'pm10', '2026-01-01T12:00:00Z', 1), ('older', 'pm10', '2025-06-01T00:00:00Z', 1)"
        ))
        .await?;
    tenant["spec"]["database"]["retentionDays"] = json!(7);
    apply_tenant(&client, &tenant).await?;
    wait::until("the old partition and rows to be dropped", Duration::from_secs(30), || {
        let admin = &admin;
        let schema = schema.clone();
        async move {
            let old_partition: Option<String> = admin
                .query_one(
                    "SELECT to_regclass($1)::text",
                    &[&format!("\"{schema}\".{old}")],
                )
                .await?
                .get(0);
            let old_rows: i64 = admin
                .query_one(
                    &format!(
                        "SELECT count(*) FROM \"{schema}\".measurements WHERE time < now() - interval '7 days'"
                    ),
                    &[],
                )
                .await?
                .get(0);
            Ok((old_partition.is_none() && old_rows == 0).then_some(()))
        }
    })
    .await?;
    let kept: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".measurements WHERE sensor = 'probe'"),
            &[],
        )
        .await?
        .get(0);
    ensure!(kept == 5, "rows inside retention are kept, found {kept}");
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn rotation_refuses_the_old_password_and_never_shows_either() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("rotation");
    let operator = operator(&shard, &[])?;
    let name = unique_name("rotation");
    let mut tenant = example("prato", &name, &shard)?;
    apply_tenant(&client, &tenant).await?;
    let before = wait_ready(&client, &name).await?;
    let issued_at = before
        .status
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .and_then(|d| d.credentials_rotated_at.clone())
        .context("credentialsRotatedAt set at creation")?;
    let old_uri = secret_value(&client, &name, "db-writer", "uri").await?;
    let old_password = secret_value(&client, &name, "db-writer", "password").await?;
    let old_reader_password = secret_value(&client, &name, "db-reader", "password").await?;
    let plain = |uri: &str| uri.replace("sslmode=verify-full", "sslmode=disable");
    connect_plain(&plain(&old_uri)).await?;

    // Status times have whole seconds: let the clock pass the first issue's second, so
    // that a rotation is visible as a later time.
    let next_second = issued_at.0 + k8s_openapi::jiff::SignedDuration::from_secs(1);
    wait::until("the next second", Duration::from_secs(2), || async move {
        Ok((k8s_openapi::jiff::Timestamp::now() >= next_second).then_some(()))
    })
    .await?;
    tenant["metadata"]["annotations"] =
        json!({ "smartregion.toscana.it/rotate-credentials": "2026-11-23" });
    apply_tenant(&client, &tenant).await?;
    let new_password = wait::until("a new writer password", Duration::from_secs(30), || {
        let client = client.clone();
        let name = name.clone();
        let old = old_password.clone();
        async move {
            let password = secret_value(&client, &name, "db-writer", "password").await?;
            Ok((password != old).then_some(password))
        }
    })
    .await?;
    // Status records when (and only when): a later time than the first issue.
    let api = tenants(&client);
    let after = wait::until("status to record the rotation", READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        let issued_at = issued_at.clone();
        async move {
            let tenant = api.get(&name).await?;
            let rotated_at = tenant
                .status
                .as_ref()
                .and_then(|s| s.database.as_ref())
                .and_then(|d| d.credentials_rotated_at.clone());
            Ok(rotated_at
                .is_some_and(|at| at.0 > issued_at.0)
                .then_some(tenant))
        }
    })
    .await?;

    // The old login keeps working while ingest pods that use it are left (a rotation
    // fails no write), and is refused once they are gone.
    wait::until(
        "the old writer password to be refused once the pods rolled",
        READY_TIMEOUT,
        || {
            let old_uri = plain(&old_uri);
            async move {
                match connect_plain(&old_uri).await {
                    Ok(_) => Ok(None),
                    Err(error)
                        if error
                            .downcast_ref::<tokio_postgres::Error>()
                            .and_then(|e| e.code())
                            == Some(&SqlState::INVALID_PASSWORD) =>
                    {
                        Ok(Some(()))
                    }
                    Err(other) => bail!("the old password must be refused, got {other:?}"),
                }
            }
        },
    )
    .await?;
    let new_uri = secret_value(&client, &name, "db-writer", "uri").await?;
    ensure!(new_uri.contains(&new_password));
    let writer = connect_plain(&plain(&new_uri)).await?;
    writer
        .execute(INSERT, &[&"after-rotation", &"2026-11-23T11:00:00Z"])
        .await?;
    let new_reader_password = secret_value(&client, &name, "db-reader", "password").await?;
    ensure!(
        new_reader_password != old_reader_password,
        "the reader rotates too"
    );

    // Neither password appears in the operator's logs, the tenant's Events or its status.
    let passwords = [
        &old_password,
        &new_password,
        &old_reader_password,
        &new_reader_password,
    ];
    let logs = operator.logs();
    ensure!(!logs.is_empty(), "the operator logged something");
    let events: Api<Event> = Api::all(client.clone());
    let events = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    ensure!(!events.items.is_empty(), "the tenant has Events");
    let events_text = serde_json::to_string(&events.items)?;
    let status_text = serde_json::to_string(&after.status)?;
    for password in passwords {
        for (place, text) in [
            ("operator log", &logs),
            ("Events", &events_text),
            ("status", &status_text),
        ] {
            ensure!(
                !text.contains(password.as_str()),
                "a password appears in the {place}"
            );
        }
    }
    drop(writer);
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn retain_keeps_the_data_for_a_recreated_tenant_and_delete_leaves_nothing() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("lifecycle");
    let _operator = operator(&shard, &[])?;
    let name = unique_name("lifecycle");
    let schema = schema_of(&name);
    let plain = |uri: String| uri.replace("sslmode=verify-full", "sslmode=disable");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    wait_ready(&client, &name).await?;
    let old_uri = plain(secret_value(&client, &name, "db-writer", "uri").await?);
    connect_plain(&old_uri)
        .await?
        .execute(INSERT, &[&"kept", &"2026-11-23T10:00:00Z"])
        .await?;

    // Retain (the default): namespace and logins go, data stays.
    delete_and_wait(&client, &name).await?;
    let admin = admin().await?;
    let logins: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 AND rolcanlogin",
            &[&format!("{schema}\\_%")],
        )
        .await?
        .get(0);
    ensure!(logins == 0, "Retain disables both logins");
    ensure!(
        connect_plain(&old_uri).await.is_err(),
        "the old credentials stop working"
    );

    // The same name again adopts the schema and its data, with new credentials.
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["deletionPolicy"] = json!("Delete");
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let reader = connect_plain(&plain(
        secret_value(&client, &name, "db-reader", "uri").await?,
    ))
    .await?;
    let kept: Vec<String> = reader
        .query("SELECT sensor FROM measurements", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(kept == ["kept"], "the data survived: {kept:?}");
    drop(reader);

    // Delete, confirmed: nothing left in the catalogs.
    tenants(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { "smartregion.toscana.it/confirm-delete": name } } })),
        )
        .await?;
    delete_and_wait(&client, &name).await?;
    let schemas: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await?
        .get(0);
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)",
            &[&vec![
                format!("{schema}_owner"),
                format!("{schema}_writer"),
                format!("{schema}_writer_1"),
                format!("{schema}_writer_2"),
                format!("{schema}_reader"),
            ]],
        )
        .await?
        .get(0);
    ensure!(
        (schemas, roles) == (0, 0),
        "schema {schemas}, roles {roles} left"
    );
    Ok(())
}

#[tokio::test]
async fn names_at_the_edges_work_end_to_end() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("edges");
    let _operator = operator(&shard, &[])?;
    let names = [
        // The longest allowed: 40 characters.
        unique_name(&format!("a{}bc", "-9b".repeat(10))),
        unique_name("x9-8-7"),
        // SQL keywords, exactly.
        "select".to_string(),
        "grant".to_string(),
    ];
    ensure!(
        names[0].len() == 40,
        "{} is {} long",
        names[0],
        names[0].len()
    );
    for name in &names {
        // Fixed names may be left over from an earlier run on this cluster.
        delete_confirmed(&client, name).await?;
        let mut tenant = example("prato", name, &shard)?;
        tenant["spec"]["deletionPolicy"] = json!("Delete");
        tenant["metadata"]["annotations"] =
            json!({ "smartregion.toscana.it/confirm-delete": name });
        apply_tenant(&client, &tenant).await?;
    }
    for name in &names {
        wait_ready(&client, name).await?;
        let uri = secret_value(&client, name, "db-writer", "uri")
            .await?
            .replace("sslmode=verify-full", "sslmode=disable");
        let writer = connect_plain(&uri).await?;
        let stored = writer
            .execute(INSERT, &[&"edge", &"2026-11-23T10:00:00Z"])
            .await?;
        ensure!(stored == 1, "tenant {name} stores its row");
    }
    for name in &names {
        delete_and_wait(&client, name).await?;
    }
    let admin = admin().await?;
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)",
            &[&names.iter().map(|n| schema_of(n)).collect::<Vec<_>>()],
        )
        .await?
        .get(0);
    ensure!(left == 0, "confirmed Delete dropped every schema");
    Ok(())
}

/// Deletes a tenant left over from an earlier run, confirming a Delete policy.
async fn delete_confirmed(client: &Client, name: &str) -> Result<()> {
    let api = tenants(client);
    if api.get_opt(name).await?.is_none() {
        return Ok(());
    }
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { "smartregion.toscana.it/confirm-delete": name } } })),
    )
    .await?;
    delete_and_wait(client, name).await
}

#[tokio::test]
async fn a_tenant_over_its_storage_quota_loses_insert_until_the_quota_is_raised() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("quota");
    let _operator = operator(&shard, &["--requeue-seconds=2"])?;
    let name = unique_name("quota");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["quotas"] = json!({ "databaseStorage": "2Mi" });
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let plain = |uri: String| uri.replace("sslmode=verify-full", "sslmode=disable");
    let writer = connect_plain(&plain(
        secret_value(&client, &name, "db-writer", "uri").await?,
    ))
    .await?;
    let reader = connect_plain(&plain(
        secret_value(&client, &name, "db-reader", "uri").await?,
    ))
    .await?;
    // About 4 MiB of rows and index: well past the quota.
    writer
        .execute(
            "INSERT INTO measurements (sensor, metric, time, value) \
             SELECT 'sensor-' || (i % 50), 'pm10', now() - make_interval(secs => i), i \
             FROM generate_series(1, 30000) AS i",
            &[],
        )
        .await?;

    let api = tenants(&client);
    let over = wait::until("WithinQuota to turn False", READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let tenant = api.get(&name).await?;
            Ok(condition(&tenant, "WithinQuota")
                .filter(|c| c.status == "False")
                .cloned())
        }
    })
    .await?;
    ensure!(over.reason == "DatabaseStorageExceeded", "{over:?}");
    ensure!(
        over.message.contains("spec.quotas.databaseStorage"),
        "{}",
        over.message
    );
    let refused = writer
        .execute(INSERT, &[&"late", &"2026-11-23T10:00:00Z"])
        .await;
    denied("inserting over the quota", refused)?;
    let rows: i64 = reader
        .query_one("SELECT count(*) FROM measurements", &[])
        .await?
        .get(0);
    ensure!(rows == 30_000, "reads keep working: {rows}");
    let events: Api<Event> = Api::all(client.clone());
    let reasons: Vec<String> = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?
        .items
        .into_iter()
        .filter_map(|event| event.reason)
        .collect();
    ensure!(
        reasons.iter().any(|r| r == "DatabaseStorageExceeded"),
        "an Event says why: {reasons:?}"
    );

    tenant["spec"]["quotas"] = json!({ "databaseStorage": "100Mi" });
    apply_tenant(&client, &tenant).await?;
    let back = wait_ready(&client, &name).await?;
    ensure!(condition(&back, "WithinQuota").is_some_and(|c| c.status == "True"));
    let stored = writer
        .execute(INSERT, &[&"late", &"2026-11-23T10:00:00Z"])
        .await?;
    ensure!(stored == 1, "inserts work again");
    drop((writer, reader));
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn usage_shows_the_rows_written_per_second_and_zero_when_idle() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("rate");
    let _operator = operator(&shard, &["--requeue-seconds=2"])?;
    let name = unique_name("rate");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    let ready = wait_ready(&client, &name).await?;
    let rate = |tenant: &smartregion_operator::crd::SmartRegionTenant| {
        tenant
            .status
            .as_ref()
            .and_then(|status| status.usage.as_ref())
            .and_then(|usage| usage.rows_per_second)
    };
    ensure!(
        rate(&ready) == Some(0.0),
        "a new tenant has written nothing: {:?}",
        rate(&ready)
    );

    let uri = secret_value(&client, &name, "db-writer", "uri").await?;
    let writer = connect_plain(&uri.replace("sslmode=verify-full", "sslmode=disable")).await?;
    const ROWS: i64 = 30_000;
    writer
        .execute(
            "INSERT INTO measurements (sensor, metric, time, value) \
             SELECT 'sensor-' || (i % 50), 'pm10', now() - make_interval(secs => i), i \
             FROM generate_series(1, $1::bigint) AS i",
            &[&ROWS],
        )
        .await?;
    // PostgreSQL publishes the insert count within seconds; the operator samples every
    // 2 s and reports over at least 5 s, so one batch of ROWS shows as at most ROWS / 5.
    let api = tenants(&client);
    let seen = wait::until("rowsPerSecond above zero", READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move { Ok(rate(&api.get(&name).await?).filter(|rate| *rate > 0.0)) }
    })
    .await?;
    ensure!(
        seen <= ROWS as f64 / 5.0,
        "{seen} rows/s from {ROWS} rows over at least 5 s"
    );
    // Nothing written since: back to zero.
    wait::until("rowsPerSecond back to zero", READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move { Ok((rate(&api.get(&name).await?) == Some(0.0)).then_some(())) }
    })
    .await?;
    delete_and_wait(&client, &name).await
}

#[tokio::test]
async fn a_failing_database_step_never_gives_a_suspended_writer_insert() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("hold");
    let _operator = operator(&shard, &["--requeue-seconds=2"])?;
    let name = unique_name("hold");
    let schema = schema_of(&name);
    let mut tenant = example("prato", &name, &shard)?;
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let uri = secret_value(&client, &name, "db-writer", "uri")
        .await?
        .replace("sslmode=verify-full", "sslmode=disable");
    let writer = connect_plain(&uri).await?;
    writer
        .execute(INSERT, &[&"before", &"2026-11-23T10:00:00Z"])
        .await?;
    drop(writer);
    // The writer, connecting afresh as ingest would: refused at login or at INSERT.
    let try_insert = |time: &'static str| {
        let uri = uri.clone();
        async move {
            match connect_plain(&uri).await {
                Err(_) => Ok(()),
                Ok(writer) => denied(
                    "a suspended writer inserting",
                    writer.execute(INSERT, &[&"suspended", &time]).await,
                ),
            }
        }
    };

    // A hand edit the admin cannot undo: the schema now belongs to the superuser, so
    // re-provisioning fails; meanwhile the tenant is suspended.
    let admin = admin().await?;
    admin
        .batch_execute(&format!("ALTER SCHEMA \"{schema}\" OWNER TO CURRENT_USER"))
        .await?;
    tenant["spec"]["suspended"] = json!(true);
    apply_tenant(&client, &tenant).await?;
    let failed = wait::until("the database step to fail", READY_TIMEOUT, || {
        let client = client.clone();
        let name = name.clone();
        async move {
            let tenant = tenants(&client).get(&name).await?;
            // Failed for the suspended spec, not an earlier reconcile.
            let generation = tenant.metadata.generation;
            Ok(condition(&tenant, "DatabaseReady")
                .filter(|c| {
                    c.status == "False"
                        && c.reason == "ProvisioningFailed"
                        && c.observed_generation == generation
                })
                .cloned())
        }
    })
    .await?;
    ensure!(
        failed.message.contains("permission denied") || failed.message.contains("must be owner"),
        "the condition says why: {}",
        failed.message
    );
    try_insert("2026-11-23T11:00:00Z").await?;

    // Fixed by hand: the step succeeds and the tenant is Suspended, still without INSERT.
    admin
        .batch_execute(&format!(
            "ALTER SCHEMA \"{schema}\" OWNER TO \"{schema}_owner\""
        ))
        .await?;
    wait_phase(&client, &name, Phase::Suspended).await?;
    wait::until("the database step to succeed again", READY_TIMEOUT, || {
        let client = client.clone();
        let name = name.clone();
        async move {
            let tenant = tenants(&client).get(&name).await?;
            Ok(condition(&tenant, "DatabaseReady")
                .is_some_and(|c| c.status == "True")
                .then_some(()))
        }
    })
    .await?;
    let writer = connect_plain(&uri)
        .await
        .context("the writer's login is back")?;
    denied(
        "a suspended writer inserting",
        writer
            .execute(INSERT, &[&"after", &"2026-11-23T12:00:00Z"])
            .await,
    )?;
    drop(writer);
    delete_and_wait(&client, &name).await
}
