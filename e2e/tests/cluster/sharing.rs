//! Sharing between enti, proven on the real control plane and PostgreSQL with the
//! credentials each party really holds: the provider's admin (its group, through its
//! Role) declares a share, the consumer's `db-reader` login reads exactly the shared rows
//! and is refused everything else, a third tenant reads nothing, and every change, drift
//! and deletion is followed within a reconcile (docs/sharing.md).

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::{ShareState, SmartRegionShare};

/// Three enti, each from its example (so each has its own admin group): the provider
/// (prato's), the consumer (firenze's) and a third (unione-mugello's).
struct Enti {
    client: Client,
    provider: String,
    consumer: String,
    third: String,
}

impl Enti {
    async fn start(shard: &str) -> Result<Enti> {
        let client = client().await?;
        let enti = Enti {
            provider: unique_name("share-p"),
            consumer: unique_name("share-c"),
            third: unique_name("share-t"),
            client,
        };
        for (example_name, name) in [
            ("prato", &enti.provider),
            ("firenze", &enti.consumer),
            ("unione-mugello", &enti.third),
        ] {
            apply_tenant(&enti.client, &example(example_name, name, shard)?).await?;
        }
        for name in [&enti.provider, &enti.consumer, &enti.third] {
            wait_ready(&enti.client, name).await?;
        }
        Ok(enti)
    }

    /// The provider's admin, as a member of its example's group.
    async fn provider_admin(&self) -> Result<Client> {
        shared()
            .client_as("anna.bianchi@comune.prato.it", &["prato-admins"])
            .await
    }

    /// The consumer's admin, as a member of its example's group.
    async fn consumer_admin(&self) -> Result<Client> {
        shared()
            .client_as("marco.rossi@comune.fi.it", &["firenze-admins"])
            .await
    }

    async fn delete(self) -> Result<()> {
        delete_all_and_wait(&self.client, &[self.provider, self.consumer, self.third]).await
    }
}

/// Rows of the provider: what the share below takes and what it leaves.
const ROWS: &[(&str, &str, &str, f64)] = &[
    // Shared: a river level of an Arno sensor since 2026.
    (
        "arno-ponte-vecchio",
        "river_level",
        "2026-06-01T10:00:00Z",
        3.1,
    ),
    // Not shared: before `since`, another metric, another sensor.
    (
        "arno-ponte-vecchio",
        "river_level",
        "2025-06-01T10:00:00Z",
        2.0,
    ),
    (
        "arno-ponte-vecchio",
        "turbidity",
        "2026-06-01T10:00:00Z",
        9.0,
    ),
    (
        "bisenzio-mercatale",
        "river_level",
        "2026-06-01T10:00:00Z",
        1.5,
    ),
];

/// What no reader of the share may ever see, in a row or in an error message.
const UNSHARED: &[&str] = &["turbidity", "bisenzio"];

async fn write_rows(client: &Client, provider: &str) -> Result<()> {
    let writer = login(client, provider, "db-writer").await?;
    for (sensor, metric, time, value) in ROWS {
        writer
            .execute(
                "INSERT INTO measurements (sensor, metric, time, value) \
                 VALUES ($1, $2, $3::text::timestamptz, $4)",
                &[sensor, metric, time, value],
            )
            .await?;
    }
    writer
        .batch_execute(
            "INSERT INTO sensors (id, name) VALUES \
             ('arno-ponte-vecchio', 'Arno a Ponte Vecchio'), \
             ('arno-rovezzano', 'Arno a Rovezzano'), \
             ('bisenzio-mercatale', 'Bisenzio a Mercatale')",
        )
        .await?;
    Ok(())
}

/// The river-levels share: one metric, the Arno's sensors, from 2026 on.
fn river_levels(provider: &str, consumers: &[&str]) -> serde_json::Value {
    share(
        provider,
        "river-levels",
        consumers,
        json!({
            "metrics": ["river_level"],
            "sensorPrefixes": ["arno-"],
            "since": "2026-01-01T00:00:00Z",
        }),
    )
}

