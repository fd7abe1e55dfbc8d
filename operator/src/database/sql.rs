//! Statement text for a tenant's schema on plain PostgreSQL (pure, unit-tested).
//!
//! Every identifier goes through [`quote`]; nothing here takes free text.

use super::names::{TenantDb, quote};

/// Version of the tenant schema these statements create; recorded in `schema_version`.
pub const SCHEMA_VERSION: i32 = 1;

/// Per-role limits from the tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleLimits {
    pub connection_limit: i32,
    pub statement_timeout_ms: u32,
}

/// Statements that bring an existing or new tenant schema to the current version.
/// Idempotent: every statement can run again on a schema that already has it.
pub fn schema_statements(db: &TenantDb, limits: &RoleLimits) -> Vec<String> {
    let (schema, owner, writer, reader) = (
        quote(&db.schema),
        quote(&db.owner),
        quote(&db.writer),
        quote(&db.reader),
    );
    let measurements = format!("{schema}.measurements");
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {writer}, {reader}"),
        // Objects are created as the owner role, so they belong to it, not to the admin.
        format!("SET LOCAL ROLE {owner}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.schema_version (\
             version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now())"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.sensors (\
             id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 256), \
             name text, \
             metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb, \
             created_at timestamptz NOT NULL DEFAULT now())"
        ),
        // Narrow and idempotent: a retried batch hits the unique key and stores nothing new.
        format!(
            "CREATE TABLE IF NOT EXISTS {measurements} (\
             sensor text NOT NULL CHECK (length(sensor) BETWEEN 1 AND 256), \
             metric text NOT NULL CHECK (length(metric) BETWEEN 1 AND 128), \
             time timestamptz NOT NULL, \
             value double precision NOT NULL, \
             received_at timestamptz NOT NULL DEFAULT now(), \
             UNIQUE (sensor, metric, time)) PARTITION BY RANGE (time)"
        ),
        // No row is ever refused for its time: what no range partition takes lands here.
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.measurements_default \
             PARTITION OF {measurements} DEFAULT"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} \
             GRANT SELECT ON TABLES TO {reader}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} \
             GRANT INSERT ON TABLES TO {writer}"
        ),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}"),
        format!("GRANT INSERT ON {measurements}, {schema}.sensors TO {writer}"),
        format!("REVOKE ALL ON {schema}.schema_version FROM {writer}"),
        format!(
            "INSERT INTO {schema}.schema_version (version) VALUES ({SCHEMA_VERSION}) \
             ON CONFLICT DO NOTHING"
        ),
        "RESET ROLE".to_string(),
        format!(
            "ALTER ROLE {writer} CONNECTION LIMIT {}",
            limits.connection_limit
        ),
        format!(
            "ALTER ROLE {reader} CONNECTION LIMIT {}",
            limits.connection_limit
        ),
        format!(
            "ALTER ROLE {writer} SET statement_timeout = {}",
            limits.statement_timeout_ms
        ),
        format!(
            "ALTER ROLE {reader} SET statement_timeout = {}",
            limits.statement_timeout_ms
        ),
        // Tenants see only their own schema: nothing in public, no temp tables.
        format!("ALTER ROLE {writer} SET search_path = {schema}"),
        format!("ALTER ROLE {reader} SET search_path = {schema}"),
    ]
}

/// `CREATE ROLE` for a login role whose password is given as a SCRAM verifier.
pub fn create_login_role(role: &str, verifier: &str) -> String {
    format!(
        "CREATE ROLE {} LOGIN PASSWORD {}",
        quote(role),
        postgres_protocol::escape::escape_literal(verifier)
    )
}

/// New password (as a SCRAM verifier) for an existing login role.
pub fn set_password(role: &str, verifier: &str) -> String {
    format!(
        "ALTER ROLE {} LOGIN PASSWORD {}",
        quote(role),
        postgres_protocol::escape::escape_literal(verifier)
    )
}

pub fn create_owner_role(role: &str) -> String {
    format!("CREATE ROLE {} NOLOGIN", quote(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements() -> Vec<String> {
        let db = TenantDb::for_tenant("select").unwrap();
        schema_statements(
            &db,
            &RoleLimits {
                connection_limit: 10,
                statement_timeout_ms: 30_000,
            },
        )
    }

    #[test]
    fn every_identifier_is_quoted_even_keywords() {
        for statement in statements() {
            assert!(!statement.contains(" t_select"), "unquoted: {statement}");
        }
    }

    #[test]
    fn the_measurements_table_is_idempotent_and_never_refuses_a_time() {
        let all = statements().join(";\n");
        assert!(all.contains("UNIQUE (sensor, metric, time)"));
        assert!(all.contains("PARTITION OF \"t_select\".measurements DEFAULT"));
        assert!(all.contains("REVOKE ALL ON SCHEMA \"t_select\" FROM PUBLIC"));
    }

    #[test]
    fn passwords_only_travel_as_verifiers() {
        let verifier = super::super::scram_verifier("hunter2hunter2hunter2hunter2hunter2");
        let statement = create_login_role("t_a_writer", &verifier);
        assert!(!statement.contains("hunter2"));
        assert!(statement.contains("SCRAM-SHA-256$"));
    }
}
