//! The read service (`smartregion-ingest read`): the tenant's measurements back out over
//! HTTP for dashboards, apps and FIWARE clients, with the tenant's `db-reader` login only.
//! The same image as ingest; the operator runs it in its own Deployment, with its own
//! Service and keys (docs/read-api.md).
//!
//! - [`query`], [`cursor`]: what a request asks for, checked against the limits. Pure.
//! - [`sql`]: the statements that answer it. Pure.
//! - [`http`]: the API, streaming the rows from the database to the client.

pub mod catalog;
pub mod cursor;
pub mod dcat;
pub mod http;
pub mod openapi;
pub mod query;
pub mod sql;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use smartregion_contract::env;
use smartregion_contract::logging::LogFormat;
use tokio::sync::OnceCell;
use tracing::info;

/// The read service of a tenant: its measurements (and what others share with it) over
/// HTTP, read with the tenant's reader login.
#[derive(Parser, Debug, Clone)]
#[command(name = "smartregion-ingest read", version, about, long_about = None)]
pub struct Cli {
    /// The tenant this service belongs to.
    #[arg(long, env = env::TENANT)]
    pub tenant: String,

    /// The tenant's schema; `t_<tenant>` (with `-` as `_`) when unset.
    #[arg(long, env = env::SCHEMA)]
    pub schema: Option<String>,

    /// Address to serve HTTP on.
    #[arg(long, env = env::READ_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], env::READ_PORT)))]
    pub listen: SocketAddr,

    /// API keys, separated by newlines, commas or spaces (the `read-keys` Secret).
    #[arg(long, env = env::READ_API_KEYS, hide_env_values = true)]
    pub api_keys: String,

    /// Rows on a page when a query does not say (`limit`).
    #[arg(long, env = "SMARTREGION_READ_DEFAULT_ROWS", default_value_t = 10_000)]
    pub default_rows: usize,

    /// Most rows on one page; more are paged by the cursor.
    #[arg(long, env = "SMARTREGION_READ_MAX_ROWS", default_value_t = 100_000)]
    pub max_rows: usize,

    /// Longest range of a raw query, in days.
    #[arg(long, env = "SMARTREGION_READ_MAX_RAW_DAYS", default_value_t = 366)]
    pub max_raw_days: u32,

    /// Longest range of an aggregated query, in days.
    #[arg(
        long,
        env = "SMARTREGION_READ_MAX_AGGREGATED_DAYS",
        default_value_t = 3660
    )]
    pub max_aggregated_days: u32,

    /// Database connections at most.
    #[arg(long, env = "SMARTREGION_READ_CONNECTIONS", default_value_t = 4)]
    pub connections: usize,

    /// Most connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "SMARTREGION_READ_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers, also between requests on a
    /// kept-alive connection.
    #[arg(
        long,
        env = "SMARTREGION_READ_HEADER_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub header_timeout_seconds: u64,

    /// Anonymous requests (open data) one client may make per minute; more are answered
    /// 429 with `Retry-After`.
    #[arg(
        long,
        env = "SMARTREGION_READ_OPEN_REQUESTS_PER_MINUTE",
        default_value_t = 60
    )]
    pub open_requests_per_minute: u32,

    /// The header that carries the client's address when the service is behind a proxy
    /// (e.g. `X-Forwarded-For`; its last entry, the one the proxy added, is taken). The
    /// connection's peer address when unset.
    #[arg(long, env = "SMARTREGION_READ_CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,

    /// The publisher of the open-data catalogue: the ente's name.
    #[arg(long, env = env::PUBLISHER_NAME, default_value = "")]
    pub publisher_name: String,

    /// The publisher's IPA code; no catalogue without it.
    #[arg(long, env = env::PUBLISHER_IPA_CODE)]
    pub publisher_ipa_code: Option<String>,

    /// The base of the URLs the catalogue names, e.g. `https://prato.dati.example.it`.
    #[arg(long, env = env::READ_PUBLIC_URL)]
    pub public_url: Option<String>,

    /// The database login (the `db-reader` Secret's).
    #[command(flatten)]
    pub database: crate::config::Database,

    /// Log format: json in clusters, text for people.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// The database as the read service uses it: a pool of the reader's connections, and
/// which functions bucket the rows.
pub struct Database {
    pool: deadpool_postgres::Pool,
    flavour: OnceCell<sql::Flavour>,
}

