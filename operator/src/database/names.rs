//! Database identifiers of a tenant: schema `t_<n>`, roles `t_<n>_owner|writer|reader`
//! and the writer's two login roles `t_<n>_writer_1|2`, with `-` in the tenant name
//! turned into `_` (injective: names never contain `_`).

use smartregion_contract::tenant::schema_of_checked;

use crate::tenant::TenantName;

/// The database identifiers of one tenant, all valid unquoted and at most 63 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantDb {
    pub schema: String,
    pub owner: String,
    /// The role that holds the writer's privileges. Tenants provisioned before the
    /// login roles existed log in as it until their first rotation.
    pub writer: String,
    pub reader: String,
    /// The writer's login roles, members of `writer`, used in turn by rotations.
    pub writer_logins: [String; 2],
}

impl TenantDb {
    pub fn for_tenant(tenant: &TenantName) -> TenantDb {
        let base = schema_of_checked(tenant.as_str());
        TenantDb {
            owner: format!("{base}_owner"),
            writer: format!("{base}_writer"),
            reader: format!("{base}_reader"),
            writer_logins: [format!("{base}_writer_1"), format!("{base}_writer_2")],
            schema: base,
        }
    }

    /// For unit tests: the identifiers of a name that must be valid.
    #[cfg(test)]
    pub fn test(name: &str) -> TenantDb {
        TenantDb::for_tenant(&TenantName::parse(name).expect("a valid tenant name in a test"))
    }

    /// Every role of the tenant, owner first.
    pub fn roles(&self) -> Vec<String> {
        let mut roles = vec![self.owner.clone()];
        roles.extend(self.writer_roles());
        roles.push(self.reader.clone());
        roles
    }

    /// The roles a writer may log in as: the privileges' role, then the login roles.
    pub fn writer_roles(&self) -> Vec<String> {
        let mut roles = vec![self.writer.clone()];
        roles.extend(self.writer_logins.iter().cloned());
        roles
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
        assert_eq!(
            db.writer_logins,
            ["t_unione_mugello_writer_1", "t_unione_mugello_writer_2"]
        );
        assert_eq!(db.roles().len(), 5);
    }

    #[test]
    fn the_longest_name_fits_postgres_identifiers() {
        let name = format!("a{}", "b-9".repeat(13));
        let db = db(&name);
        for identifier in db.roles().iter().chain([&db.schema]) {
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
