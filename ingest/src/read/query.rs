//! What a read request asks for, from its path and query string, checked against the
//! limits: which sensors and metrics, the time range on the observation time, raw rows or
//! aggregates per bucket, the page size and where the page starts. Pure.
//!
//! Parameter names follow QuantumLeap's (`fromDate`, `toDate`, `aggrMethod`,
//! `aggrPeriod`, `id`, `attrs`, `limit`); `aggrPeriod` is an ISO 8601 duration
//! (`PT5M`, `PT1H`, `P1D`, `PT0S` for the whole range), and pages follow a `cursor`.

use std::fmt;

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};

use super::cursor::Cursor;

/// The limits every query is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rows on a page when the query does not say (`limit`).
    pub default_rows: usize,
    /// Most rows on one page; more are paged by the cursor.
    pub max_rows: usize,
    /// Longest range of a raw query.
    pub max_raw_range: SignedDuration,
    /// Longest range of an aggregated query.
    pub max_aggregated_range: SignedDuration,
    /// Most sensors (`id`) and metrics (`attrs`) named in one query.
    pub max_names: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            default_rows: 10_000,
            max_rows: 100_000,
            max_raw_range: SignedDuration::from_hours(24 * 366),
            max_aggregated_range: SignedDuration::from_hours(24 * 3660),
            max_names: 100,
        }
    }
}

/// How much of the range a query reads when it names no start: the day before its end.
pub const DEFAULT_RANGE: SignedDuration = SignedDuration::from_hours(24);

/// An aggregate of the values in a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::Display, strum::EnumIter)]
#[strum(serialize_all = "lowercase")]
pub enum Method {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
}

/// Aggregates per bucket of `period` (zero: one bucket for the whole range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregation {
    pub methods: Vec<Method>,
    pub period: SignedDuration,
}

impl Aggregation {
    /// The period as the request may spell it back, in ISO 8601.
    pub fn period_text(&self) -> String {
        iso_duration(self.period)
    }
}

/// How the answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// A query for series: checked, with its range resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesQuery {
    /// Sensors (entity ids) to read; every sensor when empty.
    pub sensors: Vec<String>,
    /// Metrics (attribute names) to read; every metric when empty.
    pub metrics: Vec<String>,
    /// Start of the range, inclusive.
    pub from: Timestamp,
    /// End of the range, exclusive.
    pub to: Timestamp,
    /// Raw rows when `None`.
    pub aggregation: Option<Aggregation>,
    /// Most rows on this page.
    pub limit: usize,
    /// Where this page starts (the first row at or after it); the first page when `None`.
    pub cursor: Option<Cursor>,
    pub format: Format,
}

impl SeriesQuery {
    /// What identifies the query apart from its page: a cursor belongs to one query.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = format!(
            "{:?}|{:?}|{}|{}|{:?}",
            self.sensors,
            self.metrics,
            self.from.as_microsecond(),
            self.to.as_microsecond(),
            self.aggregation
                .as_ref()
                .map(|aggregation| (aggregation.methods.clone(), aggregation.period)),
        );
        let digest = Sha256::digest(text.as_bytes());
        digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// A request refused before it reaches the database: the parameter, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The parameter at fault, or the limit that was hit.
    pub parameter: &'static str,
    pub message: String,
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        parameter,
        message: message.into(),
    }
}

/// The query string's parameters, as given.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Params {
    pub id: Option<String>,
    pub attrs: Option<String>,
    pub from_date: Option<String>,
    pub to_date: Option<String>,
    pub aggr_method: Option<String>,
    pub aggr_period: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub format: Option<String>,
}

/// The parameter names [`Params`] takes, for the OpenAPI test and the error on an
/// unknown one.
pub const PARAMETERS: &[&str] = &[
    "id",
    "attrs",
    "fromDate",
    "toDate",
    "aggrMethod",
    "aggrPeriod",
    "limit",
    "cursor",
    "format",
];

