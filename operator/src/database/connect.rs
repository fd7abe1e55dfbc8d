//! The operator's admin connection to the shared database: TLS with rustls according to
//! `sslmode`, a bounded pool with timeouts, and what the database offers for storage
//! (TimescaleDB or not).
//!
//! Talks to the database only in [`Database::timescaledb`]. Errors never contain the
//! connection URL: it holds the admin password.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use smartregion_contract::postgres::SslMode;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::storage::StorageMode;

use crate::config::DatabaseEndpoint;

/// Longest wait for a TCP connection and the PostgreSQL handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a free pooled connection: a slow database must not hold every tenant.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin sessions give up on a statement or a lock rather than hang a reconcile, and
/// resolve names in PostgreSQL's own catalog first and temporary objects last: a function
/// or table of the same name that someone put in a schema of the search path never runs
/// as the admin.
const SESSION_OPTIONS: &str = "-c statement_timeout=60000 -c lock_timeout=10000 \
     -c search_path=pg_catalog,pg_temp";

/// SCRAM channel binding on the admin connection (libpq's `channel_binding`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[value(rename_all = "kebab-case")]
pub enum ChannelBinding {
    /// Only SCRAM bound to the TLS channel: a server in the middle cannot relay the
    /// authentication, and a server asking for the password in clear text or as MD5 is
    /// refused before anything is sent.
    #[default]
    Require,
    Prefer,
    Disable,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the database URL is not a valid PostgreSQL connection URL (the value is not shown: it holds a password)"
    )]
    Url,
    #[error("the database URL needs a TCP host name or address; or set --database-public-host")]
    NoTcpHost,
    #[error("failed to set up TLS to the database (--database-sslmode, --database-ca-file)")]
    Tls(#[from] smartregion_contract::postgres::Error),
    #[error("failed to read the CA bundle {path} (--database-ca-file)")]
    ReadCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the database connection pool")]
    Pool(#[source] deadpool_postgres::BuildError),
    #[error(
        "--database-sslmode={0} does not authenticate the database server: anyone who can \
         take its address can receive the admin's password. Use --database-sslmode=verify-full \
         with --database-ca-file, or accept the risk with --database-insecure"
    )]
    Insecure(&'static str),
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
    /// What new tenants get.
    pub storage: StorageMode,
    /// `require` or `disable` were accepted on purpose.
    pub insecure: bool,
    pub channel_binding: ChannelBinding,
}

/// TimescaleDB in the operator's database, as far as tenants' storage is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extension {
    /// Installed and loaded: hypertables work.
    Loaded(TimescaleDb),
    /// Installed in the database, but the server does not preload it: PostgreSQL refuses
    /// every DDL statement in the database (TimescaleDB's event triggers need the
    /// library), so nothing can be provisioned until it does.
    NotLoaded { version: String },
    /// Not in the database (and not created by the operator).
    Absent,
}

impl Extension {
    pub fn loaded(&self) -> Option<&TimescaleDb> {
        match self {
            Extension::Loaded(timescaledb) => Some(timescaledb),
            _ => None,
        }
    }
}

/// TimescaleDB as installed in the operator's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimescaleDb {
    /// Schema of its functions (`time_bucket`, `first`, ...), put on tenants' search path.
    pub schema: String,
    pub version: String,
}

/// The shared database as the reconcile pipeline sees it.
pub struct Database {
    pub pool: Pool,
    /// Where tenants' clients connect; written into their Secrets.
    pub endpoint: DatabaseEndpoint,
    pub storage: StorageMode,
    /// `CREATE EXTENSION` is tried once per process, and reconciles that arrive meanwhile
    /// wait for that one try (or each would give its tenant partitions while the first
    /// creates the extension); a refusal is logged once, not at every reconcile.
    extension_attempt: OnceCell<()>,
    /// "Installed on the server but not preloaded" is said once.
    told_not_preloaded: AtomicBool,
    warned_not_loaded: AtomicBool,
}

