//! Step 4 (database + client): the tenant's schema, roles, tables and partitions, its
//! storage quota, and the Secrets that carry its credentials into the namespace.
//!
//! The Secrets are the only place the passwords are kept. Missing Secrets, or a new
//! value of the rotate-credentials annotation, mean new passwords. Nothing here logs,
//! reports or returns a password.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::info;

use super::status::{Observed, WITHIN_QUOTA};
use super::validate::Validated;
use crate::crd::{DatabaseStatus, ROTATE_CREDENTIALS_ANNOTATION, SmartRegionTenant};
use crate::database::connect::{Database, Flavor};
use crate::database::names::TenantDb;
use crate::database::new_password;
use crate::database::provision::{self, Desired, Passwords};
use crate::database::quota::{self, RESUME_PERCENT, human_bytes};
use crate::database::sql::RoleLimits;
use crate::database::timescale::HypertableSettings;
use crate::resources::secrets::{
    READER_SECRET, ROTATION_ANNOTATION, WRITER_SECRET, database_secret, password_of,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database is unreachable")]
    Unreachable(#[source] deadpool_postgres::PoolError),
    #[error(transparent)]
    Provision(#[from] provision::Error),
    #[error(transparent)]
    Names(#[from] crate::database::names::NotATenantName),
    #[error("failed to read Secret {0}")]
    ReadSecret(String, #[source] kube::Error),
    #[error(transparent)]
    Apply(#[from] super::apply::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Unreachable(_) => "database_unreachable",
            Error::Provision(error) if error.is_connection() => "database_unreachable",
            Error::Provision(_) => "database_provision",
            Error::Names(_) => "database_names",
            Error::ReadSecret(..) => "read_secret",
            Error::Apply(error) => error.metric_label(),
        }
    }

    /// The condition reason: an outage the operator waits out, or a failure to look at.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unreachable(_) => "DatabaseUnavailable",
            Error::Provision(error) if error.is_connection() => "DatabaseUnavailable",
            _ => "ProvisioningFailed",
        }
    }
}

/// What the database step found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: DatabaseStatus,
    pub bytes: i64,
    /// Rows ever inserted into measurements (PostgreSQL's counter), when known.
    pub inserted: Option<i64>,
    pub within_quota: Observed,
    /// Kubernetes writes made (0 in the steady state).
    pub writes: usize,
}

/// The tenant's database objects as its tier and spec want them. Connection limit: room
/// for every ingest pod's pool plus a few dashboard sessions.
pub fn desired(tenant: &Validated, flavor: Flavor) -> Desired {
    Desired {
        limits: RoleLimits {
            connection_limit: 2 + 4 * tenant.limits.ingest_replicas,
            statement_timeout_ms: 30_000,
        },
        flavor,
        storage: HypertableSettings {
            chunk_interval_hours: tenant.limits.chunk_interval_hours,
            retention_days: tenant.limits.retention_days,
            compress_after_days: tenant.limits.compress_after_days,
        },
    }
}

