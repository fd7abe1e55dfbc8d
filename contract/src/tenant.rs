//! The tenant-name rule (the same as the CRD's CEL rule on `metadata.name`) and the
//! database schema a tenant name maps to.

/// Longest tenant name: `t_<name>_writer` must fit PostgreSQL's 63-byte identifiers, and
/// `srt-<name>` a namespace.
pub const MAX_NAME_LEN: usize = 40;

/// A DNS label of at most [`MAX_NAME_LEN`] characters that starts with a letter.
pub fn is_tenant_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `t_<tenant>` with `-` as `_` (injective: tenant names have no `_`); `None` for a name
/// that is not a tenant name.
pub fn schema_for(tenant: &str) -> Option<String> {
    is_tenant_name(tenant).then(|| schema_of_checked(tenant))
}

/// [`schema_for`] a name already known to be a tenant name.
pub fn schema_of_checked(tenant: &str) -> String {
    format!("t_{}", tenant.replace('-', "_"))
}

/// The schema of a provider's shares, `s_<tenant>` beside its `t_<tenant>`, for a name
/// already known to be a tenant name.
pub fn share_schema_of_checked(tenant: &str) -> String {
    format!("s_{}", tenant.replace('-', "_"))
}

/// The view of a share's measurements: its name with `-` as `_` (injective, since share
/// names, like tenant names, have no `_`).
pub fn share_view(share: &str) -> String {
    share.replace('-', "_")
}

/// The view of a share's sensor catalogue entries.
pub fn share_sensors_view(share: &str) -> String {
    format!("{}__sensors", share_view(share))
}

/// The schema of a tenant's open datasets, `o_<tenant>` beside its `t_<tenant>`, for a
/// name already known to be a tenant name, with the same `-` as `_`.
pub fn open_schema_of_checked(tenant: &str) -> String {
    format!("o_{}", tenant.replace('-', "_"))
}

/// The role the read service takes (`SET ROLE`) to answer anonymous requests: it may only
/// call the tenant's open-dataset functions. `<schema>_public`.
pub fn public_role(schema: &str) -> String {
    format!("{schema}_public")
}

/// The function that answers an open dataset: its name with `-` as `_`.
pub fn open_function(dataset: &str) -> String {
    dataset.replace('-', "_")
}

/// The function that lists an open dataset's sensors.
pub fn open_sensors_function(dataset: &str) -> String {
    format!("{}__sensors", open_function(dataset))
}

/// A schema name ingest will use: lower-case letters, digits and `_`, at most 63 bytes.
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

    #[test]
    fn names_follow_the_crd_rule_and_map_to_schemas() {
        assert!(is_tenant_name("unione-mugello"));
        for bad in ["", "Prato", "1a", "a_b", "a-", &"a".repeat(41)] {
            assert!(!is_tenant_name(bad), "{bad:?}");
        }
        assert_eq!(
            schema_for("unione-mugello").as_deref(),
            Some("t_unione_mugello")
        );
        assert_eq!(schema_for("Prato"), None);
        assert_eq!(
            share_schema_of_checked("unione-mugello"),
            "s_unione_mugello"
        );
        assert_eq!(share_sensors_view("river-levels"), "river_levels__sensors");
        assert!(is_schema_name("t_select"));
        assert!(!is_schema_name("t-select") && !is_schema_name("T") && !is_schema_name(""));
    }
}
