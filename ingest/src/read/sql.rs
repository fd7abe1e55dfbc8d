//! The SQL a read query runs: its text, with identifiers quoted and every value the
//! client gave bound as a parameter (only numbers the service checked itself are
//! written into the text). Pure.
//!
//! Rows come ordered by the measurements' unique key (sensor, metric, time), or by
//! (sensor, metric, bucket start) when aggregated, so a page is a range of that key:
//! [`page_end`] finds the key of the first row after the page, [`series`] reads the rows
//! from the cursor up to it.

use jiff::Timestamp;
use postgres_protocol::escape::escape_identifier as quote;
use tokio_postgres::types::ToSql;

use super::query::{Aggregation, Method, SeriesQuery};
use smartregion_contract::tenant;

/// A value bound to a statement's parameter.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// A statement's text and its parameters.
pub struct Statement {
    pub text: String,
    pub params: Vec<Param>,
}

impl Statement {
    /// The parameters as tokio-postgres takes them.
    pub fn params(&self) -> impl ExactSizeIterator<Item = &(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|param| param.as_ref() as &(dyn ToSql + Sync))
    }
}

/// What the rows are read from: the tenant's own tables, a share's views, or an open
/// dataset's functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `"schema"."table"` of the measurements (for an open dataset, its function called
    /// with the range's bounds `$1` and `$2`).
    pub measurements: String,
    /// `"schema"."table"` of the sensor catalogue.
    pub sensors: String,
    /// The providing tenant of a share; `None` for the tenant's own data.
    pub provider: Option<String>,
    /// An open dataset: its rows are buckets of its period with `count, sum, min, max`,
    /// read as the tenant's public role.
    pub open: Option<Open>,
}

/// An open dataset as the read service reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// Its name (a DNS label, checked).
    pub dataset: String,
    /// `"o_<tenant>"."datasets"`, its description.
    pub datasets: String,
    /// The role anonymous reads run as (`SET LOCAL ROLE`), quoted.
    pub role: String,
}

impl Source {
    /// The tenant's own tables in `schema`.
    pub fn own(schema: &str) -> Source {
        Source {
            measurements: format!("{}.measurements", quote(schema)),
            sensors: format!("{}.sensors", quote(schema)),
            provider: None,
            open: None,
        }
    }

    /// The open dataset `dataset` (already checked as a DNS label) of the tenant whose
    /// schema is `schema`: what its public role may read of it.
    pub fn open(tenant_name: &str, schema: &str, dataset: &str) -> Source {
        let open = quote(&tenant::open_schema_of_checked(tenant_name));
        Source {
            measurements: format!("{open}.{}($1, $2)", quote(&tenant::open_function(dataset))),
            sensors: format!(
                "{open}.{}()",
                quote(&tenant::open_sensors_function(dataset))
            ),
            provider: None,
            open: Some(Open {
                dataset: dataset.to_string(),
                datasets: format!("{open}.datasets"),
                role: quote(&tenant::public_role(schema)),
            }),
        }
    }

    /// The views of the share `share` of the tenant `provider` (both already checked as
    /// tenant and share names): what the database lets this tenant's reader read of it.
    pub fn shared(provider: &str, share: &str) -> Source {
        let schema = quote(&tenant::share_schema_of_checked(provider));
        Source {
            measurements: format!("{schema}.{}", quote(&tenant::share_view(share))),
            sensors: format!("{schema}.{}", quote(&tenant::share_sensors_view(share))),
            provider: Some(provider.to_string()),
            open: None,
        }
    }
}

/// How buckets and first/last are computed: with TimescaleDB's functions where the
/// extension is installed (in the schema given), else with PostgreSQL's own; both give
/// the same answers (buckets start at multiples of the period from 2000-01-03 00:00 UTC,
/// TimescaleDB's origin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flavour {
    TimescaleDb { schema: String },
    Plain,
}

