//! The optional MQTT source: subscribes with QoS 1 on a persistent session and
//! acknowledges each message (PUBACK) only after its rows are committed. Messages are
//! stored concurrently (so they share group commits as HTTP requests do) and acknowledged
//! in the order they arrived, as MQTT requires. A message whose commit did not happen is
//! never acknowledged, so the broker delivers it again after a crash or reconnect;
//! duplicates from such redeliveries are absorbed by the measurements' unique key. Talks
//! to the broker.
//!
//! **One session per tenant, held by one pod at a time.** The client id is the tenant's
//! (`smartregion-ingest-<tenant>`), not the pod's, and a pod connects with it only while
//! it holds the tenant's session lock (a PostgreSQL advisory lock its writer's probe
//! session takes, see [`crate::writer::Settings::session_lock`]). A pod that dies loses the
//! lock with its database session; the next pod to take it (its replacement, or another
//! replica) resumes the same broker session and gets every message the dead one had not
//! acknowledged. Other replicas wait on standby.
//!
//! **Format by topic.** A message's format is the one its topic names by a level
//! ([`crate::parse::Format::topic_level`]: `prato/sensors/senml/device-7`), read by the
//! same parser, cost bound and limits as over HTTP, within the same memory budget (a
//! message's payload and its parse are reserved before they are held; without memory the
//! source stops reading from the broker for a while: backpressure, not loss). A tenant
//! that accepts one format only may leave it out of the topic. A format the tenant does not
//! accept (`spec.ingest.formats`) is refused like a payload no parser reads.
//!
//! What can never be stored is set aside on the dead-letter topic (on the same broker, so
//! the tenant reads it there), counted in `smartregion_ingest_mqtt_dead_letters_total`,
//! and acknowledged, so ingest goes on: a message without a format it may read, a payload
//! its parser refuses, the items the parser refuses (with their reasons; the other items
//! are stored), a payload too large for the pod's memory budget, and a message whose data
//! PostgreSQL refuses [`DATA_TRIES`] times. The original is acknowledged only once the
//! broker has acknowledged its dead letter. A database that is down, or a writer without
//! INSERT (suspension, storage quota), is no reason to give up a message: it stays
//! unacknowledged and is retried.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use jiff::Timestamp;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, TlsConfiguration,
    Transport,
};
use serde_json::json;
use smartregion_contract::format::IngestFormat;
use smartregion_contract::mqtt::{BadUrl, Broker, parse_url};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, trace, warn};

use crate::http::RequestId;
use crate::memory::{Budget, Reservation, Shortage};
use crate::metrics::Metrics;
use crate::parse::{self, Format, Parsed, Rejected};
use crate::rate::RateQuota;
use crate::writer::{Store, WriteError};

/// Tries of a message whose data PostgreSQL refuses, before it is set aside.
pub const DATA_TRIES: usize = 3;

/// How long a message waits for its share of the memory budget at a time; the source
/// reads nothing more from the broker meanwhile.
const MEMORY_WAIT: Duration = Duration::from_secs(1);

/// Messages received, their payload's memory reserved, waiting for the consumer: few,
/// so that what waits holds little of the budget (beyond them the source stops reading
/// from the broker: backpressure).
const QUEUE: usize = 64;

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

/// The broker, what to subscribe to, and how to read it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub topics: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The tenant's session: the same for every pod, which connect one at a time.
    pub client_id: String,
    /// Where messages that can never be stored go.
    pub dead_letter_topic: String,
    /// The time window items must be in.
    pub window: parse::Window,
    /// The formats the tenant accepts.
    pub formats: Vec<IngestFormat>,
    /// The largest payload read (the HTTP body limit).
    pub max_payload: usize,
    /// Most messages being stored at once (each holds its share of the memory budget).
    pub in_flight: usize,
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

    /// The format `topic` names, if the tenant accepts it; else why not, as a dead
    /// letter's reason and message.
    fn format_of(&self, topic: &str) -> Result<&'static dyn Format, (&'static str, String)> {
        let format = match (parse::format_of_topic(topic), self.formats.as_slice()) {
            (Some(format), _) => format,
            (None, [only]) => parse::format(*only),
            (None, _) => {
                let levels: Vec<&str> = parse::FORMATS
                    .iter()
                    .filter(|format| self.formats.contains(&format.kind()))
                    .map(|format| format.topic_level())
                    .collect();
                return Err((
                    "no_format",
                    format!(
                        "the topic names no format: put one of the levels {} in it, \
                         e.g. prato/sensors/{}/device-7",
                        levels.join(", "),
                        levels.first().unwrap_or(&"senml")
                    ),
                ));
            }
        };
        if !self.formats.contains(&format.kind()) {
            return Err((
                "format_not_accepted",
                format!(
                    "this tenant does not accept {:?} (spec.ingest.formats)",
                    format.kind()
                ),
            ));
        }
        Ok(format)
    }
}