impl Database {
    pub fn new(cli: &Cli) -> anyhow::Result<Database> {
        let (mut config, tls) = cli.database.connection("smartregion-read")?;
        // Without JIT: the reads are index scans over many partitions or chunks, whose
        // plans PostgreSQL costs high enough to JIT-compile thousands of functions. On a
        // year of daily partitions that compilation was 15.7 s of the catalogue's 16.2 s
        // (docs/benchmarks.md), the execution itself about 0.5 s.
        config.options("-c jit=off");
        let manager_config = deadpool_postgres::ManagerConfig {
            // A client that went away mid-page leaves its transaction open: it is rolled
            // back before the connection serves another request.
            recycling_method: deadpool_postgres::RecyclingMethod::Custom("ROLLBACK".into()),
        };
        let manager = match tls {
            None => deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres::NoTls,
                manager_config,
            ),
            Some(tls) => deadpool_postgres::Manager::from_config(config, tls, manager_config),
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(cli.connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(30)))
            .build()
            .context("failed to set up the database connection pool")?;
        Ok(Database {
            pool,
            flavour: OnceCell::new(),
        })
    }

    /// A connection of the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, ReadError> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => ReadError::Database(error),
            // Waiting for a free connection or creating one timed out.
            other => ReadError::NoConnection(other.to_string()),
        })
    }

    /// TimescaleDB's functions where the extension is installed, else PostgreSQL's own:
    /// looked at once, with the first connection.
    pub async fn flavour(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<sql::Flavour, tokio_postgres::Error> {
        self.flavour
            .get_or_try_init(|| async {
                let schema: Option<String> = client
                    .query_opt(
                        "SELECT n.nspname FROM pg_extension e \
                         JOIN pg_namespace n ON n.oid = e.extnamespace \
                         WHERE e.extname = 'timescaledb'",
                        &[],
                    )
                    .await?
                    .map(|row| row.get(0));
                let flavour = match schema {
                    Some(schema) => sql::Flavour::TimescaleDb { schema },
                    None => sql::Flavour::Plain,
                };
                info!(?flavour, "buckets and first/last computed by");
                Ok(flavour)
            })
            .await
            .cloned()
    }

    /// Whether a connection answers, for `/readyz`.
    pub async fn check(&self) -> Result<(), &'static str> {
        let client = self
            .client()
            .await
            .map_err(|_| "the database is not reachable")?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|_| "the database is not reachable")
    }
}

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    NoConnection(String),
    /// An open-data query the dataset does not allow.
    #[error("{0}")]
    Refused(query::Invalid),
    /// No open dataset of that name.
    #[error("no open dataset of that name")]
    NoDataset,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub status: u16,
}

/// Prometheus metrics of the read service, served on `/metrics`.
pub struct ReadMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Rows sent.
    pub rows: Counter,
}

impl Default for ReadMetrics {
    fn default() -> ReadMetrics {
        let mut registry = Registry::with_prefix("smartregion_read");
        let requests = Family::<RequestLabels, Counter>::default();
        let rows = Counter::default();
        registry.register(
            "requests",
            "Read requests answered, by endpoint and status",
            requests.clone(),
        );
        registry.register("rows", "Rows of series sent", rows.clone());
        ReadMetrics {
            registry,
            requests,
            rows,
        }
    }
}

impl ReadMetrics {
    pub fn request(&self, endpoint: &'static str, status: axum::http::StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                status: status.as_u16(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The error with its cause (tokio-postgres puts the server's message in the source).
pub fn error_text(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// Runs the read service until SIGTERM or Ctrl-C.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let keys = crate::auth::ApiKeys::parse(&cli.api_keys).map_err(|error| {
        anyhow::anyhow!("{}", error.to_string().replace("ingest-keys", "read-keys"))
    })?;
    let schema = match &cli.schema {
        Some(schema) => schema.clone(),
        None => crate::config::schema_for(&cli.tenant)
            .with_context(|| format!("{:?} is not a tenant name", cli.tenant))?,
    };
    if !crate::config::is_schema_name(&schema) {
        bail!("schema {schema:?} must be lower-case letters, digits and '_'");
    }
    if cli.default_rows == 0 || cli.default_rows > cli.max_rows {
        bail!(
            "the default page ({}) must be between 1 and the largest page ({})",
            cli.default_rows,
            cli.max_rows
        );
    }
    let app = Arc::new(http::App {
        tenant: cli.tenant.clone(),
        schema,
        keys,
        database: Database::new(&cli)?,
        limits: query::Limits {
            default_rows: cli.default_rows,
            max_rows: cli.max_rows,
            max_raw_range: jiff::SignedDuration::from_hours(24 * i64::from(cli.max_raw_days)),
            max_aggregated_range: jiff::SignedDuration::from_hours(
                24 * i64::from(cli.max_aggregated_days),
            ),
            max_names: query::Limits::default().max_names,
        },
        metrics: ReadMetrics::default(),
        open: http::OpenAccess::new(
            cli.open_requests_per_minute,
            cli.client_address_header.as_deref(),
        )?,
        publisher: http::Publisher {
            name: cli.publisher_name.clone(),
            ipa_code: cli.publisher_ipa_code.clone(),
            public_url: cli
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", cli.listen)),
        },
    });
    tokio::spawn(http::OpenAccess::forget_idle_clients(app.clone()));
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("failed to listen on {}", cli.listen))?;
    info!(address = %cli.listen, tenant = %cli.tenant, "serving reads");
    crate::server::serve(
        listener,
        http::router(app),
        crate::server::Connections {
            max: cli.max_connections,
            header_timeout: Duration::from_secs(cli.header_timeout_seconds),
        },
        crate::shutdown(),
    )
    .await;
    info!("stopped");
    Ok(())
}