/// Checks `params` for a series query over `sensors` and `metrics` (from the path, or
/// from `id` and `attrs`), at `now`, under `limits`.
pub fn series(
    params: &Params,
    mut sensors: Vec<String>,
    mut metrics: Vec<String>,
    accept: Option<&str>,
    now: Timestamp,
    limits: &Limits,
) -> Result<SeriesQuery, Invalid> {
    if let Some(ids) = &params.id {
        sensors.extend(names("id", ids)?);
    }
    if let Some(attrs) = &params.attrs {
        metrics.extend(names("attrs", attrs)?);
    }
    for (parameter, list) in [("id", &mut sensors), ("attrs", &mut metrics)] {
        list.sort();
        list.dedup();
        if list.len() > limits.max_names {
            return Err(invalid(
                parameter,
                format!(
                    "{parameter} names {} values; a query names at most {}: split it in several",
                    list.len(),
                    limits.max_names
                ),
            ));
        }
    }
    // A cursor carries the range its first page resolved: "now" stays that page's now.
    let cursor = match &params.cursor {
        Some(text) => Some(Cursor::decode(text).map_err(|error| invalid("cursor", error))?),
        None => None,
    };
    let to = match (&params.to_date, &cursor) {
        (Some(text), _) => time("toDate", text)?,
        (None, Some(cursor)) => cursor.to,
        (None, None) => now,
    };
    let from = match (&params.from_date, &cursor) {
        (Some(text), _) => time("fromDate", text)?,
        (None, Some(cursor)) => cursor.from,
        (None, None) => to - DEFAULT_RANGE,
    };
    if from >= to {
        return Err(invalid(
            "fromDate",
            format!(
                "fromDate ({from}) must be before toDate ({to}): the range includes fromDate and excludes toDate"
            ),
        ));
    }
    let aggregation = aggregation(params)?;
    let range = to.duration_since(from);
    let (max_range, kind) = match aggregation {
        None => (limits.max_raw_range, "a raw query"),
        Some(_) => (limits.max_aggregated_range, "an aggregated query"),
    };
    if range > max_range {
        let advice = match aggregation {
            None => "ask for a shorter range, or aggregate it (aggrMethod, aggrPeriod)",
            Some(_) => "ask for a shorter range",
        };
        return Err(invalid(
            "range",
            format!(
                "the range from {from} to {to} is {}; {kind} covers at most {}: {advice}",
                iso_duration(range),
                iso_duration(max_range)
            ),
        ));
    }
    let limit = limit(params, limits)?;
    let mut query = SeriesQuery {
        sensors,
        metrics,
        from,
        to,
        aggregation,
        limit,
        cursor: None,
        format: format(params.format.as_deref(), accept)?,
    };
    if let Some(cursor) = cursor {
        if cursor.query != query.fingerprint() {
            return Err(invalid(
                "cursor",
                "this cursor belongs to another query: repeat the query's other parameters unchanged (only limit may change)",
            ));
        }
        query.cursor = Some(cursor);
    }
    Ok(query)
}

/// The page size: `limit`, or the default; at most the limit of a page.
fn limit(params: &Params, limits: &Limits) -> Result<usize, Invalid> {
    let Some(text) = &params.limit else {
        return Ok(limits.default_rows);
    };
    let limit: usize = text
        .parse()
        .ok()
        .filter(|limit| *limit > 0)
        .ok_or_else(|| {
            invalid(
                "limit",
                format!("limit {text:?} is not a number of rows above 0"),
            )
        })?;
    if limit > limits.max_rows {
        return Err(invalid(
            "limit",
            format!(
                "limit {limit} is above the most rows a page holds ({}): ask for at most that and follow the `next` cursor for the rest",
                limits.max_rows
            ),
        ));
    }
    Ok(limit)
}

/// Sensors on a page of the catalogue: `limit`, or 1000; at most the limit of a page.
pub fn catalogue_limit(params: &Params, limits: &Limits) -> Result<usize, Invalid> {
    let limits = Limits {
        default_rows: CATALOGUE_PAGE.min(limits.max_rows),
        max_rows: limits.max_rows.min(MAX_CATALOGUE_PAGE),
        ..*limits
    };
    limit(params, &limits)
}

