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
//! A writer that finds no other writer busy commits what is queued at once; only while
//! another commit is under way does it wait up to the flush interval for company (under
//! load, requests coalesce; a lone sender never waits for nobody).
//!
//! Bounded: the rows waiting for a commit never exceed the queue size; a request that
//! cannot get room in time is refused as busy (503), so memory stays flat under overload.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::pin_mut;
use jiff::Timestamp;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::parse::Measurement;

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
    pub flush: Duration,
    pub queue_rows: usize,
    pub queue_wait: Duration,
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
    /// The last commit or connection attempt succeeded.
    healthy: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer tasks. They run until every `Writer` handle is dropped.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> Writer {
        let (queue, receiver) = mpsc::channel(settings.queue_rows.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let healthy = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let statements = Arc::new(Statements::new(&settings.schema));
        tokio::spawn(probe(settings.clone(), healthy.clone()));
        for index in 0..settings.writers.max(1) {
            let task = WriterTask {
                index,
                settings: settings.clone(),
                receiver: receiver.clone(),
                healthy: healthy.clone(),
                metrics: metrics.clone(),
                statements: statements.clone(),
                busy: busy.clone(),
                session: None,
                known_sensors: HashSet::new(),
            };
            tokio::spawn(task.run());
        }
        Writer {
            queue,
            room: Arc::new(Semaphore::new(settings.queue_rows)),
            queue_rows: settings.queue_rows,
            queue_wait: settings.queue_wait,
            healthy,
        }
    }

    /// Most rows one submission may carry.
    pub fn max_rows(&self) -> usize {
        self.queue_rows
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
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

/// The statements of one tenant, built once. Public so the TimescaleDB checks run
/// exactly these (`e2e/tests/offline/timescaledb_sql.rs`).
pub struct Statements {
    /// Binary COPY of (sensor, metric, time, value, received_at) straight into
    /// measurements: new rows only (a duplicate fails it).
    pub copy_direct: String,
    /// New sensors into the catalog, given as a `text[]`.
    pub sensors: String,
    /// Rows given as five arrays (sensor, metric, time, value, received_at) into
    /// measurements, duplicates absorbed.
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
                "INSERT INTO {quoted}.measurements (sensor, metric, time, value, received_at) \
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
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    statements: Arc<Statements>,
    /// Writers committing now (this one included while it does).
    busy: Arc<AtomicUsize>,
    session: Option<Session>,
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

/// How a batch is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// COPY into measurements; fails on a duplicate.
    Direct,
    /// One insert of the rows as arrays, skipping duplicates.
    Skipping,
}

impl WriterTask {
    async fn run(mut self) {
        loop {
            let Some(batch) = self.collect().await else {
                return;
            };
            self.commit_isolating(batch).await;
            self.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Commits `batch` and answers every job of it. A batch refused for its data is
    /// split in halves, each committed on its own, until the jobs at fault stand alone.
    async fn commit_isolating(&mut self, batch: Vec<Job>) {
        let mut groups = vec![batch];
        while let Some(mut group) = groups.pop() {
            let rows: usize = group.iter().map(|job| job.rows.len()).sum();
            let started = Instant::now();
            let result = self.commit(&group).await;
            self.metrics
                .observe_commit(rows, started.elapsed(), result.is_ok());
            self.healthy.store(
                !matches!(result, Err(WriteError::Unavailable(_))),
                Ordering::Relaxed,
            );
            if matches!(result, Err(WriteError::Data(_))) && group.len() > 1 {
                let second = group.split_off(group.len() / 2);
                groups.push(second);
                groups.push(group);
                continue;
            }
            for job in group {
                let _ = job.reply.send(result.clone());
            }
        }
    }

    /// Waits for a first job and takes what else is queued. Only when another writer is
    /// committing (there is load) does it wait up to the flush interval for more, up to
    /// the batch size; alone, it commits at once. Other writers commit meanwhile; this
    /// one holds the queue. Counts itself busy before it lets go of the queue.
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
        if self.busy.load(Ordering::Relaxed) > 0 {
            let deadline = tokio::time::Instant::now() + self.settings.flush;
            while rows < self.settings.max_batch_rows {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(job)) => {
                        rows += job.rows.len();
                        batch.push(job);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
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

    async fn commit(&mut self, batch: &[Job]) -> Result<(), WriteError> {
        let mut outcome = self.write(batch, Path::Direct).await;
        if outcome
            .as_ref()
            .is_err_and(|error| error.code() == Some(&SqlState::UNIQUE_VIOLATION))
        {
            // A row is already stored: nothing of the first try was committed; redo it
            // the way that skips duplicates.
            self.metrics.staged_commit();
            outcome = self.write(batch, Path::Skipping).await;
        }
        match outcome {
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
        if self
            .session
            .as_ref()
            .is_none_or(|session| session.client.is_closed())
            || error.code().is_none()
        {
            // The session is gone or unusable; the next batch connects afresh.
            self.session = None;
        }
        let class = error.code().map(|code| &code.code()[..2]);
        let failure = if matches!(class, Some("22" | "23")) {
            WriteError::Data(detail)
        } else if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            // Asked on a session of its own: the one that failed may still be winding
            // down a COPY, and answers nothing coherent until it has.
            self.session = None;
            match self.may_insert().await {
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
            }
        } else {
            WriteError::Unavailable(detail)
        };
        warn!(writer = self.index, error = %failure, "commit failed; nothing of the batch was acknowledged");
        failure
    }

    /// Whether this session may insert into the tenant's tables; `None` when that cannot
    /// be told (no USAGE on the schema).
    async fn may_insert(&mut self) -> Result<Option<bool>, tokio_postgres::Error> {
        let statement = self.statements.may_insert.clone();
        let session = self.connect().await?;
        session.client.query_one(&statement, &[]).await?.try_get(0)
    }

    /// One transaction writing `batch` by `path`; the sensors it catalogued on success.
    async fn write(
        &mut self,
        batch: &[Job],
        path: Path,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let new_sensors: Vec<String> = {
            let mut seen = HashSet::new();
            batch
                .iter()
                .flat_map(|job| &job.rows)
                .map(|row| row.sensor.as_str())
                .filter(|sensor| !self.known_sensors.contains(*sensor) && seen.insert(*sensor))
                .map(str::to_owned)
                .collect()
        };
        let session = self.connect().await?;
        let transaction = session.client.transaction().await?;
        match path {
            Path::Direct => {
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
            }
            Path::Skipping => {
                let rows = batch
                    .iter()
                    .flat_map(|job| job.rows.iter().map(move |row| (row, job.received)));
                let count = batch.iter().map(|job| job.rows.len()).sum();
                let (mut sensors, mut metrics, mut times, mut values, mut received) = (
                    Vec::with_capacity(count),
                    Vec::with_capacity(count),
                    Vec::with_capacity(count),
                    Vec::with_capacity(count),
                    Vec::with_capacity(count),
                );
                for (row, at) in rows {
                    sensors.push(row.sensor.as_str());
                    metrics.push(row.metric.as_str());
                    times.push(SystemTime::from(row.time));
                    values.push(row.value);
                    received.push(at);
                }
                transaction
                    .execute(
                        &session.insert_skipping,
                        &[&sensors, &metrics, &times, &values, &received],
                    )
                    .await?;
            }
        }
        if !new_sensors.is_empty() {
            transaction
                .execute(&session.sensors, &[&new_sensors])
                .await?;
        }
        transaction.commit().await?;
        Ok(new_sensors)
    }
}

/// Keeps `healthy` true while the database answers, also when no rows arrive: `/readyz`
/// reports it, so an idle pod shows an outage and a recovered database shows at once.
async fn probe(settings: Settings, healthy: Arc<AtomicBool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client.as_ref().is_none_or(|client| client.is_closed()) {
            client = connect(&settings).await.ok();
        }
        let answered = match &client {
            Some(client) => {
                tokio::time::timeout(Duration::from_secs(2), client.simple_query("SELECT 1"))
                    .await
                    .is_ok_and(|result| result.is_ok())
            }
            None => false,
        };
        if !answered {
            client = None;
        }
        healthy.store(answered, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
