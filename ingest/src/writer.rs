//! Group commit: rows of concurrent requests are written together in one transaction, and
//! every request is answered only after the commit that holds its rows (or with the error
//! that prevented it). Talks to the database; owns the writer connections.
//!
//! Two ways to write a batch. New rows, the common case, go by one binary COPY straight
//! into `measurements`: what a COPY costs, nothing more. A batch that holds a row already
//! stored (a retried request, the same reading sent twice) fails that COPY on the unique
//! key; it is then redone by one `INSERT ... SELECT FROM unnest($1, ...) ON CONFLICT DO
//! NOTHING` with the rows as array parameters, which skips duplicates. No temporary
//! table: tenant logins may not create them (their space would be outside the quota).
//! Either way a retried batch stores nothing new, and only a commit acknowledges.
//!
//! One request's bad data never fails another's: when PostgreSQL refuses a batch for its
//! data (SQLSTATE classes 22 and 23, other than the duplicates above), the batch is split
//! in halves and each half committed on its own, down to the request at fault, which
//! alone gets [`WriteError::Data`]. The parsers refuse such items first; this is the net
//! under them.
//!
//! A refusal for privileges (42501) is [`WriteError::Refused`] only once the writer is
//! seen to lack INSERT on the tenant's tables (how the operator enforces a suspension or
//! the storage quota); any other privilege error is transient ([`WriteError::Unavailable`]).
//!
//! No timer: a writer takes what is queued when it is free and commits it at once. Rows
//! that arrive while commits are in flight wait for the next free writer and ride its
//! commit together, so under load requests coalesce by themselves, and a lone sender
//! never waits for company.
//!
//! Bounded: the rows waiting for a commit never exceed the queue size; a request that
//! cannot get room in time is refused as busy (503), so memory stays flat under overload.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::pin_mut;
use jiff::Timestamp;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tracing::{info, warn};

use crate::health::{DATABASE_UNREACHABLE, Readiness, Unready};
use crate::metrics::Metrics;
use crate::parse::Measurement;

/// Where rows go: the group-commit [`Writer`] in the service, a stand-in in tests of the
/// HTTP and MQTT layers (so every refusal's answer is tested without PostgreSQL).
pub trait Store: Send + Sync + 'static {
    /// Commits `rows` (received at `received`) and returns once they are durable, or
    /// why they are not.
    fn submit(
        &self,
        rows: Vec<Measurement>,
        received: Timestamp,
    ) -> BoxFuture<'_, Result<(), WriteError>>;

    /// Most rows one submission may carry.
    fn max_rows(&self) -> usize;

    /// Why the store cannot take rows now; `None` when it can.
    fn unready(&self) -> Option<Unready>;
}

/// Why rows were not committed. The `String`s are PostgreSQL's detail, for the log only:
/// senders get a stable message (see `http`).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The database cannot be reached or failed the transaction; nothing was committed and
    /// the client should retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The writer may not insert (checked, not assumed): over the storage quota, or the
    /// tenant is suspended.
    #[error(
        "writes are refused: the tenant is over its database storage quota or suspended; \
         see the tenant's WithinQuota condition"
    )]
    Refused,
    /// More rows wait for a commit than the queue holds; retry shortly.
    #[error("the ingest queue is full; retry shortly")]
    Busy,
    /// PostgreSQL refused this request's data (SQLSTATE class 22 or 23); a retry would be
    /// refused again. Other requests of the same commit were committed without it.
    #[error("the database refused the data: {0}")]
    Data(String),
}

/// How to reach the database and how to batch.
#[derive(Clone)]
pub struct Settings {
    pub database: tokio_postgres::Config,
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Schema of the tenant, validated (`t_...`, lower-case letters, digits, `_`).
    pub schema: String,
    pub writers: usize,
    pub max_batch_rows: usize,
    pub queue_rows: usize,
    pub queue_wait: Duration,
    /// An advisory lock key the probe's session takes and keeps while it can: the
    /// tenant's MQTT session is consumed only by the pod holding it
    /// ([`Writer::session_held`]). `None`: no lock.
    pub session_lock: Option<i64>,
}

struct Job {
    rows: Vec<Measurement>,
    received: SystemTime,
    reply: oneshot::Sender<Result<(), WriteError>>,
    // Room in the queue, given back when the job is answered and dropped.
    _room: OwnedSemaphorePermit,
}