/// Sensors on a page of the catalogue by default, and at most.
pub const CATALOGUE_PAGE: usize = 1000;
pub const MAX_CATALOGUE_PAGE: usize = 10_000;

/// `json` (the default) or `csv`, from `format` or else the Accept header.
pub fn format(param: Option<&str>, accept: Option<&str>) -> Result<Format, Invalid> {
    match param {
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(invalid(
            "format",
            format!("format {other:?} is not json or csv"),
        )),
        None if accept.is_some_and(|accept| accept.contains("text/csv")) => Ok(Format::Csv),
        None => Ok(Format::Json),
    }
}

fn aggregation(params: &Params) -> Result<Option<Aggregation>, Invalid> {
    let methods = match &params.aggr_method {
        None => {
            if params.aggr_period.is_some() {
                return Err(invalid(
                    "aggrMethod",
                    "aggrPeriod needs aggrMethod (avg, min, max, sum, count, first or last)",
                ));
            }
            return Ok(None);
        }
        Some(text) => {
            let mut methods = Vec::new();
            for name in text.split(',').map(str::trim) {
                let method: Method = name.parse().map_err(|_| {
                    invalid(
                        "aggrMethod",
                        format!("aggrMethod {name:?} is not one of avg, min, max, sum, count, first, last"),
                    )
                })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            methods
        }
    };
    let period = match &params.aggr_period {
        None => SignedDuration::ZERO,
        Some(text) => period(text)?,
    };
    Ok(Some(Aggregation { methods, period }))
}

/// An ISO 8601 duration of whole seconds, in weeks, days (of 24 hours), hours, minutes
/// and seconds: a bucket has one length. Months and years, whose length varies, are
/// refused.
pub fn period(text: &str) -> Result<SignedDuration, Invalid> {
    let refuse = |why: &str| {
        invalid(
            "aggrPeriod",
            format!(
                "aggrPeriod {text:?} {why}: give an ISO 8601 duration such as PT5M, PT1H, P1D or PT0S (the whole range)"
            ),
        )
    };
    if !text.starts_with('P') {
        return Err(refuse("is not an ISO 8601 duration"));
    }
    let span: Span = text
        .parse()
        .map_err(|_| refuse("is not an ISO 8601 duration"))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(refuse("has months or years, whose length varies"));
    }
    let duration = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| refuse("is too long"))?;
    if duration.is_negative() {
        return Err(refuse("is negative"));
    }
    if duration.subsec_nanos() != 0 {
        return Err(refuse("is not a whole number of seconds"));
    }
    Ok(duration)
}

/// `duration` in ISO 8601, the largest units first (`P1D`, `PT1H30M`, `PT0S`).
pub fn iso_duration(duration: SignedDuration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "PT0S".to_string();
    }
    let mut text = String::from("P");
    let days = seconds / 86_400;
    seconds %= 86_400;
    if days != 0 {
        text.push_str(&format!("{days}D"));
    }
    if seconds != 0 {
        text.push('T');
        for (unit, size) in [('H', 3600), ('M', 60), ('S', 1)] {
            if seconds >= size {
                text.push_str(&format!("{}{unit}", seconds / size));
                seconds %= size;
            }
        }
    }
    text
}

fn time(parameter: &'static str, text: &str) -> Result<Timestamp, Invalid> {
    text.parse().map_err(|_| {
        invalid(
            parameter,
            format!("{parameter} {text:?} is not an RFC 3339 time such as 2026-03-01T00:00:00Z"),
        )
    })
}

/// A comma-separated list of sensor or metric names.
fn names(parameter: &'static str, text: &str) -> Result<Vec<String>, Invalid> {
    text.split(',')
        .map(|name| {
            if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                Err(invalid(
                    parameter,
                    format!("{parameter} must be names of 1 to 256 characters separated by commas"),
                ))
            } else {
                Ok(name.to_string())
            }
        })
        .collect()
}

