//! Statement text for a tenant's schema, roles and grants (pure, unit-tested).
//!
//! Every identifier goes through [`quote`]; nothing here takes free text. The
//! TimescaleDB-specific text is in [`super::timescale`], the partitions' in
//! [`super::partitions`].

use super::logins::WriterLogins;
use super::names::{TenantDb, quote};
use super::partitions::Partition;
use super::timescale::OWNER_CONNECTION_LIMIT;
use crate::crd::Storage;

/// Version of the tenant schema these statements create; recorded in `schema_version`.
pub const SCHEMA_VERSION: i32 = 1;

/// Per-role limits from the tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleLimits {
    pub connection_limit: i32,
    pub statement_timeout_ms: u32,
}

/// The login roles' `search_path`: their schema, then TimescaleDB's (so `time_bucket`,
/// `first` and `last` work unqualified) when the database has it.
pub fn search_path(db: &TenantDb, timescaledb_schema: Option<&str>) -> String {
    match timescaledb_schema {
        Some(extension) => format!("{}, {}", quote(&db.schema), quote(extension)),
        None => quote(&db.schema),
    }
}

/// The owner role's login: a hypertable's background jobs run as its owner and
/// TimescaleDB refuses owners without LOGIN, so a hypertable tenant's owner may log in —
/// with no password (password authentication always fails) and a small connection
/// limit. A partitioned tenant's owner never logs in.
pub fn owner_login_statement(db: &TenantDb, storage: Storage) -> String {
    match storage {
        Storage::Hypertable => format!(
            "ALTER ROLE {} LOGIN PASSWORD NULL CONNECTION LIMIT {OWNER_CONNECTION_LIMIT}",
            quote(&db.owner)
        ),
        Storage::Partitions => format!("ALTER ROLE {} NOLOGIN", quote(&db.owner)),
    }
}

/// Statements that bring an existing or new tenant schema to the current version.
/// Idempotent: every statement can run again on a schema that already has it. `$1` and
/// `$2` of the hypertable statement are bound by the caller ([`super::timescale::create_hypertable`]).
///
/// The writer's INSERT grant is not among them: it follows the storage quota and
/// suspension, and [`writes_statement`] alone changes it, so a re-provisioning never
/// opens a window in which ingest is refused. Nor are the hypertable's compression and
/// jobs: [`super::timescale::plan`] changes those only where they differ, so job ids and
/// schedules survive every re-provisioning.
///
/// `logins`: which of the writer's roles may log in (the others lose LOGIN here, but
/// their sessions and passwords are [`retire_login`]'s business).
///
/// `admin` is the role the statements start as (`current_user`); after the owner's
/// part they return to it with `SET LOCAL ROLE` rather than `RESET ROLE`, which would go
/// back to the session's login even where the caller had set another role.
/// (Long: the statements in the order they run, one idempotent statement a line.)
pub fn schema_statements(
    db: &TenantDb,
    limits: &RoleLimits,
    storage: Storage,
    timescaledb_schema: Option<&str>,
    logins: &WriterLogins,
    admin: &str,
) -> Vec<String> {
    let (schema, owner, writer, reader) = (
        quote(&db.schema),
        quote(&db.owner),
        quote(&db.writer),
        quote(&db.reader),
    );
    let measurements = format!("{schema}.measurements");
    let columns = "sensor text NOT NULL CHECK (length(sensor) BETWEEN 1 AND 256), \
         metric text NOT NULL CHECK (length(metric) BETWEEN 1 AND 128), \
         time timestamptz NOT NULL, \
         value double precision NOT NULL, \
         received_at timestamptz NOT NULL DEFAULT now(), \
         UNIQUE (sensor, metric, time)";
    let mut statements = vec![
        owner_login_statement(db, storage),
        format!("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}"),
        format!("ALTER SCHEMA {schema} OWNER TO {owner}"),
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
    ];
    match storage {
        // Narrow and idempotent: a retried batch hits the unique key and stores nothing new.
        Storage::Partitions => statements.extend([
            format!(
                "CREATE TABLE IF NOT EXISTS {measurements} ({columns}) PARTITION BY RANGE (time)"
            ),
            // No row is ever refused for its time: what no range partition takes lands here.
            format!(
                "CREATE TABLE IF NOT EXISTS {schema}.measurements_default \
                 PARTITION OF {measurements} DEFAULT"
            ),
        ]),
        Storage::Hypertable => statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {measurements} ({columns})"
        )),
    }
    statements.extend([
        // Readers see every table, including partitions created later. Writers get
        // INSERT on the two tables ingest fills, never by default on new tables: a
        // partition must not be a way around the quota.
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} \
             GRANT SELECT ON TABLES TO {reader}"
        ),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}"),
        format!(
            "INSERT INTO {schema}.schema_version (version) VALUES ({SCHEMA_VERSION}) \
             ON CONFLICT DO NOTHING"
        ),
        as_role(admin),
    ]);
    let search_path = search_path(db, timescaledb_schema);
    // The login roles get the writer's privileges through membership, but role settings
    // do not pass through it: each role has its own limit, timeout and search path.
    let login_roles = db.writer_logins.iter().map(|role| quote(role));
    statements.push(format!(
        "GRANT {writer} TO {}",
        login_roles.collect::<Vec<_>>().join(", ")
    ));
    let roles = db
        .writer_roles()
        .into_iter()
        .map(|role| (quote(&role), logins.enabled(&role)))
        .chain([(reader.clone(), true)]);
    for (role, login) in roles {
        let login = if login { "LOGIN" } else { "NOLOGIN" };
        statements.extend([
            format!(
                "ALTER ROLE {role} {login} INHERIT CONNECTION LIMIT {}",
                limits.connection_limit
            ),
            format!(
                "ALTER ROLE {role} SET statement_timeout = {}",
                limits.statement_timeout_ms
            ),
            // Tenants see only their own schema (and TimescaleDB's functions).
            format!("ALTER ROLE {role} SET search_path = {search_path}"),
        ]);
    }
    statements
}

