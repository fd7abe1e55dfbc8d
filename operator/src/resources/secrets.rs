//! Secrets `db-writer` and `db-reader`: how the tenant's clients reach their schema.
//! Values live only here and in the database (as a SCRAM verifier); never in status,
//! Events or logs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::object_meta;
use crate::reconcile::validate::Validated;

pub const WRITER_SECRET: &str = "db-writer";
pub const READER_SECRET: &str = "db-reader";
/// Annotation on the Secrets: the value of the tenant's rotate-credentials annotation
/// they were issued for, so a new value is noticed without any other state.
pub const ROTATION_ANNOTATION: &str = "smartregion.toscana.it/issued-for-rotation";

/// Where tenants' clients connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: String,
}

pub fn database_secret(
    tenant: &Validated,
    name: &str,
    endpoint: &Endpoint,
    user: &str,
    password: &str,
    rotation: &str,
) -> Secret {
    let uri = format!(
        "postgresql://{user}:{password}@{}:{}/{}?sslmode={}",
        endpoint.host, endpoint.port, endpoint.dbname, endpoint.sslmode
    );
    let data = BTreeMap::from(
        [
            ("host", endpoint.host.clone()),
            ("port", endpoint.port.to_string()),
            ("dbname", endpoint.dbname.clone()),
            ("user", user.to_string()),
            ("password", password.to_string()),
            ("sslmode", endpoint.sslmode.clone()),
            ("uri", uri),
        ]
        .map(|(key, value)| (key.to_string(), ByteString(value.into_bytes()))),
    );
    let mut metadata = object_meta(tenant, name, true);
    metadata.annotations = Some([(ROTATION_ANNOTATION.to_string(), rotation.to_string())].into());
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The password stored in a Secret, if any.
pub fn password_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone()).ok()
}