/// The handle request handlers submit rows through.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    room: Arc<Semaphore>,
    queue_rows: usize,
    queue_wait: Duration,
    /// Whether the last commit or probe reached the database, and why not.
    readiness: Arc<Readiness>,
    /// Whether the probe's session holds [`Settings::session_lock`].
    session_held: watch::Receiver<bool>,
}

impl Writer {
    /// Starts the writer tasks. They run until every `Writer` handle is dropped.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> Writer {
        let (queue, receiver) = mpsc::channel(settings.queue_rows.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let readiness = Arc::new(Readiness::starting(DATABASE_UNREACHABLE));
        let statements = Arc::new(Statements::new(&settings.schema));
        let (holding, session_held) = watch::channel(false);
        tokio::spawn(probe(settings.clone(), readiness.clone(), holding));
        for index in 0..settings.writers.max(1) {
            let task = WriterTask {
                index,
                settings: settings.clone(),
                receiver: receiver.clone(),
                readiness: readiness.clone(),
                metrics: metrics.clone(),
                statements: statements.clone(),
                session: None,
                unreachable: false,
                known_sensors: HashSet::new(),
            };
            tokio::spawn(task.run());
        }
        Writer {
            queue,
            room: Arc::new(Semaphore::new(settings.queue_rows)),
            queue_rows: settings.queue_rows,
            queue_wait: settings.queue_wait,
            readiness,
            session_held,
        }
    }

    /// Follows whether this process holds the session lock (always false without one).
    pub fn session_held(&self) -> watch::Receiver<bool> {
        self.session_held.clone()
    }

    /// Commits `rows` (received at `received`) and returns once they are durable.
    pub async fn submit(
        &self,
        rows: Vec<Measurement>,
        received: Timestamp,
    ) -> Result<(), WriteError> {
        if rows.is_empty() {
            return Ok(());
        }
        let count = u32::try_from(rows.len().min(self.queue_rows)).unwrap_or(u32::MAX);
        let room =
            tokio::time::timeout(self.queue_wait, self.room.clone().acquire_many_owned(count))
                .await
                .map_err(|_| WriteError::Busy)?
                .map_err(|_| WriteError::Unavailable("the writer stopped".into()))?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            rows,
            received: SystemTime::from(received),
            reply,
            _room: room,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| WriteError::Unavailable("the writer stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Unavailable("the writer stopped".into())))
    }
}

impl Store for Writer {
    fn submit(
        &self,
        rows: Vec<Measurement>,
        received: Timestamp,
    ) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(Writer::submit(self, rows, received))
    }

    fn max_rows(&self) -> usize {
        self.queue_rows
    }

    fn unready(&self) -> Option<Unready> {
        self.readiness.state()
    }
}

/// The statements of one tenant, built once. Public so the TimescaleDB checks run
/// exactly these (`e2e/tests/offline/timescaledb_sql.rs`).
pub struct Statements {
    /// Binary COPY of (sensor, metric, time, value, received_at) straight into
    /// measurements: new rows only (a duplicate fails it).
    pub copy_direct: String,
    /// New sensors into the catalog, given as a `text[]`.
    pub sensors: String,
    /// Rows given as five arrays (sensor, metric, time, value, received_at) into
    /// measurements, duplicates absorbed, and the new sensors given as a sixth into the
    /// catalog: one statement, so one round trip commits it.
    pub insert_skipping: String,
    /// Whether the session may insert into the tenant's tables at all: false is a
    /// suspension or the storage quota (the operator revokes INSERT for both).
    pub may_insert: String,
}

impl Statements {
    pub fn new(schema: &str) -> Statements {
        let quoted = postgres_protocol::escape::escape_identifier(schema);
        let literal =
            |table: &str| postgres_protocol::escape::escape_literal(&format!("{quoted}.{table}"));
        Statements {
            copy_direct: format!(
                "COPY {quoted}.measurements (sensor, metric, time, value, received_at) \
                 FROM STDIN (FORMAT binary)"
            ),
            sensors: format!(
                "INSERT INTO {quoted}.sensors (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
            ),
            insert_skipping: format!(
                "WITH catalogued AS (INSERT INTO {quoted}.sensors (id) \
                 SELECT unnest($6::text[]) ON CONFLICT DO NOTHING) \
                 INSERT INTO {quoted}.measurements (sensor, metric, time, value, received_at) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], \
                 $4::float8[], $5::timestamptz[]) ON CONFLICT DO NOTHING"
            ),
            // The table names are only looked up with USAGE on the schema: without it
            // the answer is unknown (NULL), not a refusal.
            may_insert: format!(
                "SELECT CASE WHEN has_schema_privilege({schema}, 'USAGE') THEN \
                 has_table_privilege({measurements}, 'INSERT') \
                 AND has_table_privilege({sensors}, 'INSERT') END",
                schema = postgres_protocol::escape::escape_literal(schema),
                measurements = literal("measurements"),
                sensors = literal("sensors"),
            ),
        }
    }
}