/// Acts as `role` until the end of the transaction.
pub fn as_role(role: &str) -> String {
    format!("SET LOCAL ROLE {}", quote(role))
}

/// Gives or takes the writer's INSERT on the tables ingest fills (storage quota,
/// suspension). Reads are never affected.
pub fn writes_statement(db: &TenantDb, allowed: bool) -> String {
    let schema = quote(&db.schema);
    let tables = format!("{schema}.measurements, {schema}.sensors");
    let writer = quote(&db.writer);
    if allowed {
        format!("GRANT INSERT ON {tables} TO {writer}")
    } else {
        format!("REVOKE INSERT ON {tables} FROM {writer}")
    }
}

/// A role of the writer's that cannot log in yet (the writer role of a new tenant, a
/// login role before its first rotation).
pub fn create_nologin_role(role: &str) -> String {
    format!("CREATE ROLE {} NOLOGIN", quote(role))
}

/// A writer login a rotation replaced, once no pod uses it: no login, and no password
/// that a copy of the old Secret could still use.
pub fn retire_login(role: &str) -> String {
    format!("ALTER ROLE {} NOLOGIN PASSWORD NULL", quote(role))
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

/// The admin becomes a member of the tenant's roles: it creates objects as the owner,
/// ends the login roles' sessions on Retain and drops what they own on Delete, none of
/// which a non-superuser may do for a role it is not a member of.
/// `roles`: the tenant's roles that exist.
pub fn grant_roles_to_admin(roles: &[String]) -> String {
    let roles: Vec<String> = roles.iter().map(|role| quote(role)).collect();
    format!("GRANT {} TO CURRENT_USER", roles.join(", "))
}

pub fn create_owner_role(role: &str) -> String {
    format!("CREATE ROLE {} NOLOGIN", quote(role))
}

/// Creates one range partition of `measurements`, first moving into it any rows the
/// default partition holds for its range (PostgreSQL refuses to attach it otherwise).
/// `$1` and `$2` are the partition's bounds. Run as the owner role.
pub fn create_partition_statements(db: &TenantDb, partition: &Partition) -> [String; 3] {
    let schema = quote(&db.schema);
    let table = format!("{schema}.{}", quote(&partition.name()));
    let bound =
        |time: jiff::Timestamp| postgres_protocol::escape::escape_literal(&time.to_string());
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {table} \
             (LIKE {schema}.measurements INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ),
        format!(
            "WITH moved AS (DELETE FROM {schema}.measurements_default \
             WHERE time >= $1 AND time < $2 RETURNING *) \
             INSERT INTO {table} SELECT * FROM moved"
        ),
        format!(
            "ALTER TABLE {schema}.measurements ATTACH PARTITION {table} \
             FOR VALUES FROM ({}) TO ({})",
            bound(partition.start),
            bound(partition.end)
        ),
    ]
}

