//! smartregion-ingest: the per-tenant ingest service. Sensor data comes in over HTTP (own
//! JSON batch, FIWARE NGSI-v2 notifications, SenML) and is committed to the tenant's
//! schema before any 2xx answer.
//!
//! - [`parse`]: the payload formats into rows and per-item explanations. Pure.
//! - [`auth`], [`rate`]: API keys and the rate quota. Pure.
//! - [`writer`]: group commit to PostgreSQL. Talks to the database.
//! - [`http`]: the HTTP API around them.
//! - [`server`]: accepting connections, with their caps and deadlines.
//! - [`config`]: flags and the environment the operator's Deployment sets.
//! - [`mqtt`]: the optional MQTT subscription.
//! - [`health`]: what `/readyz` answers, logged when it changes.
//! - [`memory`]: the memory budget of what requests and messages hold.
//! - [`read`]: the read service (`smartregion-ingest read`), the same image's other mode.
//!
//! What it shares with the operator (environment names, formats, database TLS) is in
//! `smartregion-contract`.

pub mod auth;
pub mod config;
pub mod health;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod mqtt;
pub mod parse;
pub mod rate;
pub mod read;
pub mod server;
pub mod writer;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use smartregion_contract::env;
use smartregion_contract::format::IngestFormat;
use tracing::info;

/// Runs the service until SIGTERM or Ctrl-C; requests in flight finish first.
pub async fn run(cli: config::Cli) -> anyhow::Result<()> {
    let keys = auth::ApiKeys::parse(&cli.api_keys)?;
    let schema = match &cli.schema {
        Some(schema) => schema.clone(),
        None => config::schema_for(&cli.tenant)
            .with_context(|| format!("{:?} is not a tenant name", cli.tenant))?,
    };
    if !config::is_schema_name(&schema) {
        bail!("schema {schema:?} must be lower-case letters, digits and '_'");
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let session_lock = cli
        .mqtt_url
        .is_some()
        .then(|| writer::mqtt_session_lock(&schema));
    let writer = writer::Writer::start(
        writer_settings(&cli, schema, session_lock)?,
        metrics.clone(),
    );
    let burst = cli.burst.unwrap_or_else(|| {
        cli.rate
            .checked_mul(NonZeroU32::new(2).expect("2 is not zero"))
            .unwrap_or(NonZeroU32::MAX)
    });
    let rate = Arc::new(rate::RateQuota::new(cli.rate, burst));
    let limit = cli.memory_limit_bytes.or_else(memory::cgroup_limit);
    let budget = memory::Budget::new(
        cli.memory_budget_bytes
            .unwrap_or_else(|| memory::budget_for(limit)),
    );
    info!(
        memory_limit = limit,
        memory_budget = budget.total(),
        "requests in flight hold at most the memory budget"
    );
    let held = writer.session_held();
    let store: Arc<dyn writer::Store> = Arc::new(writer);
    let sink = mqtt::Sink {
        store: store.clone(),
        rate: rate.clone(),
        metrics: metrics.clone(),
        memory: budget.clone(),
    };
    if let Some(settings) = mqtt_settings(&cli)? {
        tokio::spawn(async move {
            if let Err(error) = mqtt::run(settings, sink, held).await {
                tracing::error!(%error, "the MQTT source stopped");
            }
        });
    }
    let app = Arc::new(http::App {
        tenant: cli.tenant.clone(),
        keys,
        formats: formats(&cli),
        rate,
        writer: store,
        metrics,
        max_body_bytes: cli.max_body_bytes,
        memory: budget,
        memory_wait: Duration::from_secs(5),
        body_deadline: http::BodyDeadline {
            grace: Duration::from_secs(cli.body_grace_seconds),
            min_rate: cli.body_min_rate,
        },
        window: window(&cli),
    });
    serve(&cli, app).await
}

/// The formats the tenant accepts: all when the list is empty.
fn formats(cli: &config::Cli) -> Vec<IngestFormat> {
    if cli.formats.is_empty() {
        IngestFormat::ALL.to_vec()
    } else {
        cli.formats.clone()
    }
}

fn window(cli: &config::Cli) -> parse::Window {
    parse::Window {
        retention_days: cli.retention_days.map(NonZeroU32::get),
        max_ahead: Some(jiff::SignedDuration::from_secs(i64::from(
            cli.max_ahead_seconds,
        ))),
    }
}

/// How the writer reaches the database and batches.
fn writer_settings(
    cli: &config::Cli,
    schema: String,
    session_lock: Option<i64>,
) -> anyhow::Result<writer::Settings> {
    let (database, tls) = cli.database.connection("smartregion-ingest")?;
    Ok(writer::Settings {
        database,
        tls,
        schema,
        writers: cli.writers,
        max_batch_rows: cli.batch_rows,
        queue_rows: cli.queue_rows,
        queue_wait: Duration::from_secs(5),
        session_lock,
    })
}

/// The MQTT source's settings, checked now so a bad setting stops the pod with a clear
/// message; `None` without a broker.
fn mqtt_settings(cli: &config::Cli) -> anyhow::Result<Option<mqtt::Settings>> {
    let Some(url) = &cli.mqtt_url else {
        return Ok(None);
    };
    if cli.mqtt_topics.is_empty() {
        bail!("{} is set but {} is empty", env::MQTT_URL, env::MQTT_TOPICS);
    }
    let settings = mqtt::Settings {
        url: url.clone(),
        topics: cli.mqtt_topics.clone(),
        username: cli.mqtt_username.clone(),
        password: cli.mqtt_password.clone(),
        client_id: cli
            .mqtt_client_id
            .clone()
            .unwrap_or_else(|| format!("smartregion-ingest-{}", cli.tenant)),
        dead_letter_topic: cli
            .mqtt_dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("smartregion/dead-letter/{}", cli.tenant)),
        window: window(cli),
        formats: formats(cli),
        max_payload: cli.max_body_bytes,
        in_flight: cli.mqtt_in_flight,
    };
    settings.check()?;
    Ok(Some(settings))
}

/// Serves HTTP until SIGTERM or Ctrl-C.
async fn serve(cli: &config::Cli, app: Arc<http::App>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("failed to listen on {}", cli.listen))?;
    info!(address = %cli.listen, tenant = %cli.tenant, "serving");
    server::serve(
        listener,
        http::router(app),
        server::Connections {
            max: cli.max_connections,
            header_timeout: Duration::from_secs(cli.header_timeout_seconds),
        },
        shutdown(),
    )
    .await;
    info!("stopped");
    Ok(())
}

async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