/// The key of a row: where a page starts or ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub sensor: String,
    pub metric: String,
    pub time: Timestamp,
}

/// The first row after `query`'s page: `SELECT sensor, metric, time` (or bucket), at
/// most one row; none when the page is the last.
pub fn page_end(source: &Source, flavour: &Flavour, query: &SeriesQuery) -> Statement {
    let mut params = Vec::new();
    let filter = filter(query, None, &mut params);
    let text = match &query.aggregation {
        None => format!(
            "SELECT sensor, metric, time FROM {} WHERE {filter} \
             ORDER BY sensor, metric, time OFFSET {} LIMIT 1",
            source.measurements, query.limit
        ),
        Some(aggregation) => format!(
            "SELECT sensor, metric, {} FROM {} WHERE {filter} \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 OFFSET {} LIMIT 1",
            bucket(flavour, aggregation),
            source.measurements,
            query.limit
        ),
    };
    Statement { text, params }
}

/// The page's rows: `sensor, metric, time` then `value`, or one column per aggregate
/// method in the query's order (`count` as bigint, the others double precision).
pub fn series(
    source: &Source,
    flavour: &Flavour,
    query: &SeriesQuery,
    end: Option<&Key>,
) -> Statement {
    let mut params = Vec::new();
    let filter = filter(query, end, &mut params);
    let text = match &query.aggregation {
        None => format!(
            "SELECT sensor, metric, time, value FROM {} WHERE {filter} \
             ORDER BY sensor, metric, time",
            source.measurements
        ),
        Some(aggregation) => {
            let columns: Vec<String> = aggregation
                .methods
                .iter()
                .map(|method| match source.open {
                    None => aggregate(flavour, *method),
                    Some(_) => reaggregate(*method),
                })
                .collect();
            format!(
                "SELECT sensor, metric, {}, {} FROM {} WHERE {filter} \
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                bucket(flavour, aggregation),
                columns.join(", "),
                source.measurements
            )
        }
    };
    Statement { text, params }
}

/// The rows of the query's range, from its cursor and before `end`.
fn filter(query: &SeriesQuery, end: Option<&Key>, params: &mut Vec<Param>) -> String {
    let mut next = |param: Param| {
        params.push(param);
        format!("${}", params.len())
    };
    let mut clauses = vec![
        format!("time >= {}", next(Box::new(query.from))),
        format!("time < {}", next(Box::new(query.to))),
    ];
    if !query.sensors.is_empty() {
        clauses.push(format!(
            "sensor = ANY({})",
            next(Box::new(query.sensors.clone()))
        ));
    }
    if !query.metrics.is_empty() {
        clauses.push(format!(
            "metric = ANY({})",
            next(Box::new(query.metrics.clone()))
        ));
    }
    if let Some(cursor) = &query.cursor {
        clauses.push(format!(
            "(sensor, metric, time) >= ({}, {}, {})",
            next(Box::new(cursor.sensor.clone())),
            next(Box::new(cursor.metric.clone())),
            next(Box::new(cursor.time)),
        ));
    }
    if let Some(end) = end {
        // Rows of a bucket have times at or after its start, so the bucket's key bounds
        // its rows as a row's key bounds itself.
        clauses.push(format!(
            "(sensor, metric, time) < ({}, {}, {})",
            next(Box::new(end.sensor.clone())),
            next(Box::new(end.metric.clone())),
            next(Box::new(end.time)),
        ));
    }
    clauses.join(" AND ")
}

/// The start of a row's bucket: `$1` (the range's start) for one bucket over the whole
/// range. The period is a whole number of seconds the service checked.
fn bucket(flavour: &Flavour, aggregation: &Aggregation) -> String {
    let seconds = aggregation.period.as_secs();
    if seconds == 0 {
        return "$1::timestamptz".to_string();
    }
    match flavour {
        Flavour::TimescaleDb { schema } => format!(
            "{}.time_bucket(INTERVAL '{seconds} seconds', time)",
            quote(schema)
        ),
        Flavour::Plain => format!(
            "date_bin(INTERVAL '{seconds} seconds', time, TIMESTAMPTZ '2000-01-03 00:00:00+00')"
        ),
    }
}

