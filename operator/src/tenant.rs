//! The validated model of a tenant (pure, a leaf): what `reconcile::validate` makes of a
//! `SmartRegionTenant`, and what the builders (`resources`), the database code and
//! `onboard` read. Depends only on the API types, the operator's configuration and the
//! contract crate; nothing here imports the pipeline, the builders or the database code.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use smartregion_contract::format::IngestFormat;
use smartregion_contract::tenant::{MAX_NAME_LEN, is_tenant_name};

pub use crate::config::Limits;
use crate::crd::Tier;

/// A tenant name: a DNS label of at most [`MAX_NAME_LEN`] characters that starts with a
/// letter (the CRD's rule on `metadata.name`). Checked once, when made; code holding
/// one never checks again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "tenant name {0:?} is not usable: it must be a DNS label of at most {MAX_NAME_LEN} \
     characters that starts with a letter"
)]
pub struct NotATenantName(pub String);

impl TenantName {
    pub fn parse(name: &str) -> Result<TenantName, NotATenantName> {
        if is_tenant_name(name) {
            Ok(TenantName(name.to_string()))
        } else {
            Err(NotATenantName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Admin groups and users, sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Admins {
    pub groups: Vec<String>,
    pub users: Vec<String>,
}

/// A tenant that passed validation: everything the builders need, nothing optional.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub name: TenantName,
    pub namespace: String,
    pub tier: Tier,
    /// The tier's preset with `spec.quotas` on top.
    pub limits: Limits,
    pub admins: Admins,
    pub ingest: Ingest,
    /// `spec.read.enabled`, true when unset.
    pub read_enabled: bool,
    /// `spec.grafana.enabled`, false when unset.
    pub grafana: bool,
    /// `spec.displayName`: the publisher's name in the open-data catalogue.
    pub display_name: String,
    /// `spec.entity.ipaCode`: the publisher's identifier in the open-data catalogue.
    pub ipa_code: Option<String>,
    pub suspended: bool,
    pub owner_reference: OwnerReference,
}

/// The ingest service as the spec asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingest {
    /// `spec.ingest.enabled`, true when unset.
    pub enabled: bool,
    /// Accepted payload formats, sorted and without duplicates; empty accepts all.
    pub formats: Vec<IngestFormat>,
    /// The MQTT broker to subscribe to, if any.
    pub mqtt: Option<Mqtt>,
}

/// `spec.ingest.mqtt` with its address parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Mqtt {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub topics: Vec<String>,
    /// Secret in the tenant namespace with `username` and `password`.
    pub credentials_secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_names_become_tenant_names() {
        assert_eq!(
            TenantName::parse("unione-mugello").unwrap().as_str(),
            "unione-mugello"
        );
        for bad in ["", "Prato", "a;drop", "a\"b", "a_b", "1a", "a-"] {
            assert_eq!(TenantName::parse(bad), Err(NotATenantName(bad.to_string())));
        }
    }
}
