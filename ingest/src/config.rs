//! Command line and environment of `smartregion-ingest`. The operator's Deployment sets
//! the environment; the variable names here are the contract between the two, so the
//! operator uses these constants rather than repeating the strings.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::Parser;

use crate::http::Format;
use crate::postgres::SslMode;

pub const ENV_TENANT: &str = "SMARTREGION_TENANT";
pub const ENV_SCHEMA: &str = "SMARTREGION_SCHEMA";
pub const ENV_LISTEN: &str = "SMARTREGION_INGEST_LISTEN";
pub const ENV_API_KEYS: &str = "SMARTREGION_INGEST_API_KEYS";
pub const ENV_RATE: &str = "SMARTREGION_INGEST_RATE";
pub const ENV_FORMATS: &str = "SMARTREGION_INGEST_FORMATS";
pub const ENV_MQTT_URL: &str = "SMARTREGION_INGEST_MQTT_URL";
pub const ENV_MQTT_TOPICS: &str = "SMARTREGION_INGEST_MQTT_TOPICS";
pub const ENV_MQTT_USERNAME: &str = "SMARTREGION_INGEST_MQTT_USERNAME";
pub const ENV_MQTT_PASSWORD: &str = "SMARTREGION_INGEST_MQTT_PASSWORD";
/// libpq's own names, so the `db-writer` Secret's keys map one to one.
pub const ENV_PGHOST: &str = "PGHOST";
pub const ENV_PGPORT: &str = "PGPORT";
pub const ENV_PGDATABASE: &str = "PGDATABASE";
pub const ENV_PGUSER: &str = "PGUSER";
pub const ENV_PGPASSWORD: &str = "PGPASSWORD";
pub const ENV_PGSSLMODE: &str = "PGSSLMODE";
pub const ENV_PGSSLROOTCERT: &str = "PGSSLROOTCERT";
/// Port the service listens on by default.
pub const PORT: u16 = 8080;

/// Per-tenant ingest service of the Smart Region Toscana platform: sensor data in over
/// HTTP, committed to the tenant's PostgreSQL schema before it is acknowledged.
#[derive(Parser, Debug, Clone)]
#[command(name = "smartregion-ingest", version, about, long_about = None)]
pub struct Cli {
    /// The tenant this service belongs to (a `Fiware-Service` header must name it).
    #[arg(long, env = ENV_TENANT)]
    pub tenant: String,

    /// The tenant's schema; `t_<tenant>` (with `-` as `_`) when unset.
    #[arg(long, env = ENV_SCHEMA)]
    pub schema: Option<String>,

    /// Address to serve HTTP on.
    #[arg(long, env = ENV_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], PORT)))]
    pub listen: SocketAddr,

    /// API keys, separated by newlines, commas or spaces (the `ingest-keys` Secret).
    #[arg(long, env = ENV_API_KEYS, hide_env_values = true)]
    pub api_keys: String,

    /// Rows per second accepted before answering 429.
    #[arg(long, env = ENV_RATE, default_value = "500")]
    pub rate: NonZeroU32,

    /// Rows accepted at once above the sustained rate; 2 seconds' worth when unset.
    #[arg(long, env = "SMARTREGION_INGEST_BURST")]
    pub burst: Option<NonZeroU32>,

    /// Payload formats accepted (comma-separated); all when unset.
    #[arg(long, env = ENV_FORMATS, value_delimiter = ',', value_enum)]
    pub formats: Vec<Format>,

    /// Largest request body, in bytes (413 above it).
    #[arg(long, env = "SMARTREGION_INGEST_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Database host (the `db-writer` Secret's `host`).
    #[arg(long, env = ENV_PGHOST)]
    pub database_host: String,
    #[arg(long, env = ENV_PGPORT, default_value_t = 5432)]
    pub database_port: u16,
    #[arg(long, env = ENV_PGDATABASE)]
    pub database_name: String,
    #[arg(long, env = ENV_PGUSER)]
    pub database_user: String,
    #[arg(long, env = ENV_PGPASSWORD, hide_env_values = true)]
    pub database_password: String,
    /// `disable`, `require` or `verify-full`.
    #[arg(long, env = ENV_PGSSLMODE, value_enum, default_value_t = SslMode::Disable)]
    pub database_sslmode: SslMode,
    /// CA bundle (PEM) for `verify-full`.
    #[arg(long, env = ENV_PGSSLROOTCERT)]
    pub database_ca_file: Option<PathBuf>,

    /// Database connections that commit in parallel.
    #[arg(long, env = "SMARTREGION_INGEST_WRITERS", default_value_t = 2)]
    pub writers: usize,
    /// Most rows in one commit.
    #[arg(long, env = "SMARTREGION_INGEST_BATCH_ROWS", default_value_t = 20_000)]
    pub batch_rows: usize,
    /// How long a commit waits for more requests to join it, in milliseconds.
    #[arg(long, env = "SMARTREGION_INGEST_FLUSH_MS", default_value_t = 2)]
    pub flush_ms: u64,
    /// Most rows waiting for a commit; requests beyond wait, then get 503.
    #[arg(long, env = "SMARTREGION_INGEST_QUEUE_ROWS", default_value_t = 100_000)]
    pub queue_rows: usize,

    /// MQTT broker to subscribe to as well, e.g. `mqtts://broker.example.it:8883`.
    #[arg(long, env = ENV_MQTT_URL)]
    pub mqtt_url: Option<String>,
    /// Topic filters (comma-separated), e.g. `prato/sensors/#`.
    #[arg(long, env = ENV_MQTT_TOPICS, value_delimiter = ',')]
    pub mqtt_topics: Vec<String>,
    #[arg(long, env = ENV_MQTT_USERNAME)]
    pub mqtt_username: Option<String>,
    #[arg(long, env = ENV_MQTT_PASSWORD, hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// MQTT client id; it must stay the same across restarts of one pod (the broker keeps
    /// unacknowledged messages in its session). `smartregion-ingest-<tenant>-<HOSTNAME>`
    /// when unset.
    #[arg(long, env = "SMARTREGION_INGEST_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,

    /// Log format: json in clusters, text for people.
    #[arg(long, env = "SMARTREGION_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// `t_<tenant>` with `-` as `_`, the operator's convention; `None` for a name that is not
/// a tenant name.
pub fn schema_for(tenant: &str) -> Option<String> {
    let valid = tenant.len() <= 40
        && tenant.starts_with(|c: char| c.is_ascii_lowercase())
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then(|| format!("t_{}", tenant.replace('-', "_")))
}

/// A schema name this service will use: lower-case letters, digits and `_`.
pub fn is_schema_name(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_schema_follows_the_operator_convention() {
        assert_eq!(
            schema_for("unione-mugello").as_deref(),
            Some("t_unione_mugello")
        );
        assert_eq!(schema_for("Prato"), None);
        assert!(is_schema_name("t_select"));
        assert!(!is_schema_name("t-select") && !is_schema_name("T") && !is_schema_name(""));
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
        assert_eq!(
            cli.formats,
            [Format::Measurements, Format::NgsiV2, Format::SenML]
        );
    }
}
