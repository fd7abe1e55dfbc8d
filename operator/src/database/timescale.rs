//! Statement text for the TimescaleDB path (pure, unit-tested as text).
//!
//! TimescaleDB cannot be installed on the development and CI machines, so these statements
//! are checked as text only; `docs/database.md` says so. They follow TimescaleDB 2.13+
//! (`by_range`, `if_exists`/`if_not_exists` on the policy functions).

use super::names::{TenantDb, quote};
use postgres_protocol::escape::escape_literal;

/// Storage settings of one tenant's hypertable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypertableSettings {
    pub chunk_interval_hours: i32,
    pub retention_days: i32,
    pub compress_after_days: i32,
}

/// `'"t_x".measurements'`: the hypertable as the regclass argument TimescaleDB's
/// functions take.
fn regclass(db: &TenantDb) -> String {
    escape_literal(&format!("{}.measurements", quote(&db.schema)))
}

/// Turns the (plain, not partitioned) `measurements` table into a hypertable and sets its
/// policies. Run as the owner role, except the policies (see [`policy_statements`]).
pub fn hypertable_statements(db: &TenantDb, settings: &HypertableSettings) -> Vec<String> {
    let table = regclass(db);
    let interval = format!("INTERVAL '{} hours'", settings.chunk_interval_hours);
    vec![
        format!(
            "SELECT create_hypertable({table}, by_range('time', {interval}), if_not_exists => TRUE)"
        ),
        format!("SELECT set_chunk_time_interval({table}, {interval})"),
        // Segmenting by series keeps one sensor's metric together, which is how
        // dashboards read it, and compresses similar values side by side.
        format!(
            "ALTER TABLE {}.measurements SET (timescaledb.compress, \
             timescaledb.compress_segmentby = 'sensor, metric', \
             timescaledb.compress_orderby = 'time DESC')",
            quote(&db.schema)
        ),
    ]
}

/// Retention and compression policies, replaced so a changed setting takes effect.
/// Run as the operator's admin role (a member of the owner role): background jobs run as
/// their owner, and the NOLOGIN owner role could not start them.
pub fn policy_statements(db: &TenantDb, settings: &HypertableSettings) -> Vec<String> {
    let table = regclass(db);
    vec![
        format!("SELECT remove_retention_policy({table}, if_exists => TRUE)"),
        format!(
            "SELECT add_retention_policy({table}, drop_after => INTERVAL '{} days')",
            settings.retention_days
        ),
        format!("SELECT remove_compression_policy({table}, if_exists => TRUE)"),
        format!(
            "SELECT add_compression_policy({table}, compress_after => INTERVAL '{} days')",
            settings.compress_after_days
        ),
    ]
}

/// Bytes used by the tenant: the hypertable with its chunks (which live in TimescaleDB's
/// internal schema, not the tenant's), plus every other table of the schema. `$1` is the
/// schema name.
pub fn usage_query(db: &TenantDb) -> String {
    format!(
        "SELECT (coalesce(hypertable_size({}), 0) + \
         coalesce((SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = $1 AND c.relkind IN ('r', 'm') AND c.relname <> 'measurements'), 0))::bigint",
        regclass(db)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HypertableSettings {
        HypertableSettings {
            chunk_interval_hours: 24,
            retention_days: 365,
            compress_after_days: 7,
        }
    }

    #[test]
    fn the_hypertable_uses_the_tier_interval_and_a_quoted_regclass() {
        let db = TenantDb::for_tenant("select").unwrap();
        let statements = hypertable_statements(&db, &settings());
        assert_eq!(
            statements[0],
            "SELECT create_hypertable('\"t_select\".measurements', by_range('time', INTERVAL '24 hours'), if_not_exists => TRUE)"
        );
        assert!(statements[2].contains("timescaledb.compress_segmentby = 'sensor, metric'"));
        assert!(statements[2].starts_with("ALTER TABLE \"t_select\".measurements SET"));
    }

    #[test]
    fn policies_are_replaced_with_the_configured_intervals() {
        let db = TenantDb::for_tenant("unione-mugello").unwrap();
        let statements = policy_statements(&db, &settings());
        assert_eq!(
            statements,
            [
                "SELECT remove_retention_policy('\"t_unione_mugello\".measurements', if_exists => TRUE)",
                "SELECT add_retention_policy('\"t_unione_mugello\".measurements', drop_after => INTERVAL '365 days')",
                "SELECT remove_compression_policy('\"t_unione_mugello\".measurements', if_exists => TRUE)",
                "SELECT add_compression_policy('\"t_unione_mugello\".measurements', compress_after => INTERVAL '7 days')",
            ]
        );
    }

    #[test]
    fn usage_counts_the_hypertable_once_and_binds_the_schema() {
        let db = TenantDb::for_tenant("prato").unwrap();
        let query = usage_query(&db);
        assert!(query.contains("hypertable_size('\"t_prato\".measurements')"));
        assert!(query.contains("n.nspname = $1"));
        assert!(query.contains("c.relname <> 'measurements'"));
    }
}
