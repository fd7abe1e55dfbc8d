//! Database identifiers of a tenant: schema `t_<n>`, roles `t_<n>_owner|writer|reader`,
//! with `-` in the tenant name turned into `_` (injective: names never contain `_`).

use crate::reconcile::validate::is_tenant_name;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a tenant name; database identifiers cannot be derived from it")]
pub struct NotATenantName(pub String);

/// The database identifiers of one tenant, all valid unquoted and at most 63 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantDb {
    pub schema: String,
    pub owner: String,
    pub writer: String,
    pub reader: String,
}

impl TenantDb {
    pub fn for_tenant(tenant: &str) -> Result<TenantDb, NotATenantName> {
        if !is_tenant_name(tenant) {
            return Err(NotATenantName(tenant.to_string()));
        }
        let base = format!("t_{}", tenant.replace('-', "_"));
        Ok(TenantDb {
            owner: format!("{base}_owner"),
            writer: format!("{base}_writer"),
            reader: format!("{base}_reader"),
            schema: base,
        })
    }

    /// The three roles, owner first.
    pub fn roles(&self) -> Vec<String> {
        vec![self.owner.clone(), self.writer.clone(), self.reader.clone()]
    }

    /// The advisory-lock key that serialises work on this tenant's database objects.
    pub fn lock_key(&self) -> String {
        format!("smartregion:{}", self.schema)
    }
}

/// `"identifier"`, with any `"` doubled. Identifiers here are validated already; quoting
/// them anyway keeps SQL keywords (a tenant named `select`) and future changes safe.
pub fn quote(identifier: &str) -> String {
    postgres_protocol::escape::escape_identifier(identifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_convention() {
        let db = TenantDb::for_tenant("unione-mugello").unwrap();
        assert_eq!(db.schema, "t_unione_mugello");
        assert_eq!(db.owner, "t_unione_mugello_owner");
        assert_eq!(db.writer, "t_unione_mugello_writer");
        assert_eq!(db.reader, "t_unione_mugello_reader");
    }

    #[test]
    fn the_longest_name_fits_postgres_identifiers() {
        let name = format!("a{}", "b-9".repeat(13));
        let db = TenantDb::for_tenant(&name).unwrap();
        for identifier in [&db.schema, &db.owner, &db.writer, &db.reader] {
            assert!(identifier.len() <= 63, "{identifier}");
        }
    }

    #[test]
    fn anything_else_is_refused_and_keywords_are_quoted() {
        for bad in ["", "Prato", "a;drop", "a\"b", "a_b", "1a"] {
            assert!(TenantDb::for_tenant(bad).is_err(), "{bad:?}");
        }
        let db = TenantDb::for_tenant("select").unwrap();
        assert_eq!(quote(&db.schema), "\"t_select\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
