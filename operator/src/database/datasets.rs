//! Open data in the database (pure): the names and statements by which anyone may read
//! exactly what a `SmartRegionDataset` publishes — whole buckets of its period, never a
//! raw row — and nothing else of the tenant.
//!
//! The shape: a schema `o_<tenant>` owned by the tenant's owner role, holding per dataset
//! a function `o_<tenant>.<dataset>(from, to)` that returns, for the buckets of the
//! declared period that start in `[from, to)`, each published series' count, sum, min
//! and max (whole buckets: the range is widened to bucket boundaries inside the function,
//! so no query can ask for part of a bucket), a function `<dataset>__sensors()` listing
//! the published sensors, and a table `datasets` with each dataset's description. All
//! are readable only by the NOLOGIN role `<schema>_public`, which the tenant's reader is
//! a member of: the read service answers anonymous requests after `SET LOCAL ROLE` to it,
//! so the database refuses them anything else, whatever the service does.
//!
//! Functions, not views: a range on a grouped view's bucket column is not pushed down as
//! a range on the measurements' time (PostgreSQL's `date_bin` is not indexable), so every
//! anonymous request would aggregate the whole table. The functions are `SECURITY
//! DEFINER` (they read as the owner) with the search path pinned.
//!
//! The schema is made anew, in one transaction, whenever what is declared changes or what
//! is found differs from what was made (a digest of both is kept as the schema's comment):
//! datasets are few per tenant, and readers see the old or the new set, never a mix.

use postgres_protocol::escape::escape_literal;
use smartregion_contract::tenant;

use super::names::{TenantDb, quote};
use super::shares::{self, Share};

/// An open dataset as the database needs it, from a validated `SmartRegionDataset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Its `metadata.name` (a DNS label).
    pub name: String,
    /// The rows it publishes, as a share would declare them.
    pub rows: Share,
    /// The bucket period, in seconds.
    pub period_seconds: i64,
    /// Its description for the catalogue, as JSON.
    pub metadata: serde_json::Value,
}

/// `o_<tenant>`.
pub fn schema(db: &TenantDb) -> String {
    format!("o_{}", &db.schema[2..])
}

/// The role anonymous reads run as.
pub fn public_role(db: &TenantDb) -> String {
    tenant::public_role(&db.schema)
}

/// `o_<tenant>.<dataset>`, as the status says.
pub fn read_as(db: &TenantDb, dataset: &str) -> String {
    format!("{}.{}", schema(db), tenant::open_function(dataset))
}

/// The start of the bucket of `time`: TimescaleDB's `time_bucket` where the extension is
/// (in the schema given), else `date_bin` with its origin; the same buckets either way.
fn bucket(period_seconds: i64, time: &str, timescaledb: Option<&str>) -> String {
    match timescaledb {
        Some(extension) => format!(
            "{}.time_bucket(INTERVAL '{period_seconds} seconds', {time})",
            quote(extension)
        ),
        None => format!(
            "pg_catalog.date_bin(INTERVAL '{period_seconds} seconds', {time}, TIMESTAMPTZ '2000-01-03 00:00:00+00')"
        ),
    }
}

/// The first bucket boundary at or after `time`.
fn boundary_at_or_after(period_seconds: i64, time: &str, timescaledb: Option<&str>) -> String {
    format!(
        "({} + INTERVAL '{period_seconds} seconds')",
        bucket(
            period_seconds,
            &format!("({time} - INTERVAL '1 microsecond')"),
            timescaledb
        )
    )
}

/// The statements that make the schema as declared, run by the admin in one transaction
/// (after the public role exists and the reader is a member): everything dropped and
/// made anew. `admin` is the role to return to after acting as the owner.
pub fn statements(
    db: &TenantDb,
    datasets: &[Dataset],
    timescaledb: Option<&str>,
    admin: &str,
) -> Vec<String> {
    let open = quote(&schema(db));
    let (tables, owner, public) = (quote(&db.schema), quote(&db.owner), quote(&public_role(db)));
    let mut statements = vec![
        format!("DROP SCHEMA IF EXISTS {open} CASCADE"),
        format!("CREATE SCHEMA {open} AUTHORIZATION {owner}"),
        format!("REVOKE ALL ON SCHEMA {open} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {open} TO {public}"),
        super::sql::as_role(&db.owner),
        format!("CREATE TABLE {open}.datasets (name text PRIMARY KEY, metadata jsonb NOT NULL)"),
        format!("REVOKE ALL ON {open}.datasets FROM PUBLIC"),
        format!("GRANT SELECT ON {open}.datasets TO {public}"),
    ];
    for dataset in datasets {
        let period = dataset.period_seconds;
        let function = format!("{open}.{}", quote(&tenant::open_function(&dataset.name)));
        let sensors = format!(
            "{open}.{}",
            quote(&tenant::open_sensors_function(&dataset.name))
        );
        statements.push(format!(
            "INSERT INTO {open}.datasets VALUES ({}, {}::jsonb)",
            escape_literal(&dataset.name),
            escape_literal(&dataset.metadata.to_string())
        ));
        let series = format!(
            "SELECT m.sensor, m.metric, {bucket} AS time, count(*), sum(m.value), min(m.value), max(m.value) \
             FROM {tables}.measurements m \
             WHERE m.time >= {from} AND m.time < {to} AND {filter} \
             GROUP BY 1, 2, 3",
            bucket = bucket(period, "m.time", timescaledb),
            from = boundary_at_or_after(period, "from_time", timescaledb),
            to = boundary_at_or_after(period, "to_time", timescaledb),
            filter = shares::rows(&dataset.rows, "m"),
        );
        statements.push(format!(
            "CREATE FUNCTION {function}(from_time timestamptz, to_time timestamptz) \
             RETURNS TABLE (sensor text, metric text, \"time\" timestamptz, count bigint, \
                            sum double precision, min double precision, max double precision) \
             LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp \
             AS {}",
            escape_literal(&series)
        ));
        let catalogue = format!(
            "SELECT s.id, s.name FROM {tables}.sensors s \
             WHERE {} AND EXISTS (SELECT 1 FROM {tables}.measurements m WHERE m.sensor = s.id AND {})",
            shares::one_of("s.id", &dataset.rows.sensors, &dataset.rows.sensor_prefixes),
            shares::rows(&dataset.rows, "m")
        );
        statements.push(format!(
            "CREATE FUNCTION {sensors}() RETURNS TABLE (id text, name text) \
             LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp \
             AS {}",
            escape_literal(&catalogue)
        ));
        for signature in [
            format!("{function}(timestamptz, timestamptz)"),
            format!("{sensors}()"),
        ] {
            statements.push(format!(
                "REVOKE ALL ON FUNCTION {signature} FROM PUBLIC; \
                 GRANT EXECUTE ON FUNCTION {signature} TO {public}"
            ));
        }
    }
    statements.push(super::sql::as_role(admin));
    statements
}

