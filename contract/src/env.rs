//! The ingest service's environment: set by the operator's Deployment, read by ingest's
//! command line (`smartregion_ingest::config::Cli`). Both use these names.

pub const TENANT: &str = "SMARTREGION_TENANT";
pub const SCHEMA: &str = "SMARTREGION_SCHEMA";
pub const LISTEN: &str = "SMARTREGION_INGEST_LISTEN";
pub const API_KEYS: &str = "SMARTREGION_INGEST_API_KEYS";
pub const RATE: &str = "SMARTREGION_INGEST_RATE";
pub const FORMATS: &str = "SMARTREGION_INGEST_FORMATS";
/// The ingest container's memory limit in bytes (the Deployment sets it from
/// `limits.memory` through the downward API); the memory budget is a share of it.
pub const MEMORY_LIMIT: &str = "SMARTREGION_INGEST_MEMORY_LIMIT";
/// The tenant's retention in days (`limits.retentionDays`): ingest refuses items older
/// than that, which retention would delete at once.
pub const RETENTION_DAYS: &str = "SMARTREGION_INGEST_RETENTION_DAYS";
pub const MQTT_URL: &str = "SMARTREGION_INGEST_MQTT_URL";
pub const MQTT_TOPICS: &str = "SMARTREGION_INGEST_MQTT_TOPICS";
pub const MQTT_USERNAME: &str = "SMARTREGION_INGEST_MQTT_USERNAME";
pub const MQTT_PASSWORD: &str = "SMARTREGION_INGEST_MQTT_PASSWORD";
/// Both binaries: `json` or `text` ([`crate::logging::LogFormat`]).
pub const LOG_FORMAT: &str = "SMARTREGION_LOG_FORMAT";
/// libpq's own names, so the `db-writer` Secret's keys map one to one.
pub const PGHOST: &str = "PGHOST";
pub const PGPORT: &str = "PGPORT";
pub const PGDATABASE: &str = "PGDATABASE";
pub const PGUSER: &str = "PGUSER";
pub const PGPASSWORD: &str = "PGPASSWORD";
pub const PGSSLMODE: &str = "PGSSLMODE";
pub const PGSSLROOTCERT: &str = "PGSSLROOTCERT";

/// The read service's own (`smartregion-ingest read`); the database's are the PG* above,
/// from the `db-reader` Secret.
pub const READ_LISTEN: &str = "SMARTREGION_READ_LISTEN";
pub const READ_API_KEYS: &str = "SMARTREGION_READ_API_KEYS";
/// The publisher of the tenant's open data: its display name and IPA code.
pub const PUBLISHER_NAME: &str = "SMARTREGION_PUBLISHER_NAME";
pub const PUBLISHER_IPA_CODE: &str = "SMARTREGION_PUBLISHER_IPA_CODE";
/// Where the read service is reached from outside (or inside) the cluster: the base of
/// the URLs its open-data catalogue names.
pub const READ_PUBLIC_URL: &str = "SMARTREGION_READ_PUBLIC_URL";
/// Port the read service listens on by default.
pub const READ_PORT: u16 = 8081;

/// Port the ingest service listens on by default.
pub const INGEST_PORT: u16 = 8080;