struct WriterTask {
    index: usize,
    settings: Settings,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    statements: Arc<Statements>,
    session: Option<Session>,
    /// The last failure was the database out of reach (not an answer from it).
    unreachable: bool,
    /// Sensors this writer saw committed to the catalog: a batch of known sensors skips
    /// the catalog statement. Cleared when it grows past [`KNOWN_SENSORS`].
    known_sensors: HashSet<String>,
}

/// Most sensors a writer remembers as catalogued.
const KNOWN_SENSORS: usize = 100_000;

/// A connection with its statements prepared.
struct Session {
    client: tokio_postgres::Client,
    copy_direct: tokio_postgres::Statement,
    sensors: tokio_postgres::Statement,
    insert_skipping: tokio_postgres::Statement,
}

/// Batches of at most this many rows are written by one statement (one round trip, in
/// its own implicit transaction) rather than by BEGIN, COPY, COMMIT (four): for a few
/// rows the round trips, not the rows, are the cost. Above it COPY is cheaper per row.
const ONE_STATEMENT_ROWS: usize = 64;

impl WriterTask {
    async fn run(mut self) {
        loop {
            let Some(batch) = self.collect().await else {
                return;
            };
            for (job, result) in isolate(&mut self, batch).await {
                let _ = job.reply.send(result);
            }
        }
    }

