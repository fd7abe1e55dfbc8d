//! An idle operator makes no write requests: with tenants and their shares Ready and
//! nothing changing, kube-apiserver's own request counters show no write to anything the
//! operator manages, and the shares' views, schemas and grants in PostgreSQL are not
//! rewritten either.
//!
//! Its own test binary, so no other test writes to the cluster during the window.

#[path = "cluster/support/mod.rs"]
mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use smartregion_e2e::apiserver::{delta, operator_events_since, operator_writes, reconciles};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name};
use support::*;

/// The observation window.
const WINDOW: Duration = Duration::from_secs(60);

#[tokio::test]
async fn ready_tenants_left_idle_cause_no_write_requests() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("idle");
    // A short requeue, so periodic reconciles do happen inside the window.
    let operator = Operator::start(shared(), &shard, &["--requeue-seconds=15"])?;
    let mut names = Vec::new();
    for file in [
        "firenze",
        "prato",
        "rt-attivita-produttive",
        "unione-mugello",
    ] {
        let name = unique_name(&file[..file.len().min(20)]);
        apply_tenant(&client, &example(file, &name, &shard)?).await?;
        names.push(name);
    }
    for name in &names {
        wait_ready(&client, name).await?;
    }
    // Prato and the Unione share with Firenze: the shares are re-checked in every
    // periodic reconcile too.
    let (firenze, prato, mugello) = (&names[0], &names[1], &names[3]);
    for (provider, spec) in [
        (prato, json!({ "metrics": ["pm10", "no2"] })),
        (mugello, json!({ "sensorPrefixes": ["borgo-"] })),
    ] {
        apply_share(&client, &share(provider, "to-firenze", &[firenze], spec)).await?;
        wait_share(&client, provider, "to-firenze", "Ready", share_ready).await?;
    }
    // Firenze's status names both before the window opens: the write that says so is
    // the last of the onboarding's, not an idle one.
    smartregion_e2e::wait::until(
        "firenze's status to name both shares",
        READY_TIMEOUT,
        || async {
            let tenant = tenants(&client).get(firenze).await?;
            Ok(tenant
                .status
                .is_some_and(|status| status.shared_with_me.len() == 2)
                .then_some(()))
        },
    )
    .await?;
    // On TimescaleDB, the jobs' first runs (right after they are made) are in every
    // tenant's status before the window opens: what they report is news, not idleness.
    smartregion_e2e::wait::until(
        "the TimescaleDB jobs' first runs in every status",
        READY_TIMEOUT,
        || async {
            for name in &names {
                let tenant = tenants(&client).get(name).await?;
                let jobs = tenant
                    .status
                    .and_then(|status| status.database)
                    .and_then(|database| database.maintenance)
                    .map(|maintenance| maintenance.jobs)
                    .unwrap_or_default();
                if jobs.iter().any(|job| job.last_run_started_at.is_none()) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    let database = connect_plain(&shared().database_url).await?;
    let catalog_before = sharing_catalog(&database, &names).await?;
    ensure!(
        catalog_before.len() >= 4,
        "the shares' schemas and views: {catalog_before:?}"
    );

    let statuses_before = statuses(&client, &names).await?;
    let window_start = k8s_openapi::jiff::Timestamp::now();
    let before = operator_writes(&client).await?;
    let reconciles_before = reconciles(&operator.metrics().await?);
    // Not a synchronisation: the window in which idleness is measured.
    tokio::time::sleep(WINDOW).await;
    let after = operator_writes(&client).await?;
    let reconciles_after = reconciles(&operator.metrics().await?);
    let catalog_after = sharing_catalog(&database, &names).await?;
    let statuses_after = statuses(&client, &names).await?;
    let changed: Vec<String> = statuses_before
        .iter()
        .zip(&statuses_after)
        .filter(|(before, after)| before != after)
        .map(|(before, after)| format!("before {before}\nafter  {after}"))
        .collect();

    let in_window = delta(&before, &after);
    let events = operator_events_since(&client, window_start).await?;
    eprintln!(
        "idle window of {WINDOW:?}: {} reconciles, writes {in_window:?}, Events {events:?}",
        reconciles_after - reconciles_before
    );
    assert!(
        reconciles_after - reconciles_before >= names.len() as f64,
        "the operator should have re-checked every tenant during the window"
    );
    assert!(
        in_window.is_empty(),
        "write requests while idle: {in_window:?}; statuses changed:\n{}",
        changed.join("\n")
    );
    assert!(events.is_empty(), "Events recorded while idle: {events:?}");
    assert_eq!(
        catalog_before, catalog_after,
        "the shares' schemas, views or grants were rewritten while idle"
    );
    delete_all_and_wait(&client, &names).await?;
    Ok(())
}

/// The catalog rows of the share schemas of `tenants` and of everything in them: name,
/// the transaction that last wrote the row (`xmin`), and its grants. Any rewrite, even to
/// the same content, changes `xmin`.
async fn sharing_catalog(
    database: &tokio_postgres::Client,
    tenants: &[String],
) -> Result<Vec<(String, String, String)>> {
    let schemas: Vec<String> = tenants
        .iter()
        .map(|name| format!("s_{}", name.replace('-', "_")))
        .collect();
    let rows = database
        .query(
            "SELECT n.nspname, n.xmin::text, coalesce(n.nspacl::text, '') \
             FROM pg_namespace n WHERE n.nspname = ANY($1) \
             UNION ALL \
             SELECT format('%I.%I', n.nspname, c.relname), c.xmin::text, \
                    coalesce(c.relacl::text, '') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) \
             ORDER BY 1",
            &[&schemas],
        )
        .await
        .context("reading the shares' catalog rows")?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// The tenants' statuses, to say which one an idle write changed.
async fn statuses(client: &kube::Client, names: &[String]) -> Result<Vec<String>> {
    let mut statuses = Vec::new();
    for name in names {
        let tenant = tenants(client).get(name).await?;
        statuses.push(format!(
            "{name}: {}",
            serde_json::to_string(&tenant.status)?
        ));
    }
    Ok(statuses)
}
