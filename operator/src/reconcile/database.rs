//! Step 4 (database + client): the tenant's schema, roles and tables, and the Secrets
//! that carry its credentials into the namespace.
//!
//! The Secrets are the only place the passwords are kept. Missing Secrets, or a new
//! value of the rotate-credentials annotation, mean new passwords.

use deadpool_postgres::Pool;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::validate::Validated;
use crate::crd::{ROTATE_CREDENTIALS_ANNOTATION, SmartRegionTenant};
use crate::database::names::TenantDb;
use crate::database::new_password;
use crate::database::provision::{self, Passwords};
use crate::database::sql::RoleLimits;
use crate::resources::secrets::{
    Endpoint, READER_SECRET, ROTATION_ANNOTATION, WRITER_SECRET, database_secret, password_of,
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
    #[error("the database part is not ready yet; see the DatabaseReady condition")]
    NotReady,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Unreachable(_) => "database_unreachable",
            Error::Provision(_) => "database_provision",
            Error::Names(_) => "database_names",
            Error::ReadSecret(..) => "read_secret",
            Error::Apply(error) => error.metric_label(),
            Error::NotReady => "database_not_ready",
        }
    }
}

/// Connection limit and statement timeout of the tenant's roles.
fn limits(tenant: &Validated) -> RoleLimits {
    RoleLimits {
        connection_limit: 2 + 4 * tenant.limits.ingest_replicas,
        statement_timeout_ms: 30_000,
    }
}

/// Makes the tenant's database objects and Secrets exist. Returns the number of
/// Kubernetes writes made (0 in the steady state).
pub async fn ensure_database(
    client: &Client,
    pool: &Pool,
    endpoint: &Endpoint,
    tenant: &SmartRegionTenant,
    validated: &Validated,
) -> Result<usize, Error> {
    let db = TenantDb::for_tenant(&validated.name)?;
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

    let mut connection = pool.get().await.map_err(Error::Unreachable)?;
    provision::ensure_schema_exists(
        &mut connection,
        &db,
        &limits(validated),
        &Passwords {
            writer: &writer_password,
            reader: &reader_password,
        },
        rotate,
    )
    .await?;

    let mut writes = 0;
    for (name, user, password) in [
        (WRITER_SECRET, &db.writer, &writer_password),
        (READER_SECRET, &db.reader, &reader_password),
    ] {
        let secret = database_secret(validated, name, endpoint, user, password, &rotation);
        writes += super::apply::ensure(&secrets, &secret).await?;
    }
    Ok(writes)
}

/// The data side of deleting a tenant: Retain disables the logins, Delete drops it all.
pub async fn ensure_database_released(
    pool: &Pool,
    tenant: &str,
    drop_data: bool,
) -> Result<(), Error> {
    let db = TenantDb::for_tenant(tenant)?;
    let connection = pool.get().await.map_err(Error::Unreachable)?;
    if drop_data {
        provision::ensure_schema_absent(&connection, &db).await?;
    } else {
        provision::ensure_logins_disabled(&connection, &db).await?;
    }
    Ok(())
}
