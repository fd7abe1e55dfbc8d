//! Database identifiers of a tenant: schema `t_<n>`, roles `t_<n>_owner|writer|reader`,
//! with `-` in the tenant name turned into `_` (injective: names never contain `_`).

use smartregion_contract::tenant::schema_of_checked;

use crate::tenant::TenantName;

/// The database identifiers of one tenant, all valid unquoted and at most 63 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantDb {
    pub schema: String,
    pub owner: String,
    pub writer: String,
    pub reader: String,
}

impl TenantDb {
    pub fn for_tenant(tenant: &TenantName) -> TenantDb {
        let base = schema_of_checked(tenant.as_str());
        TenantDb {
            owner: format!("{base}_owner"),
            writer: format!("{base}_writer"),
            reader: format!("{base}_reader"),
            schema: base,
        }
    }

    /// For unit tests: the identifiers of a name that must be valid.
    #[cfg(test)]
    pub fn test(name: &str) -> TenantDb {
        TenantDb::for_tenant(&TenantName::parse(name).expect("a valid tenant name in a test"))
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

    fn db(name: &str) -> TenantDb {
        TenantDb::for_tenant(&TenantName::parse(name).unwrap())
    }

    #[test]
    fn identifiers_follow_the_convention() {
        let db = db("unione-mugello");
        assert_eq!(db.schema, "t_unione_mugello");
        assert_eq!(db.owner, "t_unione_mugello_owner");
        assert_eq!(db.writer, "t_unione_mugello_writer");
        assert_eq!(db.reader, "t_unione_mugello_reader");
    }

    #[test]
    fn the_longest_name_fits_postgres_identifiers() {
        let name = format!("a{}", "b-9".repeat(13));
        let db = db(&name);
        for identifier in [&db.schema, &db.owner, &db.writer, &db.reader] {
            assert!(identifier.len() <= 63, "{identifier}");
        }
    }

    #[test]
    fn keywords_are_quoted() {
        let db = db("select");
        assert_eq!(quote(&db.schema), "\"t_select\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
