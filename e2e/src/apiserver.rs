//! kube-apiserver's own request counters (`apiserver_request_total` on /metrics): the
//! independent witness of how many writes the operator makes.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use kube::Client;

pub const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Resources only the operator writes while tenants are idle (the controller-manager
/// writes the `status` subresource of quotas, Deployments and PodDisruptionBudgets, which
/// is therefore left out; it writes the ingest pods and ReplicaSets, which are not counted).
/// Events are written by every component, so the operator's are counted by
/// [`operator_events_since`] instead.
pub fn operator_owned(resource: &str, subresource: &str) -> bool {
    match resource {
        "smartregiontenants" => true,
        // The enti write the shares; the operator writes only their status.
        "smartregionshares" | "smartregiondatasets" => subresource == "status",
        "namespaces"
        | "serviceaccounts"
        | "resourcequotas"
        | "limitranges"
        | "networkpolicies"
        | "roles"
        | "rolebindings"
        | "deployments"
        | "services"
        | "poddisruptionbudgets"
        | "secrets" => subresource.is_empty(),
        _ => false,
    }
}

/// Write requests to operator-owned resources so far, by `VERB resource/subresource`.
pub async fn operator_writes(client: &Client) -> Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
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

/// What changed between two snapshots of [`operator_writes`] (only positive deltas).
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(key, count)| (key.clone(), count - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta > 0.0)
        .collect()
}

/// `smartregion_reconciles_total` from an operator's /metrics text.
pub fn reconciles(operator_metrics: &str) -> f64 {
    operator_metrics
        .lines()
        .find(|line| line.starts_with("smartregion_reconciles_total "))
        .and_then(|line| line.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// Events the operator recorded (created or repeated) at or after `since`.
pub async fn operator_events_since(
    client: &Client,
    since: k8s_openapi::jiff::Timestamp,
) -> Result<Vec<String>> {
    use k8s_openapi::api::events::v1::Event;
    let events: kube::Api<Event> = kube::Api::all(client.clone());
    let mut recent = Vec::new();
    for event in events.list(&Default::default()).await?.items {
        if event.reporting_controller.as_deref() != Some("smartregion-operator") {
            continue;
        }
        let last = event
            .series
            .as_ref()
            .map(|series| series.last_observed_time.0)
            .or(event.event_time.as_ref().map(|time| time.0))
            .or(event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0));
        if last.is_some_and(|last| last >= since) {
            recent.push(format!(
                "{} {:?} on {:?}",
                event.reason.unwrap_or_default(),
                event.note.unwrap_or_default(),
                event.regarding.and_then(|r| r.name)
            ));
        }
    }
    Ok(recent)
}