    /// Waits for a first job and takes what else is queued, up to the batch size, without
    /// waiting for more: rows that arrive while this commit is in flight ride the next one
    /// (another writer's, or this one's when it is back). Alone, a request commits at once.
    async fn collect(&self) -> Option<Vec<Job>> {
        let mut receiver = self.receiver.lock().await;
        let first = receiver.recv().await?;
        let mut rows = first.rows.len();
        let mut batch = vec![first];
        while rows < self.settings.max_batch_rows {
            match receiver.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    async fn connect(&mut self) -> Result<&mut Session, tokio_postgres::Error> {
        if self
            .session
            .as_ref()
            .is_some_and(|session| session.client.is_closed())
        {
            self.session = None;
        }
        if self.session.is_none() {
            let client = connect(&self.settings).await?;
            let statements = &self.statements;
            let session = Session {
                copy_direct: client.prepare(&statements.copy_direct).await?,
                sensors: client
                    .prepare_typed(&statements.sensors, &[Type::TEXT_ARRAY])
                    .await?,
                insert_skipping: client
                    .prepare_typed(
                        &statements.insert_skipping,
                        &[
                            Type::TEXT_ARRAY,
                            Type::TEXT_ARRAY,
                            Type::TIMESTAMPTZ_ARRAY,
                            Type::FLOAT8_ARRAY,
                            Type::TIMESTAMPTZ_ARRAY,
                            Type::TEXT_ARRAY,
                        ],
                    )
                    .await?,
                client,
            };
            info!(writer = self.index, "connected to the database");
            self.session = Some(session);
        }
        Ok(self.session.as_mut().expect("connected above"))
    }

    async fn commit_once(&mut self, batch: &[Job]) -> Result<(), WriteError> {
        let new_sensors = self.new_sensors(batch);
        let rows: usize = batch.iter().map(|job| job.rows.len()).sum();
        let mut outcome = if rows <= ONE_STATEMENT_ROWS {
            self.insert(batch, &new_sensors).await
        } else {
            self.copy(batch, &new_sensors).await
        };
        if rows > ONE_STATEMENT_ROWS
            && outcome
                .as_ref()
                .is_err_and(|error| error.code() == Some(&SqlState::UNIQUE_VIOLATION))
        {
            // A row is already stored: nothing of the first try was committed; redo it
            // the way that skips duplicates.
            self.metrics.staged_commit();
            outcome = self.insert(batch, &new_sensors).await;
        }
        match outcome.map(|()| new_sensors) {
            Ok(new_sensors) => {
                if self.known_sensors.len() + new_sensors.len() > KNOWN_SENSORS {
                    self.known_sensors.clear();
                }
                self.known_sensors.extend(new_sensors);
                Ok(())
            }
            Err(error) => Err(self.failure(&error).await),
        }
    }

    /// What a failed transaction means for the requests in it.
    async fn failure(&mut self, error: &tokio_postgres::Error) -> WriteError {
        let detail = error_text(error);
        let class = classify(error.code());
        if self
            .session
            .as_ref()
            .is_none_or(|session| session.client.is_closed())
            || error.code().is_none()
            // A COPY refused before its first row leaves tokio-postgres' session out of
            // step with the server ("unexpected message from server"): a new one checks.
            || class == Class::Privilege
        {
            // The session is gone or unusable; the next statement connects afresh.
            self.session = None;
        }
        // No SQLSTATE: the server was not reached or did not answer.
        self.unreachable = error.code().is_none();
        let failure = match class {
            Class::Data => WriteError::Data(detail),
            Class::Transient => WriteError::Unavailable(detail),
            Class::Privilege => match self.may_insert().await {
                Ok(Some(false)) => WriteError::Refused,
                Ok(answer) => WriteError::Unavailable(format!(
                    "{detail} (yet the writer's INSERT privilege is {})",
                    match answer {
                        Some(_) => "granted",
                        None => "unknown: no USAGE on the schema",
                    }
                )),
                Err(check) => WriteError::Unavailable(format!(
                    "{detail} (and checking the writer's privileges failed: {})",
                    error_text(&check)
                )),
            },
        };
        warn!(writer = self.index, error = %failure, "commit failed; nothing of the batch was acknowledged");
        failure
    }

    /// Whether this session may insert into the tenant's tables; `None` when that cannot
    /// be told (no USAGE on the schema).
    async fn may_insert(&self) -> Result<Option<bool>, tokio_postgres::Error> {
        // A bare session: the writer's prepares statements that need the privileges
        // in question.
        let client = connect(&self.settings).await?;
        client
            .query_one(&self.statements.may_insert, &[])
            .await?
            .try_get(0)
    }

    /// The sensors of `batch` this writer has not seen catalogued, once each, sorted:
    /// two writers inserting the same new sensors lock their catalog keys in the same
    /// order (in any other, they deadlock).
    fn new_sensors(&self, batch: &[Job]) -> Vec<String> {
        let mut sensors: Vec<String> = batch
            .iter()
            .flat_map(|job| &job.rows)
            .map(|row| row.sensor.as_str())
            .filter(|sensor| !self.known_sensors.contains(*sensor))
            .map(str::to_owned)
            .collect();
        sensors.sort_unstable();
        sensors.dedup();
        sensors
    }

    /// One transaction: BEGIN, a binary COPY of `batch` into measurements (new rows
    /// only: a duplicate fails it), `new_sensors` into the catalog, COMMIT.
    async fn copy(
        &mut self,
        batch: &[Job],
        new_sensors: &[String],
    ) -> Result<(), tokio_postgres::Error> {
        let session = self.connect().await?;
        let transaction = session.client.transaction().await?;
        let sink = transaction.copy_in(&session.copy_direct).await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::FLOAT8,
                Type::TIMESTAMPTZ,
            ],
        );
        pin_mut!(writer);
        for job in batch {
            for row in &job.rows {
                let time = SystemTime::from(row.time);
                writer
                    .as_mut()
                    .write(&[&row.sensor, &row.metric, &time, &row.value, &job.received])
                    .await?;
            }
        }
        writer.finish().await?;
        if !new_sensors.is_empty() {
            transaction
                .execute(&session.sensors, &[&new_sensors])
                .await?;
        }
        transaction.commit().await
    }

    /// One statement, its own transaction: `batch` as arrays into measurements,
    /// duplicates skipped, and `new_sensors` into the catalog.
    async fn insert(
        &mut self,
        batch: &[Job],
        new_sensors: &[String],
    ) -> Result<(), tokio_postgres::Error> {
        let count = batch.iter().map(|job| job.rows.len()).sum();
        let (mut sensors, mut metrics, mut times, mut values, mut received) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        for job in batch {
            for row in &job.rows {
                sensors.push(row.sensor.as_str());
                metrics.push(row.metric.as_str());
                times.push(SystemTime::from(row.time));
                values.push(row.value);
                received.push(job.received);
            }
        }
        let session = self.connect().await?;
        session
            .client
            .execute(
                &session.insert_skipping,
                &[&sensors, &metrics, &times, &values, &received, &new_sensors],
            )
            .await?;
        Ok(())
    }
}