/// What the source stores into and shares with the HTTP side.
#[derive(Clone)]
pub struct Sink {
    pub store: Arc<dyn Store>,
    pub rate: Arc<RateQuota>,
    pub metrics: Arc<Metrics>,
    pub memory: Budget,
}

/// Consumes while this process holds the tenant's session (`held`), until the process
/// ends; reconnects after failures.
pub async fn run(
    settings: Settings,
    sink: Sink,
    mut held: watch::Receiver<bool>,
) -> Result<(), Error> {
    settings.check()?;
    loop {
        if held.wait_for(|held| *held).await.is_err() {
            return Ok(());
        }
        info!(client_id = %settings.client_id, "holding the tenant's MQTT session");
        let session = connect(&settings, sink.clone())?;
        tokio::select! {
            () = session => {}
            _ = held.wait_for(|held| !*held) => {
                warn!("lost the tenant's MQTT session lock (its database session ended); another pod may resume it");
            }
        }
    }
}

fn options(settings: &Settings) -> Result<MqttOptions, Error> {
    let Broker { tls, host, port } = parse_url(&settings.url)?;
    let mut options = MqttOptions::new(&settings.client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        // Unacknowledged messages survive this process in the broker's session.
        .set_clean_session(false)
        .set_manual_acks(true)
        // A payload and its topic; a dead letter carries a payload, base64 at worst.
        .set_max_packet_size(
            settings.max_payload + 64 * 1024,
            settings.max_payload * 2 + 64 * 1024,
        );
    if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
        options.set_credentials(username, password);
    }
    if tls {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            native_roots_tls(),
        ))));
    }
    Ok(options)
}

/// One connection of the session, until it is dropped: the event loop and the consumer.
fn connect(settings: &Settings, sink: Sink) -> Result<impl Future<Output = ()>, Error> {
    // The client's requests (acknowledgements, dead letters) never wait for room: the
    // event loop may be waiting to queue a message while the consumer acknowledges.
    let (client, events) = AsyncClient::new(options(settings)?, 4 * settings.in_flight + QUEUE);
    let (queue, received) = mpsc::channel(QUEUE);
    let confirmations = Arc::new(Mutex::new(Confirmations::default()));
    let consumer = Arc::new(Consumer {
        client: client.clone(),
        sink: sink.clone(),
        confirmations: confirmations.clone(),
        settings: settings.clone(),
    });
    let settings = settings.clone();
    Ok(async move {
        let consuming = consumer.run(received);
        let polling = poll(
            events,
            client,
            &settings,
            &sink.memory,
            queue,
            &confirmations,
        );
        tokio::select! {
            () = consuming => {}
            () = polling => {}
        }
    })
}

