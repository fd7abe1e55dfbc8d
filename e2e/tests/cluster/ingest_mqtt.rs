//! MQTT into the tenant's schema through a real broker (Mosquitto): QoS 1, acknowledged
//! only after the commit. A message that arrives while PostgreSQL is down, followed by a
//! SIGKILL of ingest, is not lost: the broker delivers it again to the restarted process.
//!
//! Its own test binary and its own PostgreSQL, which it stops.

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use smartregion_e2e::ingest::{Ingest, deployment_env};
use smartregion_e2e::mosquitto::Mosquitto;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{PostgresServer, shared, unique_name, wait};

/// Publishes `payload` with QoS 1 and returns once the broker acknowledged it.
async fn publish(port: u16, topic: &str, payload: serde_json::Value) -> Result<()> {
    let mut options = MqttOptions::new(unique_name("sensor"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await? {
                Event::Incoming(Packet::PubAck(_)) => return anyhow::Ok(()),
                Event::Outgoing(Outgoing::Disconnect) => anyhow::bail!("disconnected"),
                _ => {}
            }
        }
    })
    .await
    .context("no PUBACK from the broker")??;
    client.disconnect().await.ok();
    Ok(())
}

fn senml(device: &str, value: f64) -> serde_json::Value {
    json!([{"bn": format!("{device}:"), "n": "temperature", "u": "Cel", "v": value,
            "bt": 1.7958816e9}])
}

#[tokio::test]
async fn mqtt_messages_are_committed_before_they_are_acknowledged() -> Result<()> {
    let client = client().await?;
    let broker = Mosquitto::start(shared(), "mosquitto").await?;
    let mut postgres = PostgresServer::start_new(shared(), "mqtt-postgres").await?;
    let shard = unique_name("mqtt");
    let url = format!("--database-url={}", postgres.url());
    let _operator = Operator::start(shared(), &shard, &[&url])?;
    let name = unique_name("mqtt");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["ingest"] =
        json!({ "mqtt": { "url": broker.url(), "topics": ["prato/sensors/#"] } });
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let env = deployment_env(&client, &format!("srt-{name}")).await?;
    ensure!(
        env.iter()
            .any(|(k, v)| k == smartregion_contract::env::MQTT_URL && *v == broker.url()),
        "the Deployment passes the broker: {:?}",
        env.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let mut ingest = Ingest::start(shared(), env)?;
    ingest.wait_ready(Duration::from_secs(30)).await?;
    let schema = format!("t_{}", name.replace('-', "_"));
    let database_url = postgres.url();
    let rows_of = |device: &'static str| {
        let query =
            format!("SELECT count(*) FROM \"{schema}\".measurements WHERE sensor = '{device}'");
        let url = database_url.clone();
        async move {
            let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let count: i64 = db.query_one(&query, &[]).await?.get(0);
            anyhow::Ok(count)
        }
    };

    // The subscription is in place once ingest is connected; a first message arrives.
    wait::until(
        "the first MQTT message to be stored",
        Duration::from_secs(30),
        || async {
            publish(broker.port, "prato/sensors/a", senml("device-a", 7.5)).await?;
            Ok((rows_of("device-a").await? > 0).then_some(()))
        },
    )
    .await?;

    // PostgreSQL down: a message arrives, ingest cannot commit it and so does not
    // acknowledge it; then ingest is killed.
    postgres.stop()?;
    publish(broker.port, "prato/sensors/b", senml("device-b", 8.25)).await?;
    wait::until(
        "ingest to hold the message it cannot commit",
        Duration::from_secs(30),
        || {
            let logs = ingest.logs();
            async move { Ok(logs.contains("MQTT rows not committed").then_some(())) }
        },
    )
    .await?;
    ingest.kill()?;

    // Back up: the broker delivers the unacknowledged message again.
    postgres.restart().await?;
    ingest.restart()?;
    wait::until(
        "the redelivered message to be stored",
        Duration::from_secs(60),
        || async { Ok((rows_of("device-b").await? == 1).then_some(())) },
    )
    .await?;
    ensure!(rows_of("device-a").await? >= 1);
    drop(ingest);
    delete_and_wait(&client, &name).await?;
    Ok(())
}
