//! Command line and environment of `smartregion-ingest`. The operator's Deployment sets
//! the environment; the variable names come from `smartregion_contract::env`, which the
//! operator uses too.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::Parser;

use smartregion_contract::env;
use smartregion_contract::format::IngestFormat;
use smartregion_contract::logging::LogFormat;
use smartregion_contract::postgres::SslMode;

/// Per-tenant ingest service of the Smart Region Toscana platform: sensor data in over
/// HTTP, committed to the tenant's PostgreSQL schema before it is acknowledged.
#[derive(Parser, Debug, Clone)]
#[command(name = "smartregion-ingest", version, about, long_about = None)]
pub struct Cli {
    /// The tenant this service belongs to (a `Fiware-Service` header must name it).
    #[arg(long, env = env::TENANT)]
    pub tenant: String,

    /// The tenant's schema; `t_<tenant>` (with `-` as `_`) when unset.
    #[arg(long, env = env::SCHEMA)]
    pub schema: Option<String>,

    /// Address to serve HTTP on.
    #[arg(long, env = env::LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], env::INGEST_PORT)))]
    pub listen: SocketAddr,

    /// API keys, separated by newlines, commas or spaces (the `ingest-keys` Secret).
    #[arg(long, env = env::API_KEYS, hide_env_values = true)]
    pub api_keys: String,

    /// Rows per second accepted before answering 429.
    #[arg(long, env = env::RATE, default_value = "500")]
    pub rate: NonZeroU32,

    /// Rows accepted at once above the sustained rate; 2 seconds' worth when unset.
    #[arg(long, env = "SMARTREGION_INGEST_BURST")]
    pub burst: Option<NonZeroU32>,

    /// Payload formats accepted (comma-separated); all when unset.
    #[arg(long, env = env::FORMATS, value_delimiter = ',', value_enum)]
    pub formats: Vec<IngestFormat>,

    /// The tenant's retention in days: items older than that are refused (retention
    /// would delete them at once). The operator sets it; unset, no time is too old.
    #[arg(long, env = env::RETENTION_DAYS)]
    pub retention_days: Option<NonZeroU32>,

    /// How far ahead of its time of receipt an item's time may be, in seconds: a sensor's
    /// clock running fast, not a forecast. Five minutes covers the drift of an unsynced
    /// device clock over months (a 20 ppm crystal drifts under a minute a month) and
    /// refuses the years-ahead times of a reset clock.
    #[arg(
        long,
        env = "SMARTREGION_INGEST_MAX_AHEAD_SECONDS",
        default_value_t = 300
    )]
    pub max_ahead_seconds: u32,

    /// Largest request body, in bytes (413 above it).
    #[arg(long, env = "SMARTREGION_INGEST_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// The container's memory limit in bytes; read from the cgroup when unset. Requests
    /// in flight never hold more than a share of it (see `--memory-budget-bytes`).
    #[arg(long, env = env::MEMORY_LIMIT)]
    pub memory_limit_bytes: Option<u64>,

    /// Bytes that requests in flight may hold at once (bodies, parsing, rows waiting for
    /// their commit); derived from the memory limit when unset.
    #[arg(long, env = "SMARTREGION_INGEST_MEMORY_BUDGET")]
    pub memory_budget_bytes: Option<usize>,

    /// Most connections served at once; more wait in the kernel's accept queue. Bounds
    /// what connections hold before they authenticate: each at most its read buffer
    /// (64 KiB), so 256 connections hold at most 16 MiB.
    #[arg(
        long,
        env = "SMARTREGION_INGEST_MAX_CONNECTIONS",
        default_value_t = 256
    )]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers, also between requests on a
    /// kept-alive connection (an idle connection is closed after it).
    #[arg(
        long,
        env = "SMARTREGION_INGEST_HEADER_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub header_timeout_seconds: u64,

    /// Seconds a body may take before it must keep up the minimum rate.
    #[arg(
        long,
        env = "SMARTREGION_INGEST_BODY_GRACE_SECONDS",
        default_value_t = 10
    )]
    pub body_grace_seconds: u64,

    /// Bytes per second a body must arrive at, after the grace period (64 KiB/s: an 8
    /// MiB body in at most 2 min 18 s).
    #[arg(long, env = "SMARTREGION_INGEST_BODY_MIN_RATE", default_value_t = 64 * 1024)]
    pub body_min_rate: u32,

    /// The database login (the `db-writer` Secret's).
    #[command(flatten)]
    pub database: Database,

    /// Database connections that commit in parallel.
    #[arg(long, env = "SMARTREGION_INGEST_WRITERS", default_value_t = 2)]
    pub writers: usize,
    /// Most rows in one commit.
    #[arg(long, env = "SMARTREGION_INGEST_BATCH_ROWS", default_value_t = 20_000)]
    pub batch_rows: usize,
    /// Most rows waiting for a commit; requests beyond wait, then get 503.
    #[arg(long, env = "SMARTREGION_INGEST_QUEUE_ROWS", default_value_t = 100_000)]
    pub queue_rows: usize,

    /// MQTT broker to subscribe to as well, e.g. `mqtts://broker.example.it:8883`.
    #[arg(long, env = env::MQTT_URL)]
    pub mqtt_url: Option<String>,
    /// Topic filters (comma-separated), e.g. `prato/sensors/#`.
    #[arg(long, env = env::MQTT_TOPICS, value_delimiter = ',')]
    pub mqtt_topics: Vec<String>,
    #[arg(long, env = env::MQTT_USERNAME)]
    pub mqtt_username: Option<String>,
    #[arg(long, env = env::MQTT_PASSWORD, hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// MQTT client id: the tenant's session, which one pod at a time holds (the broker
    /// keeps unacknowledged messages in it for the next). `smartregion-ingest-<tenant>`
    /// when unset.
    #[arg(long, env = "SMARTREGION_INGEST_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,

    /// MQTT messages being stored at once (acknowledged in order as they finish): they
    /// share group commits as concurrent HTTP requests do. The broker's own limit on
    /// unacknowledged messages per client (Mosquitto's `max_inflight_messages`, 20 by
    /// default) also bounds it.
    #[arg(
        long,
        env = "SMARTREGION_INGEST_MQTT_IN_FLIGHT",
        default_value_t = 1000
    )]
    pub mqtt_in_flight: usize,

    /// Topic (on the same broker) where messages that can never be stored are set aside,
    /// with the reason; `smartregion/dead-letter/<tenant>` when unset. It must not match
    /// the subscriptions.
    #[arg(long, env = "SMARTREGION_INGEST_MQTT_DEAD_LETTER_TOPIC")]
    pub mqtt_dead_letter_topic: Option<String>,

    /// Log format: json in clusters, text for people.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// The database login, in libpq's names: the `db-writer` Secret's for ingest, the