impl Database {
    pub fn new(settings: &Settings) -> Result<Database, Error> {
        if settings.sslmode != SslMode::VerifyFull {
            if !settings.insecure {
                return Err(Error::Insecure(settings.sslmode.as_libpq()));
            }
            warn!(
                sslmode = settings.sslmode.as_libpq(),
                "the database server is not authenticated (--database-insecure)"
            );
        }
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|_| Error::Url)?;
        let host = match (&settings.public_host, config.get_hosts().first()) {
            (Some(host), _) => host.clone(),
            (None, Some(tokio_postgres::config::Host::Tcp(host))) => host.clone(),
            _ => return Err(Error::NoTcpHost),
        };
        let endpoint = DatabaseEndpoint {
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
        let manager = match smartregion_contract::postgres::connector(
            settings.sslmode,
            settings.ca_file.as_deref(),
        )? {
            None => {
                config
                    .ssl_mode(tokio_postgres::config::SslMode::Disable)
                    .channel_binding(tokio_postgres::config::ChannelBinding::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            Some(connector) => {
                config
                    .ssl_mode(tokio_postgres::config::SslMode::Require)
                    .channel_binding(match settings.channel_binding {
                        ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
                        ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
                        ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
                    });
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
            storage: settings.storage,
            extension_attempt: OnceCell::new(),
            told_not_preloaded: AtomicBool::new(false),
            warned_not_loaded: AtomicBool::new(false),
        })
    }

    /// TimescaleDB in the database now. Looked at on every reconcile (one small query),
    /// so an extension created or gone later is seen at once.
    ///
    /// - Installed in the database and loaded by the server: [`Extension::Loaded`].
    /// - Installed but not preloaded (a server restarted without
    ///   `shared_preload_libraries = 'timescaledb'`): [`Extension::NotLoaded`]; touching it
    ///   would end the session.
    /// - Not installed, but the server preloads it and new tenants may get hypertables:
    ///   the extension is created (it is a trusted extension: CREATE on the database is
    ///   enough). Tried once per process; a refusal is logged with its SQLSTATE.
    /// - Otherwise [`Extension::Absent`].
    pub async fn timescaledb(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<Extension, tokio_postgres::Error> {
        let found = inspect_extension(client).await?;
        if let Some(installed) = found.installed {
            if found.preloaded {
                return Ok(Extension::Loaded(installed));
            }
            if !self.warned_not_loaded.swap(true, Ordering::Relaxed) {
                warn!(
                    version = %installed.version,
                    "the database has the timescaledb extension but the server does not preload \
                     it (shared_preload_libraries); no tenant can be provisioned until it does"
                );
            }
            return Ok(Extension::NotLoaded {
                version: installed.version,
            });
        }
        if !found.available || self.storage == StorageMode::Partitions {
            return Ok(Extension::Absent);
        }
        if !found.preloaded {
            if !self.told_not_preloaded.swap(true, Ordering::Relaxed) {
                info!(
                    "TimescaleDB is installed on the server but not preloaded \
                     (shared_preload_libraries); new tenants get native partitions"
                );
            }
            return Ok(Extension::Absent);
        }
        self.extension_attempt
            .get_or_init(|| async {
                match client
                    // The admin's search path is pinned to pg_catalog: the schema is named.
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
                    .await
                {
                    Ok(()) => info!("the timescaledb extension is in the database"),
                    Err(error) => warn!(
                        cause = %super::describe(&error),
                        "TimescaleDB is preloaded but its extension could not be created in \
                         the database; new tenants get native partitions until it exists"
                    ),
                }
            })
            .await;
        // Created now, by another operator or a DBA meanwhile, or not at all.
        Ok(match inspect_extension(client).await?.installed {
            Some(installed) => Extension::Loaded(installed),
            None => Extension::Absent,
        })
    }
}

/// The timescaledb extension as the database and the server have it.
struct Found {
    installed: Option<TimescaleDb>,
    /// The server has it (`pg_available_extensions`).
    available: bool,
    /// The server preloads it: its loader's settings exist.
    preloaded: bool,
}

async fn inspect_extension(
    client: &tokio_postgres::Client,
) -> Result<Found, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT e.extnamespace::regnamespace::text, e.extversion, \
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
                    EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.max_background_workers') \
             FROM (SELECT 1) AS one LEFT JOIN pg_extension e ON e.extname = 'timescaledb'",
            &[],
        )
        .await?;
    let (schema, version): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    Ok(Found {
        installed: schema
            .zip(version)
            .map(|(schema, version)| TimescaleDb { schema, version }),
        available: row.get(2),
        preloaded: row.get(3),
    })
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
            storage: StorageMode::Auto,
            insecure: true,
            channel_binding: ChannelBinding::Require,
        }
    }

    #[test]
    fn a_server_that_is_not_authenticated_needs_an_explicit_opt_out() {
        let url = "postgres://admin:s3cret@db.example/smartregion";
        for mode in [SslMode::Disable, SslMode::Require] {
            let mut refused = settings(url, mode);
            refused.insecure = false;
            let error = Database::new(&refused).err().unwrap();
            assert!(matches!(error, Error::Insecure(_)), "{error}");
            assert!(error.to_string().contains("--database-insecure"), "{error}");
            assert!(!error.to_string().contains("s3cret"), "{error}");
            assert!(Database::new(&settings(url, mode)).is_ok());
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
            Error::Tls(smartregion_contract::postgres::Error::NoCaFile)
        ));

        let empty = tempfile::NamedTempFile::new().unwrap();
        let mut with_empty = settings(url, SslMode::VerifyFull);
        with_empty.ca_file = Some(empty.path().into());
        assert!(matches!(
            Database::new(&with_empty).err().unwrap(),
            Error::Tls(smartregion_contract::postgres::Error::EmptyCa(_))
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