/// (sensor, metric, value) of every row the reader reads from `view`, sorted.
async fn read(
    reader: &tokio_postgres::Client,
    view: &str,
) -> Result<Vec<(String, String, f64)>, tokio_postgres::Error> {
    let rows = reader
        .query(
            &format!("SELECT sensor, metric, value FROM {view} ORDER BY sensor, metric, time"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// Waits until the consumer's reader reads exactly `expected` from `view`.
async fn wait_reads(
    client: &Client,
    consumer: &str,
    view: &str,
    expected: &[(&str, &str, f64)],
) -> Result<()> {
    let expected: Vec<(String, String, f64)> = expected
        .iter()
        .map(|(s, m, v)| (s.to_string(), m.to_string(), *v))
        .collect();
    let expected = &expected;
    wait::until(
        &format!("{consumer}'s reader to read {expected:?} from {view}"),
        READY_TIMEOUT,
        || async move {
            let reader = login(client, consumer, "db-reader").await?;
            Ok(match read(&reader, view).await {
                Ok(rows) if rows == *expected => Some(()),
                _ => None,
            })
        },
    )
    .await
}

/// Waits until the tenant's reader is refused `view`.
async fn wait_refused(client: &Client, tenant: &str, view: &str) -> Result<()> {
    wait::until(
        &format!("{tenant}'s reader to be refused {view}"),
        READY_TIMEOUT,
        || async move {
            let reader = login(client, tenant, "db-reader").await?;
            Ok(denied(view, read(&reader, view).await).ok())
        },
    )
    .await
}

/// The relations that hold the provider's measurements: its partitions (PostgreSQL) or
/// chunks (TimescaleDB), as the platform's superuser sees them.
async fn storage_relations(schema: &str) -> Result<Vec<String>> {
    let admin = connect_plain(&shared().database_url).await?;
    let rows = admin
        .query(
            "WITH RECURSIVE children(oid) AS ( \
               SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::text::regclass \
               UNION SELECT i.inhrelid FROM pg_inherits i JOIN children c ON i.inhparent = c.oid) \
             SELECT oid::regclass::text FROM children",
            &[&format!("\"{schema}\".measurements")],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[tokio::test]
async fn a_consumer_reads_exactly_the_shared_rows_and_nothing_else_of_the_provider() -> Result<()> {
    let shard = unique_name("share-read");
    // The CRDs first: the operator refuses to start without them.
    client().await?;
    let _operator = Operator::start(shared(), &shard, &[])?;
    let enti = Enti::start(&shard).await?;
    let (client, provider, consumer, third) =
        (&enti.client, &enti.provider, &enti.consumer, &enti.third);
    write_rows(client, provider).await?;

    // The provider's admin declares it, in its own namespace, with the Role it has.
    let admin = enti.provider_admin().await?;
    apply_share(&admin, &river_levels(provider, &[consumer])).await?;
    let ready = wait_share(client, provider, "river-levels", "Ready", share_ready).await?;
    let status = ready.status.context("status")?;
    let view = status.read_as.context("readAs")?;
    let sensors_view = status.sensors_read_as.context("sensorsReadAs")?;
    ensure!(
        view == format!("s_{}.river_levels", provider.replace('-', "_")),
        "{view}"
    );
    ensure!(
        status.consumers.len() == 1
            && status.consumers[0].tenant == *consumer
            && status.consumers[0].state == ShareState::Active,
        "{:?}",
        status.consumers
    );
    // The consumer's status says what it may read and where.
    let listed = wait::until(
        "the consumer's status to list the share",
        READY_TIMEOUT,
        || async move {
            let tenant = tenants(client).get(consumer).await?;
            Ok(tenant
                .status
                .map(|s| s.shared_with_me)
                .filter(|shared| !shared.is_empty()))
        },
    )
    .await?;
    ensure!(
        listed.len() == 1
            && listed[0].provider == *provider
            && listed[0].share == "river-levels"
            && listed[0].read_as == view,
        "{listed:?}"
    );

    // Exactly the shared rows, and the shared sensors' catalogue entries.
    let reader = login(client, consumer, "db-reader").await?;
    let rows = read(&reader, &view).await?;
    ensure!(
        rows == [("arno-ponte-vecchio".into(), "river_level".into(), 3.1)],
        "{rows:?}"
    );
    let sensors: Vec<String> = reader
        .query(&format!("SELECT id FROM {sensors_view} ORDER BY id"), &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    ensure!(sensors == ["arno-ponte-vecchio"], "{sensors:?}");

    // Nothing else of the provider: its tables, each partition or chunk, any write.
    let schema = schema_of(provider);
    for table in ["measurements", "sensors"] {
        denied(
            table,
            reader
                .query(&format!("SELECT * FROM \"{schema}\".{table}"), &[])
                .await,
        )?;
    }
    let relations = storage_relations(&schema).await?;
    ensure!(
        !relations.is_empty(),
        "the provider's rows are stored somewhere"
    );
    for relation in &relations {
        denied(
            relation,
            reader
                .query(&format!("SELECT * FROM {relation}"), &[])
                .await,
        )?;
    }
    for write in [
        format!("INSERT INTO {view} VALUES ('arno-x', 'river_level', now(), 1)"),
        format!("UPDATE {view} SET value = 0"),
        format!("DELETE FROM {view}"),
        format!("ALTER VIEW {view} RENAME TO mine"),
        format!("DROP VIEW {view}"),
        format!(
            "CREATE VIEW s_{}.wider AS SELECT 1",
            provider.replace('-', "_")
        ),
        "CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql \
         COST 0.0000001 AS 'BEGIN RAISE NOTICE ''%'', $1; RETURN true; END'"
            .to_string(),
    ] {
        denied(&write, reader.batch_execute(&write).await)?;
    }
    // The planner is not a way around the filter: a condition that fails on a row's
    // value fails only on shared rows (the view is a security barrier).
    let trick = reader
        .query(
            &format!("SELECT 1 FROM {view} WHERE (sensor || metric)::integer > 0"),
            &[],
        )
        .await;
    if let Err(error) = &trick {
        let text = format!("{error:?}");
        ensure!(
            UNSHARED.iter().all(|unshared| !text.contains(unshared)),
            "an error names unshared data: {text}"
        );
    }
    // Passing the grant on is not possible.
    let third_reader = format!("{}_reader", schema_of(third));
    reader
        .batch_execute(&format!("GRANT SELECT ON {view} TO \"{third_reader}\""))
        .await
        .ok();

    // A third tenant reads nothing of it.
    let outsider = login(client, third, "db-reader").await?;
    denied("the third tenant", read(&outsider, &view).await)?;
    denied(
        "the third tenant, the catalogue",
        outsider
            .query(&format!("SELECT * FROM {sensors_view}"), &[])
            .await,
    )?;
    ensure!(
        tenants(client)
            .get(third)
            .await?
            .status
            .is_some_and(|s| s.shared_with_me.is_empty())
    );

    // The consumer's admin cannot share the provider's data: not in the provider's
    // namespace, nor by editing the provider's share.
    let consumer_admin = enti.consumer_admin().await?;
    let refused = apply_share(
        &consumer_admin,
        &share(provider, "grab", &[consumer], json!({})),
    )
    .await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(r)) if r.code == 403),
        "{refused:?}"
    );
    let shares: Api<SmartRegionShare> =
        Api::namespaced(consumer_admin.clone(), &format!("srt-{provider}"));
    let widened = shares
        .patch(
            "river-levels",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "metrics": null } })),
        )
        .await;
    ensure!(
        matches!(&widened, Err(kube::Error::Api(r)) if r.code == 403),
        "{widened:?}"
    );

    // The grant was announced on the share.
    let events = smartregion_e2e::apiserver::operator_events_since(
        client,
        k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(300),
    )
    .await?;
    ensure!(
        events
            .iter()
            .any(|e| e.starts_with("Granted") && e.contains(consumer.as_str())),
        "{events:?}"
    );
    enti.delete().await
}