/// `db-reader` Secret's for the read mode.
#[derive(clap::Args, Debug, Clone)]
pub struct Database {
    /// Database host (the Secret's `host`).
    #[arg(long = "database-host", env = env::PGHOST)]
    pub host: String,
    #[arg(long = "database-port", env = env::PGPORT, default_value_t = 5432)]
    pub port: u16,
    #[arg(long = "database-name", env = env::PGDATABASE)]
    pub name: String,
    #[arg(long = "database-user", env = env::PGUSER)]
    pub user: String,
    #[arg(long = "database-password", env = env::PGPASSWORD, hide_env_values = true)]
    pub password: String,
    /// `disable`, `require` or `verify-full`.
    #[arg(long = "database-sslmode", env = env::PGSSLMODE, value_enum, default_value_t = SslMode::Disable)]
    pub sslmode: SslMode,
    /// CA bundle (PEM) for `verify-full`.
    #[arg(long = "database-ca-file", env = env::PGSSLROOTCERT)]
    pub ca_file: Option<PathBuf>,
}

impl Database {
    /// The connection settings and TLS connector (`None` without TLS), as
    /// `application_name`.
    pub fn connection(
        &self,
        application_name: &str,
    ) -> anyhow::Result<(
        tokio_postgres::Config,
        Option<tokio_postgres_rustls::MakeRustlsConnect>,
    )> {
        use anyhow::Context;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.name)
            .user(&self.user)
            .password(&self.password)
            .application_name(application_name)
            .connect_timeout(std::time::Duration::from_secs(5))
            .keepalives_idle(std::time::Duration::from_secs(30));
        let tls = smartregion_contract::postgres::connector(self.sslmode, self.ca_file.as_deref())
            .context("failed to set up TLS to the database (PGSSLMODE, PGSSLROOTCERT)")?;
        if tls.is_some() {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        Ok((config, tls))
    }
}

pub use smartregion_contract::tenant::{is_schema_name, schema_for};

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn formats_are_spelled_as_the_crd_spells_them() {
        let cli = Cli::try_parse_from([
            "smartregion-ingest",
            "--tenant=prato",
            "--api-keys=k",
            "--database-host=db",
            "--database-name=d",
            "--database-user=u",
            "--database-password=p",
            "--formats=Measurements,NgsiV2,SenML",
        ])
        .unwrap();
        assert_eq!(cli.formats, IngestFormat::ALL);
    }
}