pub fn drop_partition_statement(db: &TenantDb, partition: &Partition) -> String {
    format!(
        "DROP TABLE IF EXISTS {}.{}",
        quote(&db.schema),
        quote(&partition.name())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(storage: Storage) -> Vec<String> {
        let db = TenantDb::test("select");
        let limits = RoleLimits {
            connection_limit: 10,
            statement_timeout_ms: 30_000,
        };
        let timescaledb = (storage == Storage::Hypertable).then_some("public");
        let logins = WriterLogins {
            active: db.writer_logins[1].clone(),
            retiring: vec![db.writer.clone()],
        };
        schema_statements(
            &db,
            &limits,
            storage,
            timescaledb,
            &logins,
            "smartregion_admin",
        )
    }

    #[test]
    fn every_identifier_is_quoted_even_keywords() {
        for storage in [Storage::Partitions, Storage::Hypertable] {
            for statement in statements(storage) {
                assert!(!statement.contains(" t_select"), "unquoted: {statement}");
            }
        }
    }

    #[test]
    fn the_measurements_table_is_idempotent_and_never_refuses_a_time() {
        let all = statements(Storage::Partitions).join(";\n");
        assert!(all.contains("UNIQUE (sensor, metric, time)) PARTITION BY RANGE (time)"));
        assert!(all.contains("PARTITION OF \"t_select\".measurements DEFAULT"));
        assert!(all.contains("REVOKE ALL ON SCHEMA \"t_select\" FROM PUBLIC"));
        assert!(!all.contains("create_hypertable"));
    }

    #[test]
    fn a_hypertable_tenant_gets_a_plain_table_and_an_owner_that_can_run_jobs() {
        let statements = statements(Storage::Hypertable);
        let all = statements.join(";\n");
        assert!(!all.contains("PARTITION"));
        assert!(all.contains("CREATE TABLE IF NOT EXISTS \"t_select\".measurements (sensor"));
        assert_eq!(
            statements[0],
            "ALTER ROLE \"t_select_owner\" LOGIN PASSWORD NULL CONNECTION LIMIT 4"
        );
        assert!(
            all.contains("SET search_path = \"t_select\", \"public\""),
            "{all}"
        );
        let partitioned = statements_for_partitions();
        assert_eq!(partitioned[0], "ALTER ROLE \"t_select_owner\" NOLOGIN");
    }

    fn statements_for_partitions() -> Vec<String> {
        statements(Storage::Partitions)
    }

    #[test]
    fn each_writer_role_has_its_own_settings_and_only_the_wanted_ones_log_in() {
        let all = statements(Storage::Partitions).join(";\n");
        assert!(
            all.contains(
                "GRANT \"t_select_writer\" TO \"t_select_writer_1\", \"t_select_writer_2\""
            )
        );
        for (role, login) in [
            ("t_select_writer", "LOGIN"),
            ("t_select_writer_1", "NOLOGIN"),
            ("t_select_writer_2", "LOGIN"),
            ("t_select_reader", "LOGIN"),
        ] {
            assert!(
                all.contains(&format!(
                    "ALTER ROLE \"{role}\" {login} INHERIT CONNECTION LIMIT 10"
                )),
                "{role}: {all}"
            );
            assert!(all.contains(&format!(
                "ALTER ROLE \"{role}\" SET statement_timeout = 30000"
            )));
            assert!(all.contains(&format!(
                "ALTER ROLE \"{role}\" SET search_path = \"t_select\""
            )));
        }
        assert_eq!(
            retire_login("t_select_writer_1"),
            "ALTER ROLE \"t_select_writer_1\" NOLOGIN PASSWORD NULL"
        );
    }

    #[test]
    fn writers_never_get_insert_by_default_privileges() {
        let all = statements(Storage::Partitions).join(";\n");
        assert!(!all.contains("GRANT INSERT"), "{all}");
        let db = TenantDb::test("prato");
        assert_eq!(
            writes_statement(&db, false),
            "REVOKE INSERT ON \"t_prato\".measurements, \"t_prato\".sensors FROM \"t_prato_writer\""
        );
    }

    #[test]
    fn a_partition_takes_its_rows_from_the_default_partition() {
        let db = TenantDb::test("prato");
        let partition = Partition {
            start: "2026-11-23T00:00:00Z".parse().unwrap(),
            end: "2026-11-24T00:00:00Z".parse().unwrap(),
        };
        let [create, moved, attach] = create_partition_statements(&db, &partition);
        assert!(create.contains("\"t_prato\".\"measurements_p2026112300_2026112400\""));
        assert!(moved.contains(
            "DELETE FROM \"t_prato\".measurements_default WHERE time >= $1 AND time < $2"
        ));
        assert!(
            attach
                .ends_with("FOR VALUES FROM ('2026-11-23T00:00:00Z') TO ('2026-11-24T00:00:00Z')")
        );
    }

    #[test]
    fn passwords_only_travel_as_verifiers() {
        let verifier = super::super::scram_verifier("hunter2hunter2hunter2hunter2hunter2");
        let statement = create_login_role("t_a_writer", &verifier);
        assert!(!statement.contains("hunter2"));
        assert!(statement.contains("SCRAM-SHA-256$"));
    }
}