#[tokio::test]
async fn narrowing_widening_removing_and_drift_take_effect_within_a_reconcile() -> Result<()> {
    let shard = unique_name("share-change");
    // A short requeue: drift made in the database is found by the periodic reconcile.
    // The CRDs first: the operator refuses to start without them.
    client().await?;
    let _operator = Operator::start(shared(), &shard, &["--requeue-seconds=2"])?;
    let enti = Enti::start(&shard).await?;
    let (client, provider, consumer, third) =
        (&enti.client, &enti.provider, &enti.consumer, &enti.third);
    write_rows(client, provider).await?;
    let admin = enti.provider_admin().await?;
    apply_share(&admin, &river_levels(provider, &[consumer])).await?;
    wait_share(client, provider, "river-levels", "Ready", share_ready).await?;
    let view = format!("s_{}.river_levels", provider.replace('-', "_"));
    let shared_row = ("arno-ponte-vecchio", "river_level", 3.1);
    wait_reads(client, consumer, &view, &[shared_row]).await?;

    // Widened: another metric, and the third tenant.
    let mut wider = river_levels(provider, &[consumer, third]);
    wider["spec"]["metrics"] = json!(["river_level", "turbidity"]);
    apply_share(&admin, &wider).await?;
    let turbidity = ("arno-ponte-vecchio", "turbidity", 9.0);
    wait_reads(client, consumer, &view, &[shared_row, turbidity]).await?;
    wait_reads(client, third, &view, &[shared_row, turbidity]).await?;

    // Narrowed back: the metric and the third tenant go.
    apply_share(&admin, &river_levels(provider, &[consumer])).await?;
    wait_reads(client, consumer, &view, &[shared_row]).await?;
    wait_refused(client, third, &view).await?;
    wait::until(
        "the third tenant's status to list nothing",
        READY_TIMEOUT,
        || async move {
            let tenant = tenants(client).get(third).await?;
            Ok(tenant
                .status
                .is_some_and(|s| s.shared_with_me.is_empty())
                .then_some(()))
        },
    )
    .await?;

    // Widened by hand in the database: put back as declared.
    let superuser = connect_plain(&shared().database_url).await?;
    let schema = schema_of(provider);
    superuser
        .batch_execute(&format!(
            "CREATE OR REPLACE VIEW {view} AS \
             SELECT sensor, metric, time, value FROM \"{schema}\".measurements"
        ))
        .await?;
    wait_reads(client, consumer, &view, &[shared_row]).await?;
    let third_reader = format!("{}_reader", schema_of(third));
    superuser
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA s_{p} TO \"{third_reader}\"; \
             GRANT SELECT ON {view} TO \"{third_reader}\"",
            p = provider.replace('-', "_")
        ))
        .await?;
    wait_refused(client, third, &view).await?;

    // The provider suspended: what it shares stays readable (docs/sharing.md).
    let mut suspended = example("prato", provider, &shard)?;
    suspended["spec"]["suspended"] = json!(true);
    apply_tenant(client, &suspended).await?;
    wait_phase(
        client,
        provider,
        smartregion_operator::crd::Phase::Suspended,
    )
    .await?;
    wait_reads(client, consumer, &view, &[shared_row]).await?;

    // The consumer's credentials rotated: its new reader password reads it.
    let old = secret_value(client, consumer, "db-reader", "password").await?;
    let mut rotated = example("firenze", consumer, &shard)?;
    rotated["metadata"]["annotations"] =
        json!({ "smartregion.toscana.it/rotate-credentials": "2026-12-06" });
    apply_tenant(client, &rotated).await?;
    let old = &old;
    wait::until("a new reader password", READY_TIMEOUT, || async move {
        let password = secret_value(client, consumer, "db-reader", "password").await?;
        Ok((password != *old).then_some(()))
    })
    .await?;
    wait_reads(client, consumer, &view, &[shared_row]).await?;

    // Removed: revoked within a reconcile, and said on both sides.
    let shares: Api<SmartRegionShare> = Api::namespaced(admin.clone(), &format!("srt-{provider}"));
    shares
        .delete("river-levels", &DeleteParams::default())
        .await?;
    wait_refused(client, consumer, &view).await?;
    wait::until(
        "the consumer's status to list nothing",
        READY_TIMEOUT,
        || async move {
            let tenant = tenants(client).get(consumer).await?;
            Ok(tenant
                .status
                .is_some_and(|s| s.shared_with_me.is_empty())
                .then_some(()))
        },
    )
    .await?;
    // The consumer's own reconcile may revoke before the provider's drops the views.
    let schema = format!("s_{}", provider.replace('-', "_"));
    let (superuser_ref, schema_ref) = (&superuser, &schema);
    wait::until(
        "the share's views to be dropped",
        READY_TIMEOUT,
        || async move {
            let left: i64 = superuser_ref
                .query_one(
                    "SELECT count(*) FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
                    &[schema_ref],
                )
                .await?
                .get(0);
            Ok((left == 0).then_some(()))
        },
    )
    .await?;
    let events = smartregion_e2e::apiserver::operator_events_since(
        client,
        k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(300),
    )
    .await?;
    ensure!(
        events
            .iter()
            .any(|e| e.starts_with("Revoked") && e.contains(third.as_str())),
        "{events:?}"
    );
    enti.delete().await
}

