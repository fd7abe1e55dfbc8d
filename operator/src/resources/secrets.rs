//! Secrets `db-writer` and `db-reader`: how the tenant's clients reach their schema.
//! Values live only here and in the database (as a SCRAM verifier); never in status,
//! Events or logs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::object_meta;
use crate::config::DatabaseEndpoint;
use crate::tenant::Validated;

pub const WRITER_SECRET: &str = "db-writer";
pub const READER_SECRET: &str = "db-reader";
/// Annotation on the Secrets: the value of the tenant's rotate-credentials annotation
/// they were issued for, so a new value is noticed without any other state.
pub const ROTATION_ANNOTATION: &str = "smartregion.toscana.it/issued-for-rotation";

/// Annotation on `db-writer`: the writer logins a rotation replaced and that are not yet
/// retired (comma-separated role names, empty when none). Role names only, never a
/// credential; it is what lets a restarted operator finish a rotation.
pub const RETIRING_ANNOTATION: &str = "smartregion.toscana.it/retiring-logins";

/// Key of the CA bundle in the Secrets, when the operator was given one.
pub const CA_KEY: &str = "ca.crt";

pub fn database_secret(
    tenant: &Validated,
    name: &str,
    endpoint: &DatabaseEndpoint,
    user: &str,
    password: &str,
    rotation: &str,
    retiring: Option<&[String]>,
) -> Secret {
    let uri = format!(
        "postgresql://{user}:{password}@{}:{}/{}?sslmode={}",
        endpoint.host, endpoint.port, endpoint.dbname, endpoint.sslmode
    );
    let mut data = BTreeMap::from(
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
    if let Some(bundle) = &endpoint.ca_bundle {
        data.insert(CA_KEY.to_string(), ByteString(bundle.clone().into_bytes()));
    }
    let mut metadata = object_meta(tenant, name, true);
    let mut annotations = BTreeMap::from([(ROTATION_ANNOTATION.to_string(), rotation.to_string())]);
    if let Some(retiring) = retiring {
        annotations.insert(
            RETIRING_ANNOTATION.to_string(),
            crate::database::logins::format_retiring(retiring),
        );
    }
    metadata.annotations = Some(annotations);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The password stored in a Secret, if any.
pub fn password_of(secret: &Secret) -> Option<String> {
    value_of(secret, "password")
}

/// The user stored in a Secret, if any.
pub fn user_of(secret: &Secret) -> Option<String> {
    value_of(secret, "user")
}

/// The logins `db-writer` says are being retired.
pub fn retiring_of(secret: &Secret) -> Vec<String> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(RETIRING_ANNOTATION))
        .map(|value| crate::database::logins::parse_retiring(value))
        .unwrap_or_default()
}

fn value_of(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::test_support::tenant;
    use crate::test_support::validate;

    fn secret(ca_bundle: Option<&str>) -> Secret {
        let tenant = validate(&tenant("prato").build(), &Config::default()).unwrap();
        let endpoint = DatabaseEndpoint {
            host: "db.example.it".into(),
            port: 5432,
            dbname: "smartregion".into(),
            sslmode: "verify-full".into(),
            ca_bundle: ca_bundle.map(String::from),
        };
        database_secret(
            &tenant,
            WRITER_SECRET,
            &endpoint,
            "t_prato_writer",
            "pw",
            "",
            Some(&["t_prato_writer".to_string()]),
        )
    }

    fn value(secret: &Secret, key: &str) -> Option<String> {
        let bytes = secret.data.as_ref()?.get(key)?;
        Some(String::from_utf8(bytes.0.clone()).unwrap())
    }

    #[test]
    fn the_secret_has_what_libpq_clients_need() {
        let secret = secret(None);
        assert_eq!(value(&secret, "host").as_deref(), Some("db.example.it"));
        assert_eq!(value(&secret, "sslmode").as_deref(), Some("verify-full"));
        assert_eq!(
            value(&secret, "uri").as_deref(),
            Some(
                "postgresql://t_prato_writer:pw@db.example.it:5432/smartregion?sslmode=verify-full"
            )
        );
        assert_eq!(value(&secret, CA_KEY), None);
        assert_eq!(user_of(&secret).as_deref(), Some("t_prato_writer"));
        assert_eq!(retiring_of(&secret), ["t_prato_writer"]);
    }

    #[test]
    fn the_ca_bundle_travels_with_the_credentials_when_there_is_one() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(value(&secret(Some(pem)), CA_KEY).as_deref(), Some(pem));
    }
}