/// Makes the tenant's database objects and Secrets exist and enforces its storage quota.
pub async fn ensure_database(
    client: &Client,
    database: &Database,
    tenant: &SmartRegionTenant,
    validated: &Validated,
) -> Result<Outcome, Error> {
    let db = TenantDb::for_tenant(&validated.name)?;
    let flavor = database.flavor().await.map_err(Error::Unreachable)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &validated.namespace);
    let read = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(name)
                .await
                .map_err(|source| Error::ReadSecret(name.to_string(), source))
        }
    };
    let (writer_secret, reader_secret) = (read(WRITER_SECRET).await?, read(READER_SECRET).await?);
    let rotation = tenant
        .annotations()
        .get(ROTATE_CREDENTIALS_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let issued_for = |secret: &Option<Secret>| {
        secret
            .as_ref()
            .and_then(|s| s.annotations().get(ROTATION_ANNOTATION).cloned())
            .unwrap_or_default()
    };
    let current = match (
        writer_secret.as_ref().and_then(password_of),
        reader_secret.as_ref().and_then(password_of),
    ) {
        (Some(writer), Some(reader))
            if issued_for(&writer_secret) == rotation && issued_for(&reader_secret) == rotation =>
        {
            Some((writer, reader))
        }
        _ => None,
    };
    let rotate = current.is_none();
    let (writer_password, reader_password) =
        current.unwrap_or_else(|| (new_password(), new_password()));

    let mut connection = database.pool.get().await.map_err(Error::Unreachable)?;
    let provisioned = provision::ensure_schema_exists(
        &mut connection,
        &db,
        &desired(validated, flavor),
        &Passwords {
            writer: &writer_password,
            reader: &reader_password,
        },
        rotate,
    )
    .await?;
    if provisioned.changed {
        info!(schema = %db.schema, passwords_issued = provisioned.passwords_set, "database objects provisioned");
    }
    if flavor == Flavor::Plain {
        let changes = provision::ensure_partitions(
            &mut connection,
            &db,
            jiff::Timestamp::now(),
            validated.limits.chunk_interval_hours,
            validated.limits.retention_days,
        )
        .await?;
        if changes != provision::PartitionChanges::default() {
            info!(schema = %db.schema, created = ?changes.created, dropped = ?changes.dropped, expired_rows = changes.expired_rows, "partitions maintained");
        }
    }

    let bytes = provision::measure_schema_bytes(&connection, &db, flavor).await?;
    let inserted = provision::rows_inserted(&connection, &db, flavor).await?;
    // Validation refused anything that is not a positive quantity.
    let quota_bytes =
        crate::quantity::whole_units(&validated.limits.database_storage).unwrap_or(i128::MAX);
    let allowed_now = provision::writes_allowed(&connection, &db).await?;
    let within = quota::writes_allowed(bytes, quota_bytes, allowed_now);
    // Suspension stops writes too; it is not a quota matter, so WithinQuota ignores it.
    if provision::ensure_writes_allowed(&connection, &db, within && !validated.suspended).await? {
        info!(schema = %db.schema, writes_allowed = within && !validated.suspended, "writer INSERT privilege changed");
    }
    let within_quota = within_quota(
        bytes,
        quota_bytes,
        &validated.limits.database_storage,
        within,
    );

    let mut writes = 0;
    for (name, user, password) in [
        (WRITER_SECRET, &db.writer, &writer_password),
        (READER_SECRET, &db.reader, &reader_password),
    ] {
        let secret = database_secret(
            validated,
            name,
            &database.endpoint,
            user,
            password,
            &rotation,
        );
        writes += super::apply::ensure(&secrets, &secret).await?;
    }
    let previous_rotation = tenant
        .status
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .and_then(|d| d.credentials_rotated_at.clone());
    let credentials_rotated_at = if provisioned.passwords_set {
        Some(Time(jiff::Timestamp::now()))
    } else {
        previous_rotation
    };
    Ok(Outcome {
        status: DatabaseStatus {
            schema: db.schema.clone(),
            writer_secret: WRITER_SECRET.into(),
            reader_secret: READER_SECRET.into(),
            credentials_rotated_at,
        },
        bytes,
        inserted,
        within_quota,
        writes,
    })
}

/// The WithinQuota condition. Its message changes only with the whole percentage, so a
/// growing tenant does not rewrite its status on every reconcile.
fn within_quota(bytes: i64, quota_bytes: i128, quota: &str, within: bool) -> Observed {
    let percent = i128::from(bytes) * 100 / quota_bytes.max(1);
    if within {
        Observed::ok(
            WITHIN_QUOTA,
            "WithinQuota",
            format!("database storage at {percent}% of the {quota} quota"),
        )
    } else {
        Observed::failed(
            WITHIN_QUOTA,
            "DatabaseStorageExceeded",
            format!(
                "the schema uses {} ({percent}% of the {quota} databaseStorage quota): inserts \
                 are refused, reads keep working; they resume below {RESUME_PERCENT}% \
                 ({}); raise spec.quotas.databaseStorage or shorten spec.database.retentionDays",
                human_bytes(i128::from(bytes)),
                human_bytes(quota_bytes * RESUME_PERCENT / 100)
            ),
        )
    }
}

/// The data side of deleting a tenant: Retain disables the logins, Delete drops it all.
pub async fn ensure_database_released(
    database: &Database,
    tenant: &str,
    drop_data: bool,
) -> Result<(), Error> {
    let db = TenantDb::for_tenant(tenant)?;
    let mut connection = database.pool.get().await.map_err(Error::Unreachable)?;
    if drop_data {
        provision::ensure_schema_absent(&mut connection, &db).await?;
    } else {
        provision::ensure_logins_disabled(&connection, &db).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_condition_says_what_to_do_and_moves_by_whole_percents() {
        let over = within_quota(1_100_000, 1_048_576, "1Mi", false);
        assert!(!over.ok);
        assert_eq!(over.reason, "DatabaseStorageExceeded");
        assert!(
            over.message.contains("raise spec.quotas.databaseStorage"),
            "{}",
            over.message
        );
        assert!(over.message.contains("104%"), "{}", over.message);
        let a = within_quota(300_000, 1_048_576, "1Mi", true);
        let b = within_quota(301_000, 1_048_576, "1Mi", true);
        assert_eq!(a, b, "small growth leaves the condition unchanged");
    }
}
