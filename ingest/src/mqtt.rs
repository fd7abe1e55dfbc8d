//! The optional MQTT source: subscribes with QoS 1 on a persistent session and
//! acknowledges each message (PUBACK) only after its rows are committed, in the order
//! the messages arrived. A message whose commit did not happen is never acknowledged,
//! so the broker delivers it again after a crash or reconnect; duplicates from such
//! redeliveries are absorbed by the measurements' unique key. Talks to the broker.
//!
//! Payloads are JSON in any of the HTTP formats, recognised by shape: an object with
//! `subscriptionId` is an NGSI-v2 notification, an array of objects with `sensor` (or an
//! object with `measurements`) is a `/v1/measurements` batch, anything else is SenML.
//!
//! What can never be stored is set aside on the dead-letter topic (on the same broker, so
//! the tenant reads it there), counted in `smartregion_ingest_mqtt_dead_letters_total`,
//! and acknowledged, so ingest goes on: a payload no parser reads, the items the parsers
//! refuse (with their reasons; the other items are stored), and a message whose data
//! PostgreSQL refuses [`DATA_TRIES`] times. The original is acknowledged only once the
//! broker has acknowledged its dead letter. A database that is down, or a writer without
//! INSERT (suspension, storage quota), is no reason to give up a message: it stays
//! unacknowledged and is retried.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use serde_json::json;
use smartregion_contract::mqtt::{BadUrl, Broker, parse_url};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::http::RequestId;
use crate::metrics::Metrics;
use crate::parse::{self, Parsed, Rejected};
use crate::rate::RateQuota;
use crate::writer::{WriteError, Writer};

/// Tries of a message whose data PostgreSQL refuses, before it is set aside.
pub const DATA_TRIES: usize = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(transparent)]
    Url(#[from] BadUrl),
    #[error("no MQTT topic to subscribe to")]
    NoTopics,
    #[error("the dead-letter topic {0:?} is not a topic one may publish to")]
    BadDeadLetterTopic(String),
    #[error(
        "the dead-letter topic {topic:?} matches the subscription {filter:?}: ingest would \
         read its own dead letters"
    )]
    DeadLettersSubscribed { topic: String, filter: String },
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
    /// Where messages that can never be stored go.
    pub dead_letter_topic: String,
    /// The time window items must be in.
    pub window: parse::Window,
}

impl Settings {
    /// Refuses settings that cannot work, before connecting.
    pub fn check(&self) -> Result<(), Error> {
        if self.topics.is_empty() {
            return Err(Error::NoTopics);
        }
        parse_url(&self.url)?;
        if !rumqttc::valid_topic(&self.dead_letter_topic) {
            return Err(Error::BadDeadLetterTopic(self.dead_letter_topic.clone()));
        }
        if let Some(filter) = self
            .topics
            .iter()
            .find(|filter| rumqttc::matches(&self.dead_letter_topic, filter))
        {
            return Err(Error::DeadLettersSubscribed {
                topic: self.dead_letter_topic.clone(),
                filter: filter.clone(),
            });
        }
        Ok(())
    }
}

/// Connects and keeps consuming until the process ends; reconnects after failures.
pub async fn run(
    settings: Settings,
    writer: Writer,
    rate: Arc<RateQuota>,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    settings.check()?;
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
    let confirmations = Arc::new(Mutex::new(Confirmations::default()));
    let consumer = Consumer {
        client: client.clone(),
        writer,
        rate,
        metrics,
        confirmations: confirmations.clone(),
        dead_letter_topic: settings.dead_letter_topic.clone(),
        window: settings.window,
    };
    tokio::spawn(consumer.run(received));
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(id))) => {
                lock(&confirmations).sent(id);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                lock(&confirmations).acknowledged(ack.pkid);
            }
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

fn lock(confirmations: &Mutex<Confirmations>) -> std::sync::MutexGuard<'_, Confirmations> {
    confirmations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which of this client's own publishes (the dead letters) the broker has acknowledged.
/// rumqttc sends publishes in the order they were asked for and names each by its packet
/// id only once it goes out; a publish sent again after a reconnect keeps its id.
#[derive(Default)]
struct Confirmations {
    /// Asked for, not yet out: in order.
    waiting: VecDeque<oneshot::Sender<()>>,
    /// Out, by packet id.
    sent: HashMap<u16, oneshot::Sender<()>>,
}

impl Confirmations {
    fn sent(&mut self, id: u16) {
        if self.sent.contains_key(&id) {
            return;
        }
        if let Some(confirm) = self.waiting.pop_front() {
            self.sent.insert(id, confirm);
        }
    }