/// Every privilege a role holds on the share schemas or their views, and every
/// membership between the two tenants' roles, as the catalogs have them.
async fn traces(provider: &str, consumer: &str) -> Result<Vec<String>> {
    let superuser = connect_plain(&shared().database_url).await?;
    let (p, c) = (schema_of(provider), schema_of(consumer));
    let rows = superuser
        .query(
            "SELECT 'relation ' || c.oid::regclass::text || ' to ' || pg_get_userbyid(a.grantee) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
             WHERE n.nspname LIKE 's\\_%' AND pg_get_userbyid(a.grantee) LIKE $2 || '\\_%' \
             UNION ALL \
             SELECT 'schema ' || n.nspname || ' to ' || pg_get_userbyid(a.grantee) \
             FROM pg_namespace n, aclexplode(n.nspacl) a \
             WHERE n.nspname LIKE 's\\_%' AND pg_get_userbyid(a.grantee) LIKE $2 || '\\_%' \
             UNION ALL \
             SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 's' || substr($1, 2) \
             UNION ALL \
             SELECT 'membership ' || pg_get_userbyid(m.roleid) || ' of ' || pg_get_userbyid(m.member) \
             FROM pg_auth_members m \
             WHERE (pg_get_userbyid(m.roleid) LIKE $1 || '\\_%' AND pg_get_userbyid(m.member) LIKE $2 || '\\_%') \
                OR (pg_get_userbyid(m.roleid) LIKE $2 || '\\_%' AND pg_get_userbyid(m.member) LIKE $1 || '\\_%')",
            &[&p, &c],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[tokio::test]
async fn deleting_either_side_leaves_no_grant_view_or_membership_behind() -> Result<()> {
    let shard = unique_name("share-delete");
    // The CRDs first: the operator refuses to start without them.
    client().await?;
    let _operator = Operator::start(shared(), &shard, &[])?;
    let enti = Enti::start(&shard).await?;
    let (client, provider, consumer, third) =
        (&enti.client, &enti.provider, &enti.consumer, &enti.third);
    write_rows(client, provider).await?;
    let admin = enti.provider_admin().await?;
    apply_share(&admin, &river_levels(provider, &[consumer, third])).await?;
    wait_share(client, provider, "river-levels", "Ready", share_ready).await?;
    let view = format!("s_{}.river_levels", provider.replace('-', "_"));
    wait_reads(
        client,
        consumer,
        &view,
        &[("arno-ponte-vecchio", "river_level", 3.1)],
    )
    .await?;
    ensure!(
        !traces(provider, consumer).await?.is_empty(),
        "the share is in the catalogs"
    );

    // The consumer goes (Retain: its roles stay, disabled): nothing of the share stays
    // with them, and the share waits for it, visibly.
    delete_and_wait(client, consumer).await?;
    let left = traces(provider, consumer).await?;
    ensure!(
        left.iter().all(|trace| trace.starts_with("schema s_")),
        "left behind for the deleted consumer: {left:?}"
    );
    let waiting = wait_share(client, provider, "river-levels", "waiting", |share| {
        share.status.as_ref().is_some_and(|s| {
            s.consumers
                .iter()
                .any(|c| c.tenant == *consumer && c.state == ShareState::WaitingForConsumer)
        })
    })
    .await?;
    let reason = waiting
        .status
        .as_ref()
        .and_then(|s| s.conditions.first())
        .map(|c| c.reason.clone());
    ensure!(
        reason.as_deref() == Some("WaitingForConsumers"),
        "{reason:?}"
    );
    wait_reads(
        client,
        third,
        &view,
        &[("arno-ponte-vecchio", "river_level", 3.1)],
    )
    .await?;

    // The provider goes: its share schema and every grant on it with it.
    let namespace = format!("srt-{provider}");
    delete_and_wait(client, provider).await?;
    for tenant in [consumer, third] {
        let left = traces(provider, tenant).await?;
        ensure!(left.is_empty(), "left behind of the provider: {left:?}");
    }
    // The share object went with the namespace.
    let shares: Api<SmartRegionShare> = Api::namespaced(client.clone(), &namespace);
    ensure!(
        shares
            .get_opt("river-levels")
            .await?
            .is_none_or(|share| share.metadata.deletion_timestamp.is_some()),
        "the share outlived its namespace"
    );
    wait::until(
        "the third tenant's status to list nothing",
        READY_TIMEOUT,
        || async move {
            let tenant = tenants(client).get(third).await?;
            Ok(tenant
                .status
                .is_some_and(|s| s.shared_with_me.is_empty())
                .then_some(()))
        },
    )
    .await?;
    enti.delete().await
}

#[tokio::test]
async fn an_ente_cannot_share_with_itself_and_a_forbidden_tier_shares_nothing() -> Result<()> {
    let client = client().await?;
    install_admission_policies(&client).await?;
    let shard = unique_name("share-rules");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let (provider, consumer) = (unique_name("share-self"), unique_name("share-other"));
    // The provider's sharing forbidden on its tenant (the platform's setting).
    let mut forbidden = example("prato", &provider, &shard)?;
    forbidden["spec"]["sharing"] = json!(false);
    apply_tenant(&client, &forbidden).await?;
    apply_tenant(&client, &example("firenze", &consumer, &shard)?).await?;
    for name in [&provider, &consumer] {
        wait_ready(&client, name).await?;
    }
    let admin = shared()
        .client_as("anna.bianchi@comune.prato.it", &["prato-admins"])
        .await?;
    let (admin_ref, provider_ref) = (&admin, &provider);
    let message = refused_once_loaded("a share with the provider itself", || async move {
        apply_share(
            admin_ref,
            &share(provider_ref, "myself", &[provider_ref], json!({})),
        )
        .await
    })
    .await?;
    ensure!(message.contains("the tenant that shares"), "{message}");

    apply_share(
        &admin,
        &share(&provider, "everything", &[&consumer], json!({})),
    )
    .await?;
    let share = wait_share(&client, &provider, "everything", "forbidden", |share| {
        share
            .status
            .as_ref()
            .and_then(|s| s.conditions.first())
            .is_some_and(|c| c.reason == "SharingForbidden")
    })
    .await?;
    ensure!(
        share
            .status
            .is_some_and(|s| s.consumers.iter().all(|c| c.state != ShareState::Active))
    );
    // No view is made at all.
    let reader = login(&client, &consumer, "db-reader").await?;
    let view = format!("s_{}.everything", provider.replace('-', "_"));
    let refused = read(&reader, &view).await;
    ensure!(
        matches!(&refused, Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)),
        "nothing of a tenant whose sharing is forbidden is readable: {refused:?}"
    );
    delete_all_and_wait(&client, &[provider, consumer]).await
}