fn aggregate(flavour: &Flavour, method: Method) -> String {
    match (method, flavour) {
        (Method::Avg, _) => "avg(value)".to_string(),
        (Method::Min, _) => "min(value)".to_string(),
        (Method::Max, _) => "max(value)".to_string(),
        (Method::Sum, _) => "sum(value)".to_string(),
        (Method::Count, _) => "count(*)".to_string(),
        (Method::First, Flavour::TimescaleDb { schema }) => {
            format!("{}.first(value, time)", quote(schema))
        }
        (Method::Last, Flavour::TimescaleDb { schema }) => {
            format!("{}.last(value, time)", quote(schema))
        }
        (Method::First, Flavour::Plain) => "(array_agg(value ORDER BY time))[1]".to_string(),
        (Method::Last, Flavour::Plain) => "(array_agg(value ORDER BY time DESC))[1]".to_string(),
    }
}

/// An aggregate of an open dataset's buckets (`count, sum, min, max` each): the buckets
/// of a coarser period are whole buckets of the published one, so these are exact.
/// First and last are not published.
fn reaggregate(method: Method) -> String {
    match method {
        Method::Avg => "sum(sum) / sum(count)".to_string(),
        Method::Min => "min(min)".to_string(),
        Method::Max => "max(max)".to_string(),
        Method::Sum => "sum(sum)".to_string(),
        Method::Count => "sum(count)::bigint".to_string(),
        Method::First | Method::Last => "NULL::double precision".to_string(),
    }
}

/// The sensor after the catalogue's page, if any.
pub fn catalogue_end(source: &Source, after: Option<&str>, limit: usize) -> Statement {
    let mut params: Vec<Param> = Vec::new();
    let from = match after {
        Some(sensor) => {
            params.push(Box::new(sensor.to_string()));
            "WHERE id >= $1 "
        }
        None => "",
    };
    Statement {
        text: format!(
            "SELECT id FROM {} {from}ORDER BY id OFFSET {limit} LIMIT 1",
            source.sensors
        ),
        params,
    }
}

