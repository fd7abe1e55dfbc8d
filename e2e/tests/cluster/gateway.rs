//! A real gateway carries the traffic: Traefik (a Gateway API implementation, built from
//! its Go module) runs as a pod on the real node with a Gateway whose HTTPS listener
//! serves `*.<domain>`; the operator attaches each exposed tenant's HTTPRoute to it, and
//! Traefik accepts it (that verdict is what turns the tenant Ready). A sender on the host,
//! outside the node's network namespace, posts over TLS to the node's port: the rows land
//! in that tenant's schema through the gateway, the ingest pods and the tenant's
//! NetworkPolicy (which admits the gateway's namespace only); a host no tenant has, or
//! another tenant's key, is refused; exposure turned off takes the route away.

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use kube::Client;
use serde_json::json;
use smartregion_e2e::gateway::Gateway;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};

const DOMAIN: &str = "gateway.e2e.example.it";

fn database_port() -> Result<u16> {
    let url = &shared().database_url;
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .context("no port in the database URL")?;
    Ok(port.parse()?)
}

/// An operator whose ingest pods run on the real node, exposing them through `gateway`
/// when given.
fn operator(shard: &str, gateway: Option<&Gateway>) -> Result<Operator> {
    let mut flags = smartregion_e2e::pods::real_node_operator_flags(database_port()?);
    if let Some(gateway) = gateway {
        flags.extend([
            format!("--ingest-gateway={}", gateway.reference()),
            format!(
                "--ingest-gateway-section={}",
                smartregion_e2e::gateway::LISTENER
            ),
            format!("--ingest-domain={}", gateway.domain),
        ]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Operator::start(shared(), shard, &flags)
}

async fn api_key(client: &Client, tenant: &str) -> Result<String> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &format!("srt-{tenant}"));
    let secret = secrets.get("ingest-keys").await?;
    let keys = secret
        .data
        .and_then(|data| data.get("keys").cloned())
        .context("ingest-keys has no keys")?;
    Ok(String::from_utf8(keys.0)?
        .lines()
        .next()
        .context("no key")?
        .to_string())
}

async fn rows_of(tenant: &str, sensor: &str) -> Result<i64> {
    let (db, connection) =
        tokio_postgres::connect(&shared().database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(db
        .query_one(
            &format!(
                "SELECT count(*) FROM \"t_{}\".measurements WHERE sensor = $1",
                tenant.replace('-', "_")
            ),
            &[&sensor],
        )
        .await?
        .get(0))
}

fn reading(sensor: &str) -> String {
    json!([{"sensor": sensor, "metric": "pm10", "value": 12.5,
            "time": jiff::Timestamp::now().to_string()}])
    .to_string()
}

#[tokio::test]
async fn a_sender_outside_the_cluster_writes_through_a_real_gateway_over_tls() -> Result<()> {
    let client = client().await?;
    let gateway = Gateway::install(shared(), &client, DOMAIN).await?;
    let shard = unique_name("gateway");
    let exposing = operator(&shard, Some(&gateway))?;
    let (prato, pisa) = (unique_name("gw-prato"), unique_name("gw-pisa"));
    for name in [&prato, &pisa] {
        apply_tenant(&client, &example("prato", name, &shard)?).await?;
    }
    // Ready includes ExposureReady, which comes from the route's Accepted condition:
    // Traefik's verdict.
    for name in [&prato, &pisa] {
        wait_ready(&client, name)
            .await
            .with_context(|| format!("tenant {name} exposed through Traefik"))?;
    }
    let host = format!("{prato}.{DOMAIN}");
    let key = api_key(&client, &prato).await?;
    let auth = format!("Bearer {key}");

    // The route is programmed a moment after it is accepted.
    let stored = wait::until(
        "a write through the gateway to be stored",
        Duration::from_secs(60),
        || {
            let (host, auth, gateway) = (&host, &auth, &gateway);
            async move {
                let answer = gateway.post(
                    host,
                    "/v1/measurements",
                    &[("authorization", auth)],
                    &reading("via-gateway"),
                )?;
                Ok((answer.0 == 200).then_some(answer))
            }
        },
    )
    .await;
    let (status, body) = match stored {
        Ok(answer) => answer,
        Err(error) => anyhow::bail!("{error:#}; Traefik's log:\n{}", gateway.logs().await),
    };
    ensure!(status == 200, "{body}");
    ensure!(rows_of(&prato, "via-gateway").await? >= 1);
    ensure!(rows_of(&pisa, "via-gateway").await? == 0);

    // A host no tenant has is not routed; another tenant's host does not take this
    // tenant's key.
    let (status, body) = gateway.post(
        &format!("nobody.{DOMAIN}"),
        "/v1/measurements",
        &[("authorization", &auth)],
        &reading("nowhere"),
    )?;
    ensure!(status == 404, "an unknown host: {status} {body}");
    // (Once Traefik has its pods as servers: 503 "no available server" until then.)
    let pisa_host = format!("{pisa}.{DOMAIN}");
    let (status, body) = wait::until(
        "the gateway to route the other tenant",
        Duration::from_secs(60),
        || {
            let (host, auth, gateway) = (&pisa_host, &auth, &gateway);
            async move {
                let answer = gateway.post(
                    host,
                    "/v1/measurements",
                    &[("authorization", auth)],
                    &reading("wrong-key"),
                )?;
                Ok((answer.0 != 503).then_some(answer))
            }
        },
    )
    .await?;
    ensure!(status == 401, "another tenant's host: {status} {body}");
    // What the route does not name stays inside the cluster.
    let (status, _) = gateway.post(&host, "/metrics", &[], "")?;
    ensure!(status == 404, "/metrics is not routed: {status}");
    ensure!(rows_of(&pisa, "wrong-key").await? == 0);

    // Exposure off: the operator removes the route, and the gateway stops routing (what
    // got through before that is stored, as it should be).
    drop(exposing);
    let _plain = operator(&shard, None)?;
    wait::until(
        "the gateway to stop routing the tenant",
        Duration::from_secs(60),
        || {
            let (host, auth, gateway) = (&host, &auth, &gateway);
            async move {
                let (status, _) = gateway.post(
                    host,
                    "/v1/measurements",
                    &[("authorization", auth)],
                    &reading("while-exposure-goes"),
                )?;
                Ok((status == 404).then_some(()))
            }
        },
    )
    .await?;
    let (status, body) = gateway.post(
        &host,
        "/v1/measurements",
        &[("authorization", &auth)],
        &reading("after-exposure"),
    )?;
    ensure!(
        status == 404,
        "no route once exposure is off: {status} {body}"
    );
    ensure!(rows_of(&prato, "after-exposure").await? == 0);
    delete_all_and_wait(&client, &[prato, pisa]).await?;
    gateway.remove().await?;
    Ok(())
}
