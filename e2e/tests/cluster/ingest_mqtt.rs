//! MQTT into the tenant's schema through a real broker (Mosquitto): QoS 1, acknowledged
//! only after the commit. A message that arrives while PostgreSQL is down, followed by a
//! SIGKILL of ingest, is not lost: the broker delivers it again to the restarted process,
//! which resumes the tenant's session. What can never be stored is set aside on the
//! dead-letter topic and ingest goes on.
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
            publish(broker.port, "prato/sensors/senml/a", senml("device-a", 7.5)).await?;
            Ok((rows_of("device-a").await? > 0).then_some(()))
        },
    )
    .await?;

    // PostgreSQL down: a message arrives, ingest cannot commit it and so does not
    // acknowledge it; then ingest is killed.
    postgres.stop()?;
    publish(
        broker.port,
        "prato/sensors/senml/b",
        senml("device-b", 8.25),
    )
    .await?;
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

/// Subscribes to `topic` (QoS 1) and hands every message's payload to `sink`.
async fn subscribe(
    port: u16,
    topic: &str,
    sink: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
) -> Result<()> {
    let mut options = MqttOptions::new(unique_name("reader"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    // Until the broker has the subscription: what is published after is delivered.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("no SUBACK from the broker")??;
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event
                && let Ok(letter) = serde_json::from_slice(&publish.payload)
                && sink.send(letter).is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

#[tokio::test]
async fn mqtt_messages_that_can_never_be_stored_are_set_aside_and_ingest_goes_on() -> Result<()> {
    let client = client().await?;
    let broker = Mosquitto::start(shared(), "mosquitto-dead-letters").await?;
    let shard = unique_name("mqtt-dead");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("mqtt-dead");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["ingest"] =
        json!({ "mqtt": { "url": broker.url(), "topics": ["prato/sensors/#"] } });
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let mut env = deployment_env(&client, &format!("srt-{name}")).await?;
    // Without the retention horizon, so that PostgreSQL itself refuses the ancient record
    // (with it, the parser refuses it first, as an item).
    env.retain(|(variable, _)| variable != smartregion_contract::env::RETENTION_DAYS);
    let (letters, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let dead_letter_topic = format!("smartregion/dead-letter/{name}");
    subscribe(broker.port, &dead_letter_topic, letters).await?;
    let mut ingest = Ingest::start(shared(), env)?;
    ingest.wait_ready(Duration::from_secs(30)).await?;
    let schema = format!("t_{}", name.replace('-', "_"));
    let db = {
        let (db, connection) =
            tokio_postgres::connect(&shared().database_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        db
    };
    let stored = |device: &'static str| {
        let query =
            format!("SELECT count(*) FROM \"{schema}\".measurements WHERE sensor = '{device}'");
        let db = &db;
        async move { anyhow::Ok(db.query_one(&query, &[]).await?.get::<_, i64>(0)) }
    };
    wait::until(
        "ingest to be subscribed",
        Duration::from_secs(30),
        || async {
            publish(
                broker.port,
                "prato/sensors/senml/first",
                senml("first", 1.0),
            )
            .await?;
            Ok((stored("first").await? > 0).then_some(()))
        },
    )
    .await?;

    // A topic that names no format; not a SenML pack; one item of 2100 next to a good
    // one; a record PostgreSQL refuses; then a good message, which must not wait behind
    // them.
    publish(broker.port, "prato/sensors/device", senml("nameless", 1.0)).await?;
    let topic = "prato/sensors/senml/device";
    publish(broker.port, topic, json!("not a payload")).await?;
    publish(
        broker.port,
        topic,
        json!([{"bn": "half:", "n": "temperature", "v": 1, "bt": 1.7958816e9},
               {"n": "temperature", "v": 2, "t": 4102444800.0}]),
    )
    .await?;
    publish(
        broker.port,
        topic,
        json!([{"bn": "ancient:", "n": "pm10", "v": 1, "t": -2.3e11}]),
    )
    .await?;
    publish(broker.port, topic, senml("after", 3.0)).await?;
    wait::until(
        "the message after the bad ones to be stored",
        Duration::from_secs(60),
        || async { Ok((stored("after").await? == 1).then_some(())) },
    )
    .await?;
    // The good message does not wait behind the bad ones, so it may be stored before the
    // half-bad one's good item, whose batch is split until its bad item stands alone.
    wait::until(
        "the good item of the half-bad message to be stored",
        Duration::from_secs(60),
        || async { Ok((stored("half").await? == 1).then_some(())) },
    )
    .await?;
    ensure!(stored("ancient").await? == 0);

    let mut reasons = Vec::new();
    for _ in 0..4 {
        let letter = tokio::time::timeout(Duration::from_secs(30), inbox.recv())
            .await
            .context("a dead letter did not come")?
            .context("the reader stopped")?;
        ensure!(
            letter["topic"] == topic || letter["reason"] == "no_format",
            "{letter}"
        );
        ensure!(
            letter["id"].as_str().is_some_and(|id| id.len() == 16),
            "{letter}"
        );
        reasons.push(letter["reason"].as_str().unwrap_or_default().to_string());
        match letter["reason"].as_str() {
            Some("no_format") => ensure!(
                letter["topic"] == "prato/sensors/device"
                    && letter["message"]
                        .as_str()
                        .is_some_and(|message| message.contains("senml")),
                "{letter}"
            ),
            Some("unreadable") => ensure!(letter["payload"] == "\"not a payload\"", "{letter}"),
            Some("refused_items") => {
                ensure!(letter["rejected"][0]["index"] == 1, "{letter}");
                ensure!(letter["rejected"][0]["field"] == "t", "{letter}");
            }
            Some("refused_by_database") => ensure!(
                !letter["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("out of range"),
                "PostgreSQL's words stay in the log: {letter}"
            ),
            _ => anyhow::bail!("unexpected dead letter {letter}"),
        }
    }
    // Stored concurrently, acknowledged in order: the dead letters come in any order.
    reasons.sort();
    ensure!(
        reasons
            == [
                "no_format",
                "refused_by_database",
                "refused_items",
                "unreadable"
            ],
        "{reasons:?}"
    );
    ensure!(stored("nameless").await? == 0);
    let metrics = smartregion_e2e::http::http_get(ingest.port, "/metrics").await?;
    for reason in [
        "no_format",
        "unreadable",
        "refused_items",
        "refused_by_database",
    ] {
        ensure!(
            metrics.contains(&format!(
                "smartregion_ingest_mqtt_dead_letters_total{{reason=\"{reason}\"}} 1"
            )),
            "{metrics}"
        );
    }
    ingest.kill()?;
    delete_and_wait(&client, &name).await?;
    Ok(())
}

/// The port of the shared cluster's PostgreSQL.
fn database_port() -> Result<u16> {
    let url = &shared().database_url;
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .context("no port in the database URL")?;
    Ok(port.parse()?)
}

#[tokio::test]
async fn the_consuming_pod_killed_under_load_on_the_real_node_loses_no_acknowledged_message()
-> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams};
    use smartregion_e2e::mosquitto::{Broker, publish_readings};
    use std::net::IpAddr;

    let client = client().await?;
    // Where the node's pods reach it, holding what arrives while no pod consumes.
    let broker = Mosquitto::start_with(
        shared(),
        "mosquitto-real-node",
        Broker::for_devices(IpAddr::V4(smartregion_e2e::node::HOST_ADDRESS)),
    )
    .await?;
    let shard = unique_name("mqtt-pods");
    let flags = smartregion_e2e::pods::real_node_operator_flags(database_port()?);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _operator = Operator::start(shared(), &shard, &flags)?;
    let name = unique_name("mqtt-pods");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["ingest"] = json!({ "mqtt": { "url": broker.url(), "topics": ["prato/#"] } });
    // The quota is not what this test is about.
    tenant["spec"]["quotas"] = json!({ "ingestRate": 50000 });
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let schema = format!("t_{}", name.replace('-', "_"));
    let db = {
        let (db, connection) =
            tokio_postgres::connect(&shared().database_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        db
    };
    let count = |pattern: &'static str| {
        let query =
            format!("SELECT count(*) FROM \"{schema}\".measurements WHERE sensor LIKE '{pattern}'");
        let db = &db;
        async move { anyhow::Ok(db.query_one(&query, &[]).await?.get::<_, i64>(0)) }
    };
    // One time per message of a device: the unique key must not fold two of them.
    let base = jiff::Timestamp::now();
    let reading = |run: &'static str| {
        move |device: usize, message: usize| {
            let time = base - jiff::SignedDuration::from_secs(message as i64);
            format!(
                r#"[{{"sensor":"{run}-{device}","metric":"pm10","time":"{time}","value":{message}}}]"#
            )
        }
    };
    let (address, port) = (broker.address, broker.port);
    // The pod holds the tenant's session once a reading goes through.
    wait::until(
        "the ingest pod to consume MQTT",
        Duration::from_secs(120),
        || async {
            publish_readings(
                address,
                port,
                1,
                std::time::Instant::now() + Duration::from_millis(100),
                |_| "prato/measurements/warm".to_string(),
                reading("warm"),
            )
            .await?;
            Ok((count("warm-%").await? > 0).then_some(()))
        },
    )
    .await?;

    // 16 devices publish for 12 s; once readings are being stored, the pod is killed.
    let devices = tokio::spawn(publish_readings(
        address,
        port,
        16,
        std::time::Instant::now() + Duration::from_secs(12),
        |device| format!("prato/measurements/device-{device}"),
        reading("load"),
    ));
    wait::until(
        "readings under load to be stored",
        Duration::from_secs(30),
        || async { Ok((count("load-%").await? > 100).then_some(())) },
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &format!("srt-{name}"));
    let running = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=ingest"))
        .await?
        .items;
    ensure!(running.len() == 1, "one ingest pod: {}", running.len());
    let killed = running[0].metadata.name.clone().context("a pod name")?;
    // No grace: the container gets SIGKILL, as when its node fails.
    pods.delete(&killed, &DeleteParams::default().grace_period(0))
        .await?;
    let stored_at_kill = count("load-%").await?;
    let published = devices.await??;
    let acknowledged = published.acknowledged.len() as i64;
    ensure!(
        acknowledged > stored_at_kill,
        "messages arrived after the kill: {acknowledged} acknowledged, {stored_at_kill} stored at the kill"
    );
    // The replacement resumes the tenant's session: every message the broker
    // acknowledged is stored, those the killed pod had not acknowledged included.
    wait::until(
        "every acknowledged message to be stored",
        Duration::from_secs(180),
        || async { Ok((count("load-%").await? >= acknowledged).then_some(())) },
    )
    .await
    .with_context(|| format!("{acknowledged} acknowledged"))?;
    ensure!(count("load-%").await? == acknowledged, "each message once");
    let pods_now = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=ingest"))
        .await?
        .items;
    ensure!(
        pods_now
            .iter()
            .all(|pod| pod.metadata.name.as_deref() != Some(killed.as_str())),
        "a new pod took over"
    );
    delete_and_wait(&client, &name).await?;
    Ok(())
}