/// Drives the connection: subscribes on every connect, reserves each message's payload
/// in the memory budget before passing it on, and follows the dead letters' PUBACKs.
async fn poll(
    mut events: EventLoop,
    client: AsyncClient,
    settings: &Settings,
    memory: &Budget,
    queue: mpsc::Sender<(Publish, Result<Reservation, Shortage>)>,
    confirmations: &Mutex<Confirmations>,
) {
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
                let reservation = reserve(memory, publish.payload.len()).await;
                if queue.send((publish, reservation)).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(id))) => lock(confirmations).sent(id),
            Ok(Event::Incoming(Packet::PubAck(ack))) => lock(confirmations).acknowledged(ack.pkid),
            Ok(_) => {}
            Err(error) => {
                warn!(url = %settings.url, %error, "MQTT connection lost; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `bytes` of the budget, waiting as long as it takes unless it can never be had.
async fn reserve(memory: &Budget, bytes: usize) -> Result<Reservation, Shortage> {
    loop {
        match memory.reserve(bytes, MEMORY_WAIT).await {
            Err(Shortage::Busy) => continue,
            outcome => return outcome,
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
    /// The metric's label and the envelope's `reason`.
    reason: &'static str,
    message: String,
    rejected: Vec<Rejected>,
    unlisted_rejected: usize,
}

impl DeadLetter {
    fn new(reason: &'static str, message: impl Into<String>) -> DeadLetter {
        DeadLetter {
            reason,
            message: message.into(),
            rejected: Vec::new(),
            unlisted_rejected: 0,
        }
    }
}

/// A message with its format, the limits of its parse and the memory it may hold.
struct Admitted {
    format: &'static dyn Format,
    limits: parse::Limits,
    reservation: Reservation,
}

/// Stores messages, several at once, and acknowledges each in arrival order once it is
/// stored or set aside.
struct Consumer {
    client: AsyncClient,
    sink: Sink,
    confirmations: Arc<Mutex<Confirmations>>,
    settings: Settings,
}

impl Consumer {
    async fn run(
        self: Arc<Self>,
        mut received: mpsc::Receiver<(Publish, Result<Reservation, Shortage>)>,
    ) {
        let mut storing = FuturesOrdered::new();
        // Stored, in arrival order, waiting to be acknowledged: the client's request
        // channel may be full (rumqttc's event loop takes one request per turn, after every
        // message it has already read), and the consumer must not wait for it while the
        // event loop waits for the consumer to take a message.
        let mut unacknowledged = VecDeque::new();
        let mut retry = tokio::time::interval(Duration::from_millis(5));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(done) = storing.next(), if !storing.is_empty() => {
                    match done {
                        Ok::<Publish, _>(publish) => {
                            unacknowledged.push_back(publish);
                            self.acknowledge(&mut unacknowledged);
                        }
                        // A panic: never acknowledged, so the broker sends it again.
                        Err(error) => warn!(%error, "storing an MQTT message failed unexpectedly"),
                    }
                }
                _ = retry.tick(), if !unacknowledged.is_empty() => {
                    self.acknowledge(&mut unacknowledged);
                }
                message = received.recv(), if storing.len() < self.settings.in_flight => {
                    let Some((publish, reservation)) = message else { return };
                    trace!(pkid = publish.pkid, "received");
                    // Memory for its parse before it is stored beside the others: a
                    // message waits for it holding only its payload, and none of those
                    // stored waits for memory (they would wait on each other).
                    let admitted = self.admit(&publish, reservation).await;
                    let consumer = self.clone();
                    storing.push_back(tokio::spawn(async move {
                        consumer.handle(&publish, admitted).await;
                        publish
                    }));
                }
                else => return,
            }
        }
    }

    /// Acknowledges what it can of `unacknowledged`, in order, without waiting.
    fn acknowledge(&self, unacknowledged: &mut VecDeque<Publish>) {
        while let Some(publish) = unacknowledged.front() {
            if self.client.try_ack(publish).is_err() {
                // Full: the next turn. (Closed: the connection is ending anyway, and what
                // was not acknowledged comes again.)
                return;
            }
            trace!(pkid = publish.pkid, "acknowledged");
            unacknowledged.pop_front();
        }
    }

    /// The format of `publish`, the limits of its parse and the memory for it all; or
    /// why it is set aside.
    async fn admit(
        &self,
        publish: &Publish,
        payload: Result<Reservation, Shortage>,
    ) -> Result<Admitted, DeadLetter> {
        let mut reservation =
            payload.map_err(|shortage| DeadLetter::new("too_large", shortage.to_string()))?;
        let format = self
            .settings
            .format_of(&publish.topic)
            .map_err(|(reason, message)| DeadLetter::new(reason, message))?;
        let limits = parse::Limits {
            max_rows: self.sink.store.max_rows(),
            window: self.settings.window,
        };
        let needed = format.parse_cost(&publish.payload, &limits);
        let more = reserve(&self.sink.memory, needed)
            .await
            .map_err(|shortage| DeadLetter::new("too_large", shortage.to_string()))?;
        reservation.merge(more);
        Ok(Admitted {
            format,
            limits,
            reservation,
        })
    }

    /// Stores one message, or sets it aside.
    async fn handle(&self, publish: &Publish, admitted: Result<Admitted, DeadLetter>) {
        let id = RequestId::new();
        let arrived = Timestamp::now();
        let letter = match admitted {
            Ok(admitted) => self.store(publish, admitted, arrived, id).await,
            Err(letter) => Some(letter),
        };
        if let Some(letter) = letter {
            warn!(%id, topic = %publish.topic, reason = letter.reason, message = %letter.message, "MQTT message set aside");
            self.set_aside(publish, arrived, id, letter).await;
        }
    }

    /// Stores what the message holds; what cannot be stored comes back as a dead letter.
    async fn store(
        &self,
        publish: &Publish,
        admitted: Admitted,
        arrived: Timestamp,
        id: RequestId,
    ) -> Option<DeadLetter> {
        let Admitted {
            format,
            limits,
            reservation,
        } = admitted;
        let parsed = match format.parse(&publish.payload, arrived, &limits) {
            Ok(parsed) => parsed,
            Err(error) => return Some(DeadLetter::new("unreadable", error.to_string())),
        };
        let metrics = &self.sink.metrics;
        metrics.rows("rejected", parsed.rejected_count());
        metrics.rows("ignored", parsed.ignored_count());
        let Parsed {
            rows,
            rejected,
            unlisted_rejected,
            ..
        } = parsed;
        let count = rows.len();
        if let Err(detail) = self.commit_until_done(rows, arrived).await {
            warn!(%id, topic = %publish.topic, %detail, tries = DATA_TRIES, "the database refused an MQTT message's data every time");
            metrics.rows("rejected", count);
            return Some(DeadLetter {
                rejected,
                unlisted_rejected,
                ..DeadLetter::new(
                    "refused_by_database",
                    "the database refused the data of this message; nothing of it was stored \
                     (the service's log has the reason under this id)",
                )
            });
        }
        drop(reservation);
        metrics.rows("committed", count);
        if rejected.is_empty() && unlisted_rejected == 0 {
            return None;
        }
        let message = format!(
            "{} items refused, {count} stored",
            rejected.len() + unlisted_rejected
        );
        Some(DeadLetter {
            rejected,
            unlisted_rejected,
            ..DeadLetter::new("refused_items", message)
        })
    }

    /// Commits `rows`, retrying while the database is unavailable or the writer may not
    /// insert (the broker holds the message meanwhile: backpressure on the broker, not
    /// data loss here). Gives up, with PostgreSQL's reason, only when the data itself is
    /// refused [`DATA_TRIES`] times.
    async fn commit_until_done(
        &self,
        rows: Vec<parse::Measurement>,
        arrived: Timestamp,
    ) -> Result<(), String> {
        // Over the rate quota, wait rather than refuse: MQTT has no 429.
        while let Err(Some(wait)) = self.sink.rate.check(rows.len()) {
            tokio::time::sleep(wait).await;
        }
        let mut refusals = 0;
        loop {
            match self.sink.store.submit(rows.clone(), arrived).await {
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
        self.sink.metrics.dead_letter(letter.reason);
        let body = envelope(publish, arrived, id, letter).to_string();
        let (confirm, confirmed) = oneshot::channel();
        lock(&self.confirmations).waiting.push_back(confirm);
        if let Err(error) = self
            .client
            .publish(
                &self.settings.dead_letter_topic,
                QoS::AtLeastOnce,
                false,
                body,
            )
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

/// A dead letter as the tenant reads it.
fn envelope(
    publish: &Publish,
    arrived: Timestamp,
    id: RequestId,
    letter: DeadLetter,
) -> serde_json::Value {
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
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(topics: &[&str], dead_letter_topic: &str) -> Settings {
        Settings {
            url: "mqtt://broker.example.it".into(),
            topics: topics.iter().map(|topic| topic.to_string()).collect(),
            username: None,
            password: None,
            client_id: "smartregion-ingest-prato".into(),
            dead_letter_topic: dead_letter_topic.into(),
            window: parse::Window::ANY,
            formats: IngestFormat::ALL.to_vec(),
            max_payload: 8 * 1024 * 1024,
            in_flight: 16,
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
    fn the_topic_names_the_format_among_those_the_tenant_accepts() {
        let mut all = settings(&["prato/#"], "dead");
        let kind = |settings: &Settings, topic: &str| {
            settings
                .format_of(topic)
                .map(|format| format.kind())
                .map_err(|(reason, _)| reason)
        };
        assert_eq!(kind(&all, "prato/senml/a"), Ok(IngestFormat::SenML));
        assert_eq!(kind(&all, "prato/ngsi-v2/orion"), Ok(IngestFormat::NgsiV2));
        assert_eq!(
            kind(&all, "prato/measurements/gateway-1"),
            Ok(IngestFormat::Measurements)
        );
        let (reason, message) = all.format_of("prato/a").err().expect("no format named");
        assert_eq!(reason, "no_format");
        assert!(
            message.contains("measurements, ngsi-v2, senml"),
            "{message}"
        );
        all.formats = vec![IngestFormat::SenML];
        // One format accepted: the topic need not name it; another is refused.
        assert_eq!(kind(&all, "prato/a"), Ok(IngestFormat::SenML));
        assert_eq!(
            kind(&all, "prato/measurements/a"),
            Err("format_not_accepted")
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

    #[test]
    fn a_dead_letter_carries_the_payload_as_text_or_base64() {
        let mut publish = Publish::new("prato/senml/a", QoS::AtLeastOnce, "[1,2");
        let received = Timestamp::from_second(1_795_428_000).unwrap();
        let letter = envelope(
            &publish,
            received,
            RequestId::new(),
            DeadLetter::new("unreadable", "malformed JSON"),
        );
        assert_eq!(letter["payload"], "[1,2");
        assert_eq!(letter["topic"], "prato/senml/a");
        assert_eq!(letter["reason"], "unreadable");
        assert!(letter.get("rejected").is_none());
        publish.payload = vec![0xff, 0x00].into();
        let letter = envelope(
            &publish,
            received,
            RequestId::new(),
            DeadLetter::new("unreadable", "malformed JSON"),
        );
        assert_eq!(letter["payload_base64"], "/wA=");
    }
}