    fn acknowledged(&mut self, id: u16) {
        if let Some(confirm) = self.sent.remove(&id) {
            let _ = confirm.send(());
        }
    }
}

/// A message set aside, and why.
struct DeadLetter {
    reason: &'static str,
    message: String,
    rejected: Vec<Rejected>,
    unlisted_rejected: usize,
}

/// Stores messages in arrival order and acknowledges each once it is stored or set aside.
struct Consumer {
    client: AsyncClient,
    writer: Writer,
    rate: Arc<RateQuota>,
    metrics: Arc<Metrics>,
    confirmations: Arc<Mutex<Confirmations>>,
    dead_letter_topic: String,
    window: parse::Window,
}

impl Consumer {
    async fn run(self, mut received: mpsc::Receiver<Publish>) {
        while let Some(publish) = received.recv().await {
            let id = RequestId::new();
            let arrived = Timestamp::now();
            if let Some(letter) = self.store(&publish, arrived, id).await {
                self.set_aside(&publish, arrived, id, letter).await;
            }
            if let Err(error) = self.client.ack(&publish).await {
                warn!(%error, "failed to acknowledge an MQTT message; the broker will send it again");
            }
        }
    }

    /// Stores what the message holds; what cannot be stored comes back as a dead letter.
    async fn store(
        &self,
        publish: &Publish,
        arrived: Timestamp,
        id: RequestId,
    ) -> Option<DeadLetter> {
        let limits = parse::Limits {
            window: self.window,
            ..parse::Limits::default()
        };
        let parsed = match parse_payload(&publish.payload, arrived, &limits) {
            Ok(parsed) => parsed,
            Err(error) => {
                warn!(%id, topic = %publish.topic, %error, "MQTT message is not a payload this service reads; set aside");
                self.metrics.rows("rejected", 1);
                return Some(DeadLetter {
                    reason: "unreadable",
                    message: error.to_string(),
                    rejected: Vec::new(),
                    unlisted_rejected: 0,
                });
            }
        };
        self.metrics.rows("rejected", parsed.rejected_count());
        self.metrics.rows("ignored", parsed.ignored_count());
        let Parsed {
            rows,
            rejected,
            unlisted_rejected,
            ..
        } = parsed;
        let count = rows.len();
        if let Err(detail) = self.commit_until_done(rows, arrived).await {
            warn!(%id, topic = %publish.topic, %detail, tries = DATA_TRIES, "the database refused an MQTT message's data every time; set aside");
            self.metrics.rows("rejected", count);
            return Some(DeadLetter {
                reason: "refused_by_database",
                message: "the database refused the data of this message; nothing of it was \
                          stored (the service's log has the reason under this id)"
                    .into(),
                rejected,
                unlisted_rejected,
            });
        }
        self.metrics.rows("committed", count);
        if rejected.is_empty() && unlisted_rejected == 0 {
            return None;
        }
        warn!(%id, topic = %publish.topic, rejected = ?rejected, "items of an MQTT message refused; set aside");
        Some(DeadLetter {
            reason: "refused_items",
            message: format!(
                "{} items refused, {count} stored",
                rejected.len() + unlisted_rejected
            ),
            rejected,
            unlisted_rejected,
        })
    }

