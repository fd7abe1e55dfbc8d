//! Group commit: rows of concurrent requests are written together, one binary COPY into a
//! staging table and one `INSERT ... ON CONFLICT DO NOTHING` per transaction, and every
//! request is answered only after the commit that holds its rows (or with the error that
//! prevented it). Talks to the database; owns the writer connections.
//!
//! Bounded: the rows waiting for a commit never exceed the queue size; a request that
//! cannot get room in time is refused as busy (503), so memory stays flat under overload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
                client: None,
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
    client: Option<tokio_postgres::Client>,
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

    /// Waits for a first job, then takes what else arrives within the flush interval, up
    /// to the batch size. Other writers commit meanwhile; this one holds the queue.
    async fn collect(&self) -> Option<Vec<Job>> {
        let mut receiver = self.receiver.lock().await;
        let first = receiver.recv().await?;
        let mut rows = first.rows.len();
        let mut batch = vec![first];
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
        Some(batch)
    }

    async fn connect(&mut self) -> Result<&mut tokio_postgres::Client, tokio_postgres::Error> {
        if self
            .client
            .as_ref()
            .is_some_and(|client| client.is_closed())
        {
            self.client = None;
        }
        if self.client.is_none() {
            let client = connect(&self.settings).await?;
            client.batch_execute(&self.statements.staging).await?;
            info!(writer = self.index, "connected to the database");
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    async fn commit(&mut self, batch: &[Job]) -> Result<(), WriteError> {
        let statements = self.statements.clone();
        let outcome = async {
            let client = self.connect().await?;
            let transaction = client.transaction().await?;
            let sink = transaction.copy_in(&statements.copy).await?;
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
            transaction.execute(&statements.insert, &[]).await?;
            transaction.execute(&statements.sensors, &[]).await?;
            transaction.commit().await
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(error) => {
                if self.client.as_ref().is_none_or(|client| client.is_closed())
                    || error.code().is_none()
                {
                    // The session is gone or unusable; the next batch connects afresh.
                    self.client = None;
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