/// What a failed transaction's SQLSTATE says about the requests in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Classes 22 (data exception) and 23 (integrity constraint): the data, for good.
    Data,
    /// 42501: refused for privileges; whether for good needs a look at the grants.
    Privilege,
    /// Anything else, and no SQLSTATE at all (the connection): try again.
    Transient,
}

fn classify(code: Option<&SqlState>) -> Class {
    match code {
        Some(code) if code == &SqlState::INSUFFICIENT_PRIVILEGE => Class::Privilege,
        Some(code) if matches!(&code.code()[..2], "22" | "23") => Class::Data,
        _ => Class::Transient,
    }
}

/// One transaction of a group of jobs.
trait Commit<J> {
    async fn commit(&mut self, group: &[J]) -> Result<(), WriteError>;
}

impl Commit<Job> for WriterTask {
    async fn commit(&mut self, group: &[Job]) -> Result<(), WriteError> {
        let rows: usize = group.iter().map(|job| job.rows.len()).sum();
        let started = Instant::now();
        let result = self.commit_once(group).await;
        self.metrics
            .observe_commit(rows, started.elapsed(), result.is_ok());
        match &result {
            Err(WriteError::Unavailable(detail)) if self.unreachable => {
                self.readiness.unready(DATABASE_UNREACHABLE, detail.clone());
            }
            Err(_) => {}
            Ok(()) => {
                self.readiness.ready();
            }
        }
        result
    }
}

/// Commits `jobs` as one group; when the group is refused for its data, commits each half
/// on its own, down to the jobs at fault, which alone get [`WriteError::Data`]. Every job
/// comes back with its outcome.
async fn isolate<J, C: Commit<J>>(
    committer: &mut C,
    jobs: Vec<J>,
) -> Vec<(J, Result<(), WriteError>)> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut groups = vec![jobs];
    while let Some(mut group) = groups.pop() {
        let result = committer.commit(&group).await;
        if matches!(result, Err(WriteError::Data(_))) && group.len() > 1 {
            let second = group.split_off(group.len() / 2);
            groups.push(second);
            groups.push(group);
            continue;
        }
        outcomes.extend(group.into_iter().map(|job| (job, result.clone())));
    }
    outcomes
}