    /// Commits `rows`, retrying while the database is unavailable or the writer may not
    /// insert (the broker holds the message meanwhile, and later messages wait behind it:
    /// backpressure on the broker, not data loss here). Gives up, with PostgreSQL's
    /// reason, only when the data itself is refused [`DATA_TRIES`] times.
    async fn commit_until_done(
        &self,
        rows: Vec<parse::Measurement>,
        arrived: Timestamp,
    ) -> Result<(), String> {
        // Over the rate quota, wait rather than refuse: MQTT has no 429.
        while let Err(Some(wait)) = self.rate.check(rows.len()) {
            tokio::time::sleep(wait).await;
        }
        let mut refusals = 0;
        loop {
            match self.writer.submit(rows.clone(), arrived).await {
                Ok(()) => return Ok(()),
                Err(WriteError::Data(detail)) => {
                    refusals += 1;
                    if refusals >= DATA_TRIES {
                        return Err(detail);
                    }
                    warn!(%detail, "the database refused MQTT rows; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
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

    /// Publishes `letter` to the dead-letter topic (QoS 1) and waits until the broker has
    /// acknowledged it.
    async fn set_aside(
        &self,
        publish: &Publish,
        arrived: Timestamp,
        id: RequestId,
        letter: DeadLetter,
    ) {
        self.metrics.dead_letter(letter.reason);
        let mut envelope = json!({
            "id": id.to_string(),
            "topic": publish.topic,
            "received": arrived.to_string(),
            "reason": letter.reason,
            "message": letter.message,
        });
        if !letter.rejected.is_empty() {
            envelope["rejected"] = json!(letter.rejected);
        }
        if letter.unlisted_rejected > 0 {
            envelope["unlisted_rejected"] = json!(letter.unlisted_rejected);
        }
        match std::str::from_utf8(&publish.payload) {
            Ok(text) => envelope["payload"] = json!(text),
            Err(_) => {
                envelope["payload_base64"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(&publish.payload));
            }
        }
        let (confirm, confirmed) = oneshot::channel();
        lock(&self.confirmations).waiting.push_back(confirm);
        let body = envelope.to_string();
        if let Err(error) = self
            .client
            .publish(&self.dead_letter_topic, QoS::AtLeastOnce, false, body)
            .await
        {
            warn!(%id, %error, "failed to publish a dead letter; the message is acknowledged anyway");
            return;
        }
        if confirmed.await.is_err() {
            warn!(%id, "the dead letter's acknowledgement was lost");
        }
    }
}

/// Recognises the payload's format by its shape (see the module comment).
pub fn parse_payload(
    payload: &[u8],
    received: Timestamp,
    limits: &parse::Limits,
) -> Result<Parsed, parse::BodyError> {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        // The parsers report the position of the error.
        Err(_) => return parse::senml::parse_senml_within(payload, received, limits),
    };
    let is_measurements = match &value {
        serde_json::Value::Object(object) if object.contains_key("subscriptionId") => {
            return parse::ngsi::parse_ngsi_notification_within(payload, received, limits)
                .map(|n| n.parsed);
        }
        serde_json::Value::Object(object) => object.contains_key("measurements"),
        serde_json::Value::Array(items) => items
            .first()
            .and_then(|item| item.as_object())
            .is_some_and(|item| item.contains_key("sensor")),
        _ => false,
    };
    if is_measurements {
        parse::measurements::parse_measurements_within(payload, received, limits)
    } else {
        parse::senml::parse_senml_within(payload, received, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_recognised_by_shape() {
        let received = Timestamp::from_second(1_795_428_000).unwrap();
        let parse_payload =
            |payload: &[u8], received| parse_payload(payload, received, &parse::Limits::default());
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

    fn settings(topics: &[&str], dead_letter_topic: &str) -> Settings {
        Settings {
            url: "mqtt://broker.example.it".into(),
            topics: topics.iter().map(|topic| topic.to_string()).collect(),
            username: None,
            password: None,
            client_id: "smartregion-ingest-prato-0".into(),
            dead_letter_topic: dead_letter_topic.into(),
            window: parse::Window::ANY,
        }
    }

    #[test]
    fn ingest_never_subscribes_to_its_own_dead_letters() {
        assert_eq!(
            settings(&["prato/sensors/#"], "smartregion/dead-letter/prato").check(),
            Ok(())
        );
        assert_eq!(
            settings(&["prato/sensors/#", "#"], "smartregion/dead-letter/prato").check(),
            Err(Error::DeadLettersSubscribed {
                topic: "smartregion/dead-letter/prato".into(),
                filter: "#".into()
            })
        );
        assert!(matches!(
            settings(&["prato/#"], "prato/+/dead").check(),
            Err(Error::BadDeadLetterTopic(_))
        ));
        assert_eq!(
            settings(&[], "smartregion/dead-letter/prato").check(),
            Err(Error::NoTopics)
        );
    }

    #[test]
    fn a_dead_letter_is_confirmed_by_its_own_acknowledgement_also_when_sent_again() {
        let mut confirmations = Confirmations::default();
        let (first, mut first_confirmed) = oneshot::channel();
        let (second, mut second_confirmed) = oneshot::channel();
        confirmations.waiting.extend([first, second]);
        confirmations.sent(7);
        // Sent again after a reconnect: still the first one.
        confirmations.sent(7);
        confirmations.sent(8);
        confirmations.acknowledged(8);
        assert_eq!(second_confirmed.try_recv(), Ok(()));
        assert!(first_confirmed.try_recv().is_err());
        confirmations.acknowledged(7);
        assert_eq!(first_confirmed.try_recv(), Ok(()));
        assert!(confirmations.sent.is_empty() && confirmations.waiting.is_empty());
    }
}
