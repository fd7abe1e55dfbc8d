//! The operator's admin connection to the shared database: TLS with rustls according to
//! `sslmode`, a bounded pool with timeouts, and detection of TimescaleDB.
//!
//! Talks to the database only in [`Database::flavor`]. Errors never contain the
//! connection URL: it holds the admin password.

use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use smartregion_ingest::postgres::SslMode;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::resources::secrets::Endpoint;

/// Longest wait for a TCP connection and the PostgreSQL handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a free pooled connection: a slow database must not hold every tenant.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin sessions give up on a statement or a lock rather than hang a reconcile.
const SESSION_OPTIONS: &str = "-c statement_timeout=60000 -c lock_timeout=10000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the database URL is not a valid PostgreSQL connection URL (the value is not shown: it holds a password)"
    )]
    Url,
    #[error("the database URL needs a TCP host name or address; or set --database-public-host")]
    NoTcpHost,
    #[error("failed to set up TLS to the database (--database-sslmode, --database-ca-file)")]
    Tls(#[from] smartregion_ingest::postgres::Error),
    #[error("failed to read the CA bundle {path} (--database-ca-file)")]
    ReadCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the database connection pool")]
    Pool(#[source] deadpool_postgres::BuildError),
}

/// What the operator was told about the database.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub sslmode: SslMode,
    pub ca_file: Option<PathBuf>,
    /// Host that tenants' pods use, when it differs from the operator's.
    pub public_host: Option<String>,
    pub pool_size: usize,
}

/// Which storage path tenants get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Native range partitioning, maintained by the operator.
    Plain,
    /// Hypertables with TimescaleDB's own retention and compression policies.
    TimescaleDb,
}

/// The shared database as the reconcile pipeline sees it.
pub struct Database {
    pub pool: Pool,
    /// Where tenants' clients connect; written into their Secrets.
    pub endpoint: Endpoint,
    /// Detected on first use, so an operator started while the database is down still
    /// starts (and reconciles the Kubernetes side).
    flavor: OnceCell<Flavor>,
}

impl Database {
    pub fn new(settings: &Settings) -> Result<Database, Error> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|_| Error::Url)?;
        let host = match (&settings.public_host, config.get_hosts().first()) {
            (Some(host), _) => host.clone(),
            (None, Some(tokio_postgres::config::Host::Tcp(host))) => host.clone(),
            _ => return Err(Error::NoTcpHost),
        };
        let endpoint = Endpoint {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            dbname: config
                .get_dbname()
                .or(config.get_user())
                .unwrap_or("postgres")
                .to_string(),
            sslmode: settings.sslmode.as_libpq().to_string(),
            ca_bundle: match &settings.ca_file {
                None => None,
                Some(path) => {
                    Some(
                        std::fs::read_to_string(path).map_err(|source| Error::ReadCa {
                            path: path.display().to_string(),
                            source,
                        })?,
                    )
                }
            },
        };
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives_idle(Duration::from_secs(30))
            .options(SESSION_OPTIONS)
            .application_name("smartregion-operator");
        let manager_config = ManagerConfig {
            // A server restart leaves dead connections in the pool; checking each one
            // before use costs a round trip and spares a failed reconcile.
            recycling_method: RecyclingMethod::Verified,
        };
        let manager = match smartregion_ingest::postgres::connector(
            settings.sslmode,
            settings.ca_file.as_deref(),
        )? {
            None => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            Some(connector) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Manager::from_config(config, connector, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT * 2))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(Error::Pool)?;
        Ok(Database {
            pool,
            endpoint,
            flavor: OnceCell::new(),
        })
    }

    /// TimescaleDB when the server has it (installing the extension in the database if
    /// needed and allowed), plain PostgreSQL otherwise. Decided once per process.
    pub async fn flavor(&self) -> Result<Flavor, deadpool_postgres::PoolError> {
        self.flavor
            .get_or_try_init(|| async {
                let client = self.pool.get().await?;
                let flavor = detect_flavor(&client).await?;
                info!(?flavor, "database storage path");
                Ok(flavor)
            })
            .await
            .copied()
    }
}

async fn detect_flavor(client: &tokio_postgres::Client) -> Result<Flavor, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'), \
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await?;
    let (installed, available): (bool, bool) = (row.get(0), row.get(1));
    if installed {
        return Ok(Flavor::TimescaleDb);
    }
    if !available {
        return Ok(Flavor::Plain);
    }
    match client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
    {
        Ok(()) => Ok(Flavor::TimescaleDb),
        Err(error) => {
            // Usually: not preloaded (shared_preload_libraries) or not allowed to create it.
            warn!(error = %error, "TimescaleDB is available but could not be enabled; using plain PostgreSQL partitioning");
            Ok(Flavor::Plain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, sslmode: SslMode) -> Settings {
        Settings {
            url: url.into(),
            sslmode,
            ca_file: None,
            public_host: None,
            pool_size: 2,
        }
    }

    #[test]
    fn the_endpoint_comes_from_the_url_and_errors_hide_the_password() {
        let database = Database::new(&settings(
            "postgres://admin:s3cret@db.example:6432/smartregion",
            SslMode::Require,
        ))
        .unwrap();
        assert_eq!(database.endpoint.host, "db.example");
        assert_eq!(database.endpoint.port, 6432);
        assert_eq!(database.endpoint.dbname, "smartregion");
        assert_eq!(database.endpoint.sslmode, "require");

        let bad = Database::new(&settings(
            "postgres://admin:s3cret@db:notaport/x",
            SslMode::Disable,
        ));
        let message = bad.err().unwrap().to_string();
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn verify_full_needs_a_ca_bundle_with_a_certificate() {
        let url = "postgres://admin@db.example/smartregion";
        let missing = Database::new(&settings(url, SslMode::VerifyFull));
        assert!(matches!(
            missing.err().unwrap(),
            Error::Tls(smartregion_ingest::postgres::Error::NoCaFile)
        ));

        let empty = tempfile::NamedTempFile::new().unwrap();
        let mut with_empty = settings(url, SslMode::VerifyFull);
        with_empty.ca_file = Some(empty.path().into());
        assert!(matches!(
            Database::new(&with_empty).err().unwrap(),
            Error::Tls(smartregion_ingest::postgres::Error::EmptyCa(_))
        ));
    }

    #[test]
    fn a_unix_socket_url_needs_a_public_host() {
        let url = "postgresql://admin@%2Fvar%2Frun%2Fpostgresql/smartregion";
        assert!(matches!(
            Database::new(&settings(url, SslMode::Disable))
                .err()
                .unwrap(),
            Error::NoTcpHost
        ));
        let mut public = settings(url, SslMode::Disable);
        public.public_host = Some("db.platform.svc".into());
        assert_eq!(
            Database::new(&public).unwrap().endpoint.host,
            "db.platform.svc"
        );
    }
}