/// Keeps the readiness true while the database answers, also when no rows arrive:
/// `/readyz` reports it, so an idle pod shows an outage and a recovered database shows at
/// once. Its session also takes the session lock, when there is one, and keeps it as
/// long as it lives (`holding` says whether it does).
async fn probe(settings: Settings, readiness: Arc<Readiness>, holding: watch::Sender<bool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client.as_ref().is_some_and(|client| client.is_closed()) {
            // Whatever lock the session held went with it.
            client = None;
            holding.send_replace(false);
        }
        if client.is_none() {
            match connect(&settings).await {
                Ok(connected) => client = Some(connected),
                Err(error) => {
                    readiness.unready(DATABASE_UNREACHABLE, error_text(&error));
                }
            }
        }
        if let Some(session) = &client {
            let check = async {
                session.simple_query("SELECT 1").await?;
                if let Some(key) = settings.session_lock
                    && !*holding.borrow()
                {
                    let taken: bool = session
                        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                        .await?
                        .get(0);
                    holding.send_replace(taken);
                }
                Ok::<_, tokio_postgres::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(2), check).await {
                Ok(Ok(())) => {
                    readiness.ready();
                }
                Ok(Err(error)) => {
                    readiness.unready(DATABASE_UNREACHABLE, error_text(&error));
                    client = None;
                    holding.send_replace(false);
                }
                // Slow is not gone: the session, and the lock it holds, stay until the
                // connection itself ends (a busy pod must not hand its MQTT session
                // back and forth).
                Err(_) => {
                    readiness.unready(DATABASE_UNREACHABLE, "no answer to SELECT 1 within 2 s");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The session lock key of a tenant's MQTT session: a 64-bit advisory lock key of its
/// own (the operator's per-tenant locks hash other text), from the schema.
pub fn mqtt_session_lock(schema: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("smartregion-ingest/mqtt-session/{schema}"));
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

async fn connect(settings: &Settings) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let client = match &settings.tls {
        None => {
            let (client, connection) = settings.database.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(connection));
            client
        }
        Some(tls) => {
            let (client, connection) = settings.database.connect(tls.clone()).await?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

/// Runs a connection until it ends, and says why when it ends with an error (the next
/// statement on its client fails and reconnects; this says what happened to it).
async fn drive<C>(connection: C)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        warn!(error = %error_text(&error), "a database connection ended");
    }
}

/// The error with its cause (tokio-postgres puts the server's message in the source).
fn error_text(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits refused for their data when they hold a bad job (an odd number here).
    #[derive(Default)]
    struct Picky {
        commits: Vec<Vec<u32>>,
    }

    impl Commit<u32> for Picky {
        async fn commit(&mut self, group: &[u32]) -> Result<(), WriteError> {
            self.commits.push(group.to_vec());
            if group.iter().any(|job| job % 2 == 1) {
                Err(WriteError::Data("bad".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_group_refused_for_its_data_is_split_until_the_bad_jobs_stand_alone() {
        let mut picky = Picky::default();
        let mut outcomes = isolate(&mut picky, vec![0, 2, 4, 5, 6, 8, 10, 12]).await;
        outcomes.sort_by_key(|(job, _)| *job);
        for (job, outcome) in &outcomes {
            assert_eq!(outcome.is_ok(), job % 2 == 0, "job {job}: {outcome:?}");
        }
        assert_eq!(outcomes.len(), 8);
        // One try of all, then halves: the good half at once, the bad one down to 5.
        assert_eq!(picky.commits[0], [0, 2, 4, 5, 6, 8, 10, 12]);
        assert!(picky.commits.contains(&vec![6, 8, 10, 12]));
        assert!(picky.commits.contains(&vec![5]));
        assert!(picky.commits.len() <= 7, "{:?}", picky.commits);
    }

    #[tokio::test]
    async fn other_failures_answer_the_whole_group_at_once() {
        struct Down;
        impl Commit<u32> for Down {
            async fn commit(&mut self, _: &[u32]) -> Result<(), WriteError> {
                Err(WriteError::Unavailable("connection refused".into()))
            }
        }
        let outcomes = isolate(&mut Down, vec![1, 2, 3]).await;
        assert_eq!(outcomes.len(), 3);
        assert!(
            outcomes
                .iter()
                .all(|(_, outcome)| matches!(outcome, Err(WriteError::Unavailable(_))))
        );
    }

    #[test]
    fn sqlstates_sort_into_data_privilege_and_transient() {
        assert_eq!(
            classify(Some(&SqlState::DATETIME_FIELD_OVERFLOW)),
            Class::Data
        );
        assert_eq!(classify(Some(&SqlState::CHECK_VIOLATION)), Class::Data);
        assert_eq!(classify(Some(&SqlState::NOT_NULL_VIOLATION)), Class::Data);
        assert_eq!(
            classify(Some(&SqlState::INSUFFICIENT_PRIVILEGE)),
            Class::Privilege
        );
        assert_eq!(classify(Some(&SqlState::ADMIN_SHUTDOWN)), Class::Transient);
        assert_eq!(
            classify(Some(&SqlState::T_R_SERIALIZATION_FAILURE)),
            Class::Transient
        );
        assert_eq!(classify(None), Class::Transient);
    }

    #[test]
    fn statements_name_the_tenants_tables_only_and_need_no_temporary_table() {
        let statements = Statements::new("t_prato");
        for statement in [
            &statements.copy_direct,
            &statements.sensors,
            &statements.insert_skipping,
            &statements.may_insert,
        ] {
            assert!(statement.contains("\"t_prato\""), "{statement}");
            assert!(!statement.to_uppercase().contains("TEMP"), "{statement}");
        }
        assert!(
            statements
                .insert_skipping
                .ends_with("ON CONFLICT DO NOTHING")
        );
        assert!(
            statements
                .may_insert
                .contains("has_table_privilege('\"t_prato\".measurements', 'INSERT')"),
            "{}",
            statements.may_insert
        );
    }

    #[test]
    fn each_tenant_has_its_own_session_lock() {
        assert_ne!(mqtt_session_lock("t_prato"), mqtt_session_lock("t_pisa"));
        assert_eq!(mqtt_session_lock("t_prato"), mqtt_session_lock("t_prato"));
    }
}
