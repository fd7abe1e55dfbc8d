//! An idle operator makes no write requests: with tenants Ready and nothing changing,
//! kube-apiserver's own request counters show no write to anything the operator manages.
//!
//! Its own test binary, so no other test writes to the cluster during the window.

#[path = "cluster/support/mod.rs"]
mod support;

use std::time::Duration;

use anyhow::Result;
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

    let window_start = k8s_openapi::jiff::Timestamp::now();
    let before = operator_writes(&client).await?;
    let reconciles_before = reconciles(&operator.metrics().await?);
    // Not a synchronisation: the window in which idleness is measured.
    tokio::time::sleep(WINDOW).await;
    let after = operator_writes(&client).await?;
    let reconciles_after = reconciles(&operator.metrics().await?);

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
        "write requests while idle: {in_window:?}"
    );
    assert!(events.is_empty(), "Events recorded while idle: {events:?}");
    delete_all_and_wait(&client, &names).await?;
    Ok(())
}
