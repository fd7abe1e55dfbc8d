//! The optional MQTT source: subscribes with QoS 1 on a persistent session and
//! acknowledges each message (PUBACK) only after its rows are committed, in the order
//! the messages arrived. A message whose commit did not happen is never acknowledged,
//! so the broker delivers it again after a crash or reconnect; duplicates from such
//! redeliveries are absorbed by the measurements' unique key. Talks to the broker.
//!
//! Payloads are JSON in any of the HTTP formats, recognised by shape: an object with
//! `subscriptionId` is an NGSI-v2 notification, an array of objects with `sensor` (or an
//! object with `measurements`) is a `/v1/measurements` batch, anything else is SenML.
//! Items the parsers refuse are logged and counted, never retried.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use smartregion_contract::mqtt::{BadUrl, Broker, parse_url};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::parse::{self, Parsed};
use crate::rate::RateQuota;
use crate::writer::{WriteError, Writer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(transparent)]
    Url(#[from] BadUrl),
    #[error("no MQTT topic to subscribe to")]
    NoTopics,
}

/// The broker and what to subscribe to.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub topics: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Stable across restarts of the same pod, so the broker keeps its session.
    pub client_id: String,
}

/// Connects and keeps consuming until the process ends; reconnects after failures.
pub async fn run(
    settings: Settings,
    writer: Writer,
    rate: Arc<RateQuota>,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    if settings.topics.is_empty() {
        return Err(Error::NoTopics);
    }
    let Broker { tls, host, port } = parse_url(&settings.url)?;
    let mut options = MqttOptions::new(&settings.client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        // Unacknowledged messages survive a crash of this process in the broker's session.
        .set_clean_session(false)
        .set_manual_acks(true);
    if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
        options.set_credentials(username, password);
    }
    if tls {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            native_roots_tls(),
        ))));
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    // One consumer, in arrival order: PUBACKs must go out in the order of the PUBLISHes.
    let (queue, received) = mpsc::channel::<Publish>(64);
    tokio::spawn(consume(received, client.clone(), writer, rate, metrics));
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(url = %settings.url, topics = ?settings.topics, "connected to the MQTT broker");
                for topic in &settings.topics {
                    if let Err(error) = client.subscribe(topic, QoS::AtLeastOnce).await {
                        warn!(%topic, %error, "failed to subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if queue.send(publish).await.is_err() {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(error) => {
                warn!(url = %settings.url, %error, "MQTT connection lost; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn native_roots_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Commits each message's rows, then acknowledges it.
async fn consume(
    mut received: mpsc::Receiver<Publish>,
    client: AsyncClient,
    writer: Writer,
    rate: Arc<RateQuota>,
    metrics: Arc<Metrics>,
) {
    while let Some(publish) = received.recv().await {
        let arrived = Timestamp::now();
        match parse_payload(&publish.payload, arrived) {
            Err(error) => {
                warn!(topic = %publish.topic, %error, "MQTT message is not a payload this service reads; dropped");
                metrics.rows("rejected", 1);
            }
            Ok(parsed) => {
                if !parsed.rejected.is_empty() {
                    warn!(topic = %publish.topic, rejected = ?parsed.rejected, "items of an MQTT message refused");
                }
                metrics.rows("rejected", parsed.rejected.len());
                metrics.rows("ignored", parsed.ignored.len());
                let rows = parsed.rows.len();
                commit_until_done(&writer, &rate, parsed, arrived).await;
                metrics.rows("committed", rows);
            }
        }
        if let Err(error) = client.ack(&publish).await {
            warn!(%error, "failed to acknowledge an MQTT message; the broker will send it again");
        }
    }
}

/// Retries until the rows are committed: the broker holds the message meanwhile, and
/// later messages wait behind it (backpressure on the broker, not data loss here).
async fn commit_until_done(writer: &Writer, rate: &RateQuota, parsed: Parsed, arrived: Timestamp) {
    // Over the rate quota, wait rather than refuse: MQTT has no 429.
    while let Err(Some(wait)) = rate.check(parsed.rows.len()) {
        tokio::time::sleep(wait).await;
    }
    loop {
        match writer.submit(parsed.rows.clone(), arrived).await {
            Ok(()) => return,
            Err(error @ WriteError::Refused) => {
                warn!(%error, "MQTT rows refused; retrying in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Err(error) => {
                warn!(%error, "MQTT rows not committed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Recognises the payload's format by its shape (see the module comment).
pub fn parse_payload(payload: &[u8], received: Timestamp) -> Result<Parsed, parse::BodyError> {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        // The parsers report the position of the error.
        Err(_) => return parse::parse_senml(payload, received),
    };
    let is_measurements = match &value {
        serde_json::Value::Object(object) if object.contains_key("subscriptionId") => {
            return parse::parse_ngsi_notification(payload, received).map(|n| n.parsed);
        }
        serde_json::Value::Object(object) => object.contains_key("measurements"),
        serde_json::Value::Array(items) => items
            .first()
            .and_then(|item| item.as_object())
            .is_some_and(|item| item.contains_key("sensor")),
        _ => false,
    };
    if is_measurements {
        parse::parse_measurements(payload, received)
    } else {
        parse::parse_senml(payload, received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_recognised_by_shape() {
        let received = Timestamp::from_second(1_795_428_000).unwrap();
        let batch = br#"[{"sensor":"s","metric":"m","time":"2026-11-23T10:00:00Z","value":1}]"#;
        assert_eq!(parse_payload(batch, received).unwrap().rows[0].sensor, "s");
        let senml = br#"[{"bn":"dev1:","n":"temp","v":21.5,"t":0}]"#;
        let rows = parse_payload(senml, received).unwrap().rows;
        assert_eq!(
            (rows[0].sensor.as_str(), rows[0].metric.as_str()),
            ("dev1", "temp")
        );
        let ngsi = br#"{"subscriptionId":"x","data":[{"id":"Room1","temperature":20}]}"#;
        assert_eq!(
            parse_payload(ngsi, received).unwrap().rows[0].sensor,
            "Room1"
        );
        assert!(parse_payload(b"not json", received).is_err());
    }
}
