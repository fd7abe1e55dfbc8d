//! An idle operator makes no write requests: with tenants Ready and nothing changing,
//! kube-apiserver's own request counters show no write to anything the operator manages.
//!
//! Its own test binary, so no other test writes to the cluster during the window.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name};
use support::*;

/// The observation window.
const WINDOW: Duration = Duration::from_secs(60);
const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Resources only the operator writes (resourcequotas/status is the controller-manager's).
fn operator_owned(resource: &str, subresource: &str) -> bool {
    match resource {
        "smartregiontenants" | "events" => true,
        "namespaces" | "serviceaccounts" | "resourcequotas" | "limitranges" | "networkpolicies"
        | "roles" | "rolebindings" => subresource.is_empty(),
        _ => false,
    }
}

/// Write requests by `verb resource/subresource`, from the API server's /metrics.
async fn writes(client: &Client) -> Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').context("metric line without value")?;
        let label = |key: &str| {
            labels
                .split(&format!("{key}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let (verb, resource, subresource) =
            (label("verb"), label("resource"), label("subresource"));
        if WRITE_VERBS.contains(&verb.as_str()) && operator_owned(&resource, &subresource) {
            *counts
                .entry(format!("{verb} {resource}/{subresource}"))
                .or_insert(0.0) += value.parse::<f64>()?;
        }
    }
    Ok(counts)
}

fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with("smartregion_reconciles_total "))
        .and_then(|line| line.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

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

    let before = writes(&client).await?;
    let reconciles_before = reconciles(&operator.metrics().await?);
    // Not a synchronisation: the window in which idleness is measured.
    tokio::time::sleep(WINDOW).await;
    let after = writes(&client).await?;
    let reconciles_after = reconciles(&operator.metrics().await?);

    let in_window: BTreeMap<&String, f64> = after
        .iter()
        .map(|(key, count)| (key, count - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta > 0.0)
        .collect();
    eprintln!(
        "idle window of {WINDOW:?}: {} reconciles, writes {in_window:?}",
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
    delete_all_and_wait(&client, &names).await?;
    Ok(())
}