/// A digest of what the schema is to be: kept in its comment, so a changed dataset is
/// seen without reading anything else.
pub fn digest(db: &TenantDb, datasets: &[Dataset], timescaledb: Option<&str>) -> String {
    // The admin's name is not part of what is made.
    short_digest(&statements(db, datasets, timescaledb, "admin").join(";"))
}

/// The first 12 bytes of a SHA-256, in hex.
pub fn short_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .take(12)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The schema's comment: the declared digest and the digest of the catalog as made.
pub fn comment(declared: &str, found: &str) -> String {
    format!("smartregion open {declared} {found}")
}

/// What the catalog says of the schema's functions, tables and grants, as one text to
/// digest; `$1` the open schema, `$2` the public role, `$3` the reader. One row; no row
/// when the schema does not exist.
pub const FOUND: &str = "\
    SELECT obj_description(n.oid, 'pg_namespace'), \
           coalesce(n.nspacl::text, '') || '|' || pg_get_userbyid(n.nspowner) || '|' || \
           coalesce((SELECT string_agg(p.proname || ':' || pg_get_functiondef(p.oid) || ':' || \
                            coalesce(p.proacl::text, ''), ';' ORDER BY p.proname) \
                     FROM pg_proc p WHERE p.pronamespace = n.oid), '') || '|' || \
           coalesce((SELECT string_agg(c.relname || ':' || c.relkind::text || ':' || coalesce(c.relacl::text, ''), \
                            ';' ORDER BY c.relname) \
                     FROM pg_class c WHERE c.relnamespace = n.oid), '') || '|' || \
           coalesce((SELECT pg_has_role($3, r.oid, 'MEMBER')::text FROM pg_roles r WHERE r.rolname = $2), 'none') \
    FROM pg_namespace n WHERE n.nspname = $1";

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(metric: &str) -> Dataset {
        Dataset {
            name: "air-quality".into(),
            rows: Share {
                name: "air-quality".into(),
                metrics: vec![metric.into()],
                metric_prefixes: vec![],
                sensors: vec![],
                sensor_prefixes: vec!["aq-".into()],
                since: None,
            },
            period_seconds: 3600,
            metadata: serde_json::json!({"title": "Aria"}),
        }
    }

    #[test]
    fn values_are_literals_inside_a_literal_body_and_identifiers_quoted() {
        let db = TenantDb::test("prato");
        let statements = statements(&db, &[dataset("pm10'$$; DROP TABLE x; --")], None, "admin");
        let function = statements
            .iter()
            .find(|s| s.starts_with("CREATE FUNCTION \"o_prato\".\"air_quality\"("))
            .expect("the series function");
        // The body is one literal: the quote inside the metric is doubled twice (once in
        // the body's literal, once more as the body is itself a literal).
        assert!(
            function.contains("pm10''''$$; DROP TABLE x; --"),
            "{function}"
        );
        assert!(function.contains("SECURITY DEFINER SET search_path = pg_catalog, pg_temp"));
        assert!(function.contains("FROM \"t_prato\".measurements m"));
        assert!(
            statements
                .iter()
                .any(|s| s.contains("GRANT EXECUTE ON FUNCTION \"o_prato\".\"air_quality\"(timestamptz, timestamptz) TO \"t_prato_public\""))
        );
        assert_eq!(read_as(&db, "air-quality"), "o_prato.air_quality");
    }

    #[test]
    fn the_range_is_widened_to_whole_buckets_of_the_period() {
        let db = TenantDb::test("prato");
        let plain = statements(&db, &[dataset("pm10")], None, "admin").join(";");
        assert!(plain.contains(
            "m.time >= (pg_catalog.date_bin(INTERVAL ''3600 seconds'', (from_time - INTERVAL ''1 microsecond''), TIMESTAMPTZ ''2000-01-03 00:00:00+00'') + INTERVAL ''3600 seconds'')"
        ), "{plain}");
        let timescale = statements(&db, &[dataset("pm10")], Some("public"), "admin").join(";");
        assert!(
            timescale.contains("\"public\".time_bucket(INTERVAL ''3600 seconds'', m.time) AS time")
        );
        assert_ne!(
            digest(&db, &[dataset("pm10")], None),
            digest(&db, &[dataset("pm25")], None)
        );
    }
}