impl fmt::Display for Format {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Format::Json => "json",
            Format::Csv => "csv",
        })
    }
}

/// Most buckets of an open dataset's granularity one query covers: a leap year of hours
/// (each anonymous query aggregates its range from the measurements).
pub const MAX_OPEN_BUCKETS: i64 = 8_784;

/// What an anonymous query of an open dataset may ask before its granularity is known:
/// aggregates the buckets hold (no raw rows, no first or last value).
pub fn check_open(query: &SeriesQuery) -> Result<(), Invalid> {
    let Some(aggregation) = &query.aggregation else {
        return Err(invalid(
            "aggrMethod",
            "open data is published in buckets, not raw rows: add aggrMethod (avg, min, max, \
             sum or count) and aggrPeriod (the dataset's granularity or a multiple of it; \
             /open/catalog names it)",
        ));
    };
    if let Some(method) = aggregation
        .methods
        .iter()
        .find(|method| matches!(method, Method::First | Method::Last))
    {
        return Err(invalid(
            "aggrMethod",
            format!("{method} is not published for open data: ask for avg, min, max, sum or count"),
        ));
    }
    Ok(())
}

/// An anonymous query against the dataset's `granularity`: a period that is the
/// granularity or a whole multiple of it (or the whole range), over at most
/// [`MAX_OPEN_BUCKETS`] buckets of it.
pub fn check_open_granularity(
    query: &SeriesQuery,
    granularity: SignedDuration,
) -> Result<(), Invalid> {
    let step = granularity.as_secs().max(1);
    let period = query.aggregation.as_ref().map_or(0, |a| a.period.as_secs());
    if period % step != 0 {
        return Err(invalid(
            "aggrPeriod",
            format!(
                "this dataset is published in buckets of {} at finest: ask for aggrPeriod {} or a whole multiple of it (or PT0S for the whole range)",
                iso_duration(granularity),
                iso_duration(granularity)
            ),
        ));
    }
    let range = query.to.duration_since(query.from).as_secs();
    if range / step > MAX_OPEN_BUCKETS {
        return Err(invalid(
            "range",
            format!(
                "the range covers {} buckets of {}; an open query covers at most {MAX_OPEN_BUCKETS}: ask for a shorter range and page through it",
                range / step,
                iso_duration(granularity)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        serde_urlencoded::from_str(&text.join("&")).unwrap()
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    fn check(pairs: &[(&str, &str)]) -> Result<SeriesQuery, Invalid> {
        series(
            &params(pairs),
            vec!["s1".into()],
            vec![],
            None,
            now(),
            &Limits::default(),
        )
    }

    #[test]
    fn periods_are_iso_8601_durations_of_one_length() {
        assert_eq!(period("PT5M").unwrap(), SignedDuration::from_mins(5));
        assert_eq!(period("PT1H").unwrap(), SignedDuration::from_hours(1));
        assert_eq!(period("P1D").unwrap(), SignedDuration::from_hours(24));
        assert_eq!(period("P1W").unwrap(), SignedDuration::from_hours(168));
        assert_eq!(period("PT0S").unwrap(), SignedDuration::ZERO);
        for bad in ["P1M", "P1Y", "PT0.5S", "1h", "hour", "-PT1H", ""] {
            let error = period(bad).unwrap_err();
            assert_eq!(error.parameter, "aggrPeriod", "{bad}");
            assert!(error.message.contains("PT5M"), "{bad}: {}", error.message);
        }
        for seconds in [0, 1, 59, 300, 3600, 5400, 86_400, 90_061] {
            let duration = SignedDuration::from_secs(seconds);
            assert_eq!(period(&iso_duration(duration)).unwrap(), duration);
        }
    }

    #[test]
    fn the_range_defaults_to_the_day_before_now_and_must_not_be_empty() {
        let query = check(&[]).unwrap();
        assert_eq!(query.to, now());
        assert_eq!(query.from, now() - DEFAULT_RANGE);
        assert_eq!(query.limit, Limits::default().default_rows);
        assert_eq!(query.format, Format::Json);
        let error = check(&[
            ("fromDate", "2026-01-02T00:00:00Z"),
            ("toDate", "2026-01-01T00:00:00Z"),
        ])
        .unwrap_err();
        assert_eq!(error.parameter, "fromDate");
    }

    #[test]
    fn limits_say_which_limit_and_how_to_go_on() {
        let error = check(&[("fromDate", "2024-01-01T00:00:00Z")]).unwrap_err();
        assert_eq!(error.parameter, "range");
        assert!(error.message.contains("aggregate"), "{}", error.message);
        // The same range aggregated is within its own limit.
        check(&[
            ("fromDate", "2024-01-01T00:00:00Z"),
            ("aggrMethod", "avg"),
            ("aggrPeriod", "P1D"),
        ])
        .unwrap();
        let error = check(&[("limit", "100001")]).unwrap_err();
        assert_eq!(error.parameter, "limit");
        assert!(error.message.contains("next"), "{}", error.message);
        assert_eq!(check(&[("limit", "0")]).unwrap_err().parameter, "limit");
        let many: Vec<String> = (0..101).map(|n| format!("s{n}")).collect();
        assert_eq!(
            check(&[("id", &many.join(","))]).unwrap_err().parameter,
            "id"
        );
    }

    #[test]
    fn aggregation_needs_known_methods() {
        let query = check(&[("aggrMethod", "avg,max,avg"), ("aggrPeriod", "PT1H")]).unwrap();
        let aggregation = query.aggregation.unwrap();
        assert_eq!(aggregation.methods, [Method::Avg, Method::Max]);
        assert_eq!(aggregation.period_text(), "PT1H");
        assert_eq!(
            check(&[("aggrMethod", "median")]).unwrap_err().parameter,
            "aggrMethod"
        );
        assert_eq!(
            check(&[("aggrPeriod", "PT1H")]).unwrap_err().parameter,
            "aggrMethod"
        );
        let whole = check(&[("aggrMethod", "count")])
            .unwrap()
            .aggregation
            .unwrap();
        assert_eq!(whole.period, SignedDuration::ZERO);
    }

    #[test]
    fn names_come_from_the_path_and_the_query_sorted_once() {
        let query = check(&[("id", "s3,s1,s2"), ("attrs", "pm10,no2")]).unwrap();
        assert_eq!(query.sensors, ["s1", "s2", "s3"]);
        assert_eq!(query.metrics, ["no2", "pm10"]);
        assert_eq!(check(&[("id", "a,,b")]).unwrap_err().parameter, "id");
    }

    #[test]
    fn a_cursor_only_serves_its_own_query() {
        let query = check(&[("fromDate", "2026-05-01T00:00:00Z")]).unwrap();
        let cursor = Cursor {
            query: query.fingerprint(),
            sensor: "s1".into(),
            metric: "pm10".into(),
            time: query.from,
            from: query.from,
            to: query.to,
        }
        .encode();
        let paged = check(&[
            ("fromDate", "2026-05-01T00:00:00Z"),
            ("cursor", &cursor),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(paged.cursor.unwrap().metric, "pm10");
        let error =
            check(&[("fromDate", "2026-05-02T00:00:00Z"), ("cursor", &cursor)]).unwrap_err();
        assert_eq!(error.parameter, "cursor");
        assert_eq!(
            check(&[("cursor", "not-a-cursor")]).unwrap_err().parameter,
            "cursor"
        );
    }

    #[test]
    fn csv_by_parameter_or_accept_header() {
        assert_eq!(format(Some("csv"), None).unwrap(), Format::Csv);
        assert_eq!(format(None, Some("text/csv")).unwrap(), Format::Csv);
        assert_eq!(
            format(Some("json"), Some("text/csv")).unwrap(),
            Format::Json
        );
        assert_eq!(format(Some("xml"), None).unwrap_err().parameter, "format");
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert!(serde_urlencoded::from_str::<Params>("lastN=5").is_err());
        assert!(serde_urlencoded::from_str::<Params>("fromdate=x").is_err());
    }
}