/// A page of the sensor catalogue, with each sensor's metrics and the time and value of
/// each one's last measurement: `id, name, metadata (text), metric, time, value`, a row
/// per sensor and metric (metric, time and value null for a sensor with none). The
/// metrics are found by skipping through the unique key's index, not by reading every
/// measurement.
pub fn catalogue(
    source: &Source,
    after: Option<&str>,
    end: Option<&str>,
    limit: usize,
) -> Statement {
    let mut params: Vec<Param> = Vec::new();
    let mut clauses = Vec::new();
    if let Some(sensor) = after {
        params.push(Box::new(sensor.to_string()));
        clauses.push(format!("id >= ${}", params.len()));
    }
    if let Some(sensor) = end {
        params.push(Box::new(sensor.to_string()));
        clauses.push(format!("id < ${}", params.len()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", clauses.join(" AND "))
    };
    let (sensors, measurements) = (&source.sensors, &source.measurements);
    if source.open.is_some() {
        // The published sensors only; their last raw values are not published.
        return Statement {
            text: format!(
                "SELECT id, name, NULL::text, NULL::text, NULL::timestamptz, NULL::double precision \
                 FROM {sensors} {filter}ORDER BY id LIMIT {limit}"
            ),
            params,
        };
    }
    Statement {
        text: format!(
            "WITH RECURSIVE page AS ( \
               SELECT id, name, metadata FROM {sensors} {filter}ORDER BY id LIMIT {limit} \
             ), metrics(sensor, metric) AS ( \
               SELECT page.id, (SELECT min(m.metric) FROM {measurements} m WHERE m.sensor = page.id) \
               FROM page \
               UNION ALL \
               SELECT metrics.sensor, (SELECT min(m.metric) FROM {measurements} m \
                 WHERE m.sensor = metrics.sensor AND m.metric > metrics.metric) \
               FROM metrics WHERE metrics.metric IS NOT NULL \
             ) \
             SELECT page.id, page.name, page.metadata::text, metrics.metric, last.time, last.value \
             FROM page \
             LEFT JOIN metrics ON metrics.sensor = page.id AND metrics.metric IS NOT NULL \
             LEFT JOIN LATERAL (SELECT m.time, m.value FROM {measurements} m \
               WHERE m.sensor = page.id AND m.metric = metrics.metric \
               ORDER BY m.time DESC LIMIT 1) last ON true \
             ORDER BY page.id, metrics.metric"
        ),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::cursor::Cursor;
    use crate::read::query::Format;
    use jiff::SignedDuration;

    fn query(aggregation: Option<Aggregation>) -> SeriesQuery {
        SeriesQuery {
            sensors: vec!["s1".into()],
            metrics: vec![],
            from: "2026-01-01T00:00:00Z".parse().unwrap(),
            to: "2026-01-02T00:00:00Z".parse().unwrap(),
            aggregation,
            limit: 500,
            cursor: None,
            format: Format::Json,
        }
    }

    #[test]
    fn values_are_bound_and_identifiers_quoted() {
        let source = Source::shared("select", "order-by");
        assert_eq!(source.measurements, "\"s_select\".\"order_by\"");
        let mut paged = query(None);
        paged.cursor = Some(Cursor {
            query: paged.fingerprint(),
            sensor: "x'; DROP TABLE y; --".into(),
            metric: "m".into(),
            time: paged.from,
            from: paged.from,
            to: paged.to,
        });
        let statement = series(&source, &Flavour::Plain, &paged, None);
        assert!(!statement.text.contains("DROP"), "{}", statement.text);
        assert_eq!(statement.params.len(), 6);
        assert!(
            statement
                .text
                .contains("(sensor, metric, time) >= ($4, $5, $6)")
        );
        let end = page_end(&Source::own("t_prato"), &Flavour::Plain, &query(None));
        assert!(end.text.contains("FROM \"t_prato\".measurements"));
        assert!(end.text.ends_with("OFFSET 500 LIMIT 1"), "{}", end.text);
    }

    #[test]
    fn buckets_use_timescaledb_where_present_with_its_origin_elsewhere() {
        let hourly = Aggregation {
            methods: vec![Method::Avg, Method::First, Method::Count],
            period: SignedDuration::from_hours(1),
        };
        let timescale = Flavour::TimescaleDb {
            schema: "public".into(),
        };
        let text = series(
            &Source::own("t_a"),
            &timescale,
            &query(Some(hourly.clone())),
            None,
        )
        .text;
        assert!(
            text.contains("\"public\".time_bucket(INTERVAL '3600 seconds', time)"),
            "{text}"
        );
        assert!(text.contains("\"public\".first(value, time)"), "{text}");
        let text = series(
            &Source::own("t_a"),
            &Flavour::Plain,
            &query(Some(hourly)),
            None,
        )
        .text;
        assert!(
            text.contains(
                "date_bin(INTERVAL '3600 seconds', time, TIMESTAMPTZ '2000-01-03 00:00:00+00')"
            ),
            "{text}"
        );
        assert!(
            text.contains("(array_agg(value ORDER BY time))[1]"),
            "{text}"
        );
        let whole = Aggregation {
            methods: vec![Method::Max],
            period: SignedDuration::ZERO,
        };
        let text = series(
            &Source::own("t_a"),
            &Flavour::Plain,
            &query(Some(whole)),
            None,
        )
        .text;
        assert!(
            text.contains("SELECT sensor, metric, $1::timestamptz, max(value)"),
            "{text}"
        );
    }
}
