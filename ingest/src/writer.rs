//! Group commit: rows of concurrent requests are written together in one transaction, and
//! every request is answered only after the commit that holds its rows (or with the error
//! that prevented it). Talks to the database; owns the writer connections.
//!
//! Two ways to write a batch. New rows, the common case, go by one binary COPY straight
//! into `measurements`: what a COPY costs, nothing more. A batch that holds a row already
//! stored (a retried request, the same reading sent twice) fails that COPY on the unique
//! key; it is then redone the staged way: COPY into a session's temporary table and
//! `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, which skips duplicates. Either way a
//! retried batch stores nothing new, and only a commit acknowledges.
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

/// Why rows were not committed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The database cannot be reached or failed the transaction; nothing was committed and
    /// the client should retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The writer may not insert: over the storage quota, or the tenant is suspended.
    #[error(
        "writes are refused: the tenant is over its database storage quota or suspended; \
         see the tenant's WithinQuota condition"
    )]
    Refused,
    /// More rows wait for a commit than the queue holds; retry shortly.
    #[error("the ingest queue is full; retry shortly")]
    Busy,
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
    /// Run once per session.
    pub staging: String,
    /// Binary COPY of (sensor, metric, time, value, received_at) straight into
    /// measurements: new rows only (a duplicate fails it).
    pub copy_direct: String,
    /// New sensors into the catalog, given as a `text[]`.
    pub sensors_direct: String,
    /// Binary COPY of (sensor, metric, time, value, received_at) into the staging table.
    pub copy: String,
    /// From staging into measurements, duplicates absorbed.
    pub insert: String,
    /// New sensors into the catalog.
    pub sensors: String,
}

impl Statements {
    pub fn new(schema: &str) -> Statements {
        let schema = postgres_protocol::escape::escape_identifier(schema);
        Statements {
            copy_direct: format!(
                "COPY {schema}.measurements (sensor, metric, time, value, received_at) \
                 FROM STDIN (FORMAT binary)"
            ),
            sensors_direct: format!(
                "INSERT INTO {schema}.sensors (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
            ),
            // Per session, emptied at every commit: a batch never sees another's rows.
            staging: "CREATE TEMP TABLE IF NOT EXISTS ingest_staging (sensor text, metric text, \
                      time timestamptz, value double precision, received_at timestamptz) \
                      ON COMMIT DELETE ROWS"
                .into(),
            copy: "COPY pg_temp.ingest_staging (sensor, metric, time, value, received_at) \
                   FROM STDIN (FORMAT binary)"
                .into(),
            // Duplicates (a retried batch, or the same reading twice in one) are absorbed.
            insert: format!(
                "INSERT INTO {schema}.measurements (sensor, metric, time, value, received_at) \
                 SELECT sensor, metric, time, value, received_at FROM pg_temp.ingest_staging \
                 ON CONFLICT DO NOTHING"
            ),
            sensors: format!(
                "INSERT INTO {schema}.sensors (id) SELECT DISTINCT sensor FROM pg_temp.ingest_staging \
                 ON CONFLICT DO NOTHING"
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
    sensors_direct: tokio_postgres::Statement,
    copy: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    sensors: tokio_postgres::Statement,
}

/// How a batch is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// COPY into measurements; fails on a duplicate.
    Direct,
    /// COPY into staging, then insert skipping duplicates.
    Staged,
}

impl WriterTask {
    async fn run(mut self) {
        loop {
            let Some(batch) = self.collect().await else {
                return;
            };
            let rows: usize = batch.iter().map(|job| job.rows.len()).sum();
            let started = Instant::now();
            let result = self.commit(&batch).await;
            self.busy.fetch_sub(1, Ordering::Relaxed);
            self.metrics
                .observe_commit(rows, started.elapsed(), result.is_ok());
            self.healthy.store(
                !matches!(result, Err(WriteError::Unavailable(_))),
                Ordering::Relaxed,
            );
            for job in batch {
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
            client.batch_execute(&self.statements.staging).await?;
            let statements = &self.statements;
            let text_array = [Type::TEXT_ARRAY];
            let session = Session {
                copy_direct: client.prepare(&statements.copy_direct).await?,
                sensors_direct: client
                    .prepare_typed(&statements.sensors_direct, &text_array)
                    .await?,
                copy: client.prepare(&statements.copy).await?,
                insert: client.prepare(&statements.insert).await?,
                sensors: client.prepare(&statements.sensors).await?,
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
            outcome = self.write(batch, Path::Staged).await;
        }
        match outcome {
            Ok(new_sensors) => {
                if self.known_sensors.len() + new_sensors.len() > KNOWN_SENSORS {
                    self.known_sensors.clear();
                }
                self.known_sensors.extend(new_sensors);
                Ok(())
            }
            Err(error) => {
                if self
                    .session
                    .as_ref()
                    .is_none_or(|session| session.client.is_closed())
                    || error.code().is_none()
                {
                    // The session is gone or unusable; the next batch connects afresh.
                    self.session = None;
                }
                warn!(writer = self.index, error = %error_text(&error), "commit failed; nothing of the batch was acknowledged");
                if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                    Err(WriteError::Refused)
                } else {
                    Err(WriteError::Unavailable(error_text(&error)))
                }
            }
        }
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
        let copy = match path {
            Path::Direct => &session.copy_direct,
            Path::Staged => &session.copy,
        };
        let sink = transaction.copy_in(copy).await?;
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
        match path {
            Path::Direct => {
                if !new_sensors.is_empty() {
                    transaction
                        .execute(&session.sensors_direct, &[&new_sensors])
                        .await?;
                }
            }
            Path::Staged => {
                transaction.execute(&session.insert, &[]).await?;
                if !new_sensors.is_empty() {
                    transaction.execute(&session.sensors, &[]).await?;
                }
            }
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
