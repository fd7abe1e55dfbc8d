//! What the operator needs from the shared database and what in it would let a tenant
//! reach past its schema or its quota, each with the statement a DBA runs to fix it.
//!
//! One list serves three readers: the operator checks it at start and reports every
//! finding with its fix ([`run`], which talks to the database); the local cluster's
//! PostgreSQL is set up with the fixes, as a DBA would (`e2e/src/postgres.rs`); and
//! `docs/operator-guide.md` shows every fix (a test compares). The statements are
//! pure text with two placeholders, `{admin}` and `{database}`, for quoted identifiers.

use tokio_postgres::Client;

use super::names::quote;

/// Whether a failing check stops the operator from doing its work or opens a way
/// around a tenant's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Kind {
    /// Without it, provisioning (or deleting) tenants fails.
    Needed,
    /// With it, a tenant's login can store data outside its schema or quota, or the
    /// admin holds more than it needs.
    Hazard,
}

/// One thing to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// Stable name: the `check` label of `smartregion_database_check_ok`.
    pub name: &'static str,
    pub kind: Kind,
    /// What is wrong when the check fails.
    pub problem: &'static str,
    /// One row, one boolean: true when all is well. Run as the admin.
    pub query: &'static str,
    /// The statements a superuser runs to fix it (`{admin}`, `{database}`), if any.
    pub fix: &'static [&'static str],
}

pub const CHECKS: &[Check] = &[
    Check {
        name: "createrole",
        kind: Kind::Needed,
        problem: "the admin role lacks CREATEROLE: it cannot create the tenants' roles",
        query: "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user",
        fix: &["ALTER ROLE {admin} CREATEROLE"],
    },
    Check {
        name: "create_on_database",
        kind: Kind::Needed,
        problem: "the admin role lacks CREATE on the database: it cannot create the tenants' \
                  schemas",
        query: "SELECT has_database_privilege(current_database(), 'CREATE')",
        fix: &["GRANT CREATE ON DATABASE {database} TO {admin}"],
    },
    Check {
        name: "timescaledb_job_history",
        kind: Kind::Needed,
        problem: "the admin role may not delete from TimescaleDB's job history: deleting a \
                  tenant leaves its jobs' past runs there",
        query: "SELECT NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') \
                OR (has_table_privilege('_timescaledb_internal.bgw_job_stat_history', 'SELECT') \
                    AND has_table_privilege('_timescaledb_internal.bgw_job_stat_history', 'DELETE'))",
        // DELETE ... WHERE job_id = ... reads job_id: SELECT too.
        fix: &["GRANT SELECT, DELETE ON _timescaledb_internal.bgw_job_stat_history TO {admin}"],
    },
    Check {
        name: "public_create_in_public_schema",
        kind: Kind::Hazard,
        problem: "every role may CREATE in schema public: a tenant's login can store tables \
                  there, outside its schema and quota",
        query: "SELECT NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') \
                OR NOT has_schema_privilege('public', 'public', 'CREATE')",
        fix: &["REVOKE CREATE ON SCHEMA public FROM PUBLIC"],
    },
    Check {
        name: "public_temporary_tables",
        kind: Kind::Hazard,
        problem: "every role may create temporary tables in the database: a tenant's login \
                  can store data outside its quota for as long as its session lasts",
        query: "SELECT NOT has_database_privilege('public', current_database(), 'TEMPORARY')",
        fix: &["REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC"],
    },
    Check {
        name: "public_large_objects",
        kind: Kind::Hazard,
        problem: "every role may create large objects: a tenant's login can store data in \
                  pg_largeobject, outside its schema and quota",
        query: "SELECT NOT (has_function_privilege('public', 'lo_from_bytea(oid, bytea)', 'EXECUTE') \
                OR has_function_privilege('public', 'lo_create(oid)', 'EXECUTE') \
                OR has_function_privilege('public', 'lo_creat(integer)', 'EXECUTE') \
                OR has_function_privilege('public', 'lo_import(text)', 'EXECUTE') \
                OR has_function_privilege('public', 'lo_import(text, oid)', 'EXECUTE'))",
        fix: &[
            "REVOKE EXECUTE ON FUNCTION lo_from_bytea(oid, bytea), lo_create(oid), \
             lo_creat(integer), lo_import(text), lo_import(text, oid) FROM PUBLIC",
        ],
    },
    Check {
        name: "admin_not_superuser",
        kind: Kind::Hazard,
        problem: "the admin role is a superuser: the operator needs CREATEROLE and CREATE on \
                  the database, nothing more (docs/operator-guide.md)",
        query: "SELECT NOT rolsuper FROM pg_roles WHERE rolname = current_user",
        fix: &[],
    },
    Check {
        name: "createrole_confined",
        kind: Kind::Hazard,
        problem: "on PostgreSQL 15, CREATEROLE lets the admin grant itself any role that is \
                  not a superuser, pg_execute_server_program and pg_read_server_files among \
                  them: whoever holds its password holds those; PostgreSQL 16 confines \
                  CREATEROLE to the roles it created (docs/security.md)",
        query: "SELECT current_setting('server_version_num')::int >= 160000 \
                OR NOT (SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user)",
        fix: &[],
    },
];

/// A failing check as found in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static Check,
    /// What could not be checked (the query failed), if so.
    pub unknown: Option<String>,
}

/// The fix of `check` with the admin role and database filled in, quoted.
pub fn fix(check: &Check, admin: &str, database: &str) -> Vec<String> {
    check
        .fix
        .iter()
        .map(|statement| {
            statement
                .replace("{admin}", &quote(admin))
                .replace("{database}", &quote(database))
        })
        .collect()
}

/// Runs every check as the admin; returns those that fail or could not be run.
pub async fn run(client: &Client) -> Vec<Finding> {
    let mut findings = Vec::new();
    for check in CHECKS {
        match client.query_one(check.query, &[]).await {
            Ok(row) if row.get::<_, Option<bool>>(0) == Some(true) => {}
            Ok(_) => findings.push(Finding {
                check,
                unknown: None,
            }),
            Err(error) => findings.push(Finding {
                check,
                unknown: Some(super::describe(&error)),
            }),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_quote_the_names_they_are_given() {
        let check = CHECKS
            .iter()
            .find(|check| check.name == "create_on_database")
            .unwrap();
        assert_eq!(
            fix(check, "smartregion_admin", "smart\"region"),
            ["GRANT CREATE ON DATABASE \"smart\"\"region\" TO \"smartregion_admin\""]
        );
    }

    #[test]
    fn names_are_unique_and_hazards_say_what_a_tenant_could_do() {
        let mut names: Vec<&str> = CHECKS.iter().map(|check| check.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
        for check in CHECKS {
            assert!(
                check
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                check.name
            );
            assert!(check.query.starts_with("SELECT "), "{}", check.name);
        }
    }
}
