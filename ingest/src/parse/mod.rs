//! Payload parsing for the formats of the ingest service: its own JSON batch
//! (`POST /v1/measurements`, [`measurements`]), FIWARE NGSI-v2 notifications
//! (`POST /v2/notify`, [`ngsi`]) and RFC 8428 SenML JSON (`POST /v1/senml`, [`senml`]).
//!
//! A format is one file: a type implementing [`Format`] (its parse, the bound on the
//! memory that parse takes, the HTTP route and the MQTT topic level that name it), listed
//! once in [`FORMATS`]. HTTP and MQTT both go through the trait, so they share the parser,
//! its cost bound and its limits. `docs/operator-design.md` ("Adding an ingest format")
//! walks through adding one.
//!
//! Pure: bytes and the time of receipt in, rows and explanations out. No I/O, no clock,
//! no database; the HTTP layer picks status codes and the writer stores the rows. The
//! bodies come from the network, so every parser is total: any byte string gives `Ok` or
//! `Err`, never a panic ([`fuzz_all`] is the entry point for fuzz targets).
//!
//! One bad item never fails a batch. Items are checked one by one into
//! [`Parsed::rows`], [`Parsed::rejected`] (refused, with the reason, so the sender can fix
//! it) and [`Parsed::ignored`] (valid, but not a number this service stores). Only a body
//! that is not JSON, or not the right shape as a whole, is a [`BodyError`].
//!
//! Rules common to all formats, enforced by the helpers here:
//! - sensor id: 1 to [`SENSOR_MAX_CHARS`] characters; metric: 1 to [`METRIC_MAX_CHARS`];
//!   unit: 1 to [`UNIT_MAX_CHARS`]; none may contain control characters;
//! - value: a finite number;
//! - time: RFC 3339 with an offset (`2026-11-23T10:00:00Z`, `2026-11-23T11:00:00+01:00`),
//!   inside the tenant's [`Window`]: not before its retention horizon, not further ahead
//!   of the time of receipt than a sender's clock may be.

pub mod cost;
pub mod measurements;
pub mod ngsi;
pub mod senml;
mod stream;

#[cfg(test)]
mod samples;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use smartregion_contract::format::IngestFormat;

pub use measurements::parse_measurements;
pub use ngsi::{NgsiNotification, parse_ngsi_notification};
pub use senml::parse_senml;

/// One payload format. Implementations are pure: bytes, the time of receipt and the
/// limits in; rows and explanations out.
pub trait Format: Send + Sync + 'static {
    /// The format as the API (`spec.ingest.formats`) and the HTTP route
    /// ([`IngestFormat::endpoint`]) name it: shared with the operator, so kept in the
    /// contract crate.
    fn kind(&self) -> IngestFormat;

    /// The MQTT topic level that says a message is in this format
    /// (`prato/sensors/senml/device-7`).
    fn topic_level(&self) -> &'static str;

    /// Parses `body`, stopping with [`BodyError::TooManyRows`] past `limits.max_rows`
    /// and refusing items outside `limits.window`.
    fn parse(&self, body: &[u8], received: Timestamp, limits: &Limits)
    -> Result<Parsed, BodyError>;

    /// The peak bytes [`Format::parse`] can take on top of the body, bounded before it
    /// runs (see [`cost`]). The default holds for parsers that read items one at a time
    /// through the shared streaming reader, as the three here do.
    fn parse_cost(&self, body: &[u8], limits: &Limits) -> usize {
        cost::parse_bytes(body, limits)
    }
}

/// Every format the service reads: one line per format. A test checks that it names each
/// [`IngestFormat`] once.
pub const FORMATS: [&dyn Format; 3] = [&measurements::Measurements, &ngsi::NgsiV2, &senml::SenML];

/// The implementation of `kind`.
pub fn format(kind: IngestFormat) -> &'static dyn Format {
    FORMATS
        .into_iter()
        .find(|format| format.kind() == kind)
        .expect("FORMATS has every IngestFormat (tested)")
}

/// The format an MQTT topic names: the last of its levels that is a format's
/// [`Format::topic_level`].
pub fn format_of_topic(topic: &str) -> Option<&'static dyn Format> {
    topic.rsplit('/').find_map(|level| {
        FORMATS
            .into_iter()
            .find(|format| format.topic_level() == level)
    })
}

/// Longest sensor id accepted, in characters.
pub const SENSOR_MAX_CHARS: usize = 256;
/// Longest metric name accepted, in characters.
pub const METRIC_MAX_CHARS: usize = 128;
/// Longest unit accepted, in characters (SenML and UN/CEFACT units are a few characters).
pub const UNIT_MAX_CHARS: usize = 64;

/// One number to store: which sensor measured what, when.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub sensor: String,
    pub metric: String,
    /// When it was measured, as the sender says; the time of receipt only where the
    /// format allows leaving it out.
    pub time: Timestamp,
    /// Always finite.
    pub value: f64,
    /// As sent (`Cel`, `%RH`, a UN/CEFACT code...), never converted.
    pub unit: Option<String>,
}

/// An item that was refused, explained: which item (index in the payload, for NGSI the
/// entity index), which field, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// 0-based position in the payload array.
    pub index: usize,
    /// The field at fault; empty when the item as a whole is refused (not an object).
    pub field: String,
    pub reason: String,
}

/// Something in the payload that is valid but not a number we store (e.g. an NGSI text
/// attribute); reported, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// 0-based position in the payload array.
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// Most explanations (rejected plus ignored) one answer lists; the others are counted
/// in [`Parsed::unlisted_rejected`] and [`Parsed::unlisted_ignored`]. A body of millions of bad items must not need millions of
/// explanations in memory (nor in the answer).
pub const MAX_EXPLANATIONS: usize = 1000;

/// What one parse may produce: the HTTP layer stops a body early when it carries more
/// rows than the request could ever be allowed (its answer would be a 413 anyway), so
/// the memory a parse takes is bounded by the limits, not by the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: usize,
    /// The times an item may carry; an item outside is rejected with its reason.
    pub window: Window,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: usize::MAX,
            window: Window::ANY,
        }
    }
}

/// The times a row may carry, relative to its time of receipt. A time before the
/// tenant's retention horizon would be deleted by the next retention run (and on a
/// hypertable every far day is a chunk of its own in the shared catalog); a time far
/// ahead is a sensor's broken clock, not a measurement. Both are refused per item, like
/// any other bad field, rather than stored or left for PostgreSQL to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The tenant's retention in days: older times are refused. `None`: no bound.
    pub retention_days: Option<u32>,
    /// How far ahead of the time of receipt a time may be. `None`: no bound.
    pub max_ahead: Option<SignedDuration>,
}

impl Window {
    /// Every time jiff can hold (pure parsing, the fuzz targets).
    pub const ANY: Window = Window {
        retention_days: None,
        max_ahead: None,
    };

    /// `time` if it is inside the window around `received`, else why not.
    fn admit(&self, time: Timestamp, received: Timestamp) -> Result<Timestamp, String> {
        if let Some(days) = self.retention_days {
            let horizon = received
                .checked_sub(SignedDuration::from_hours(i64::from(days) * 24))
                .unwrap_or(Timestamp::MIN);
            if time < horizon {
                return Err(format!(
                    "time {time} is before the retention horizon {horizon} (the tenant keeps \
                     {days} days): it would be deleted at once"
                ));
            }
        }
        if let Some(ahead) = self.max_ahead {
            let latest = received.checked_add(ahead).unwrap_or(Timestamp::MAX);
            if time > latest {
                return Err(format!(
                    "time {time} is more than {ahead:#} ahead of the time of receipt \
                     {received}: check the sender's clock"
                ));
            }
        }
        Ok(time)
    }
}

/// The outcome of a body that was JSON of the right shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub rows: Vec<Measurement>,
    /// At most [`MAX_EXPLANATIONS`] together with `ignored`, the first ones in the body.
    pub rejected: Vec<Rejected>,
    pub ignored: Vec<Ignored>,
    /// Explanations left out of `rejected` and `ignored` (beyond [`MAX_EXPLANATIONS`]).
    pub unlisted_rejected: usize,
    pub unlisted_ignored: usize,
}

impl Parsed {
    fn row(&mut self, row: Measurement) {
        self.rows.push(row);
    }

    fn explained(&self) -> usize {
        self.rejected.len() + self.ignored.len()
    }

    fn reject(&mut self, index: usize, refusal: Refusal) {
        if self.explained() >= MAX_EXPLANATIONS {
            self.unlisted_rejected += 1;
            return;
        }
        let Refusal { field, reason } = refusal;
        self.rejected.push(Rejected {
            index,
            field: short(field),
            reason,
        });
    }

    fn ignore(&mut self, index: usize, refusal: Refusal) {
        if self.explained() >= MAX_EXPLANATIONS {
            self.unlisted_ignored += 1;
            return;
        }
        let Refusal { field, reason } = refusal;
        self.ignored.push(Ignored {
            index,
            field: short(field),
            reason,
        });
    }

    /// Every item refused, also those not listed.
    pub fn rejected_count(&self) -> usize {
        self.rejected.len() + self.unlisted_rejected
    }

    pub fn ignored_count(&self) -> usize {
        self.ignored.len() + self.unlisted_ignored
    }
}

/// Field names in explanations come from the body (NGSI attribute names); a few hundred
/// characters name any field, so the explanation of a huge key stays small.
fn short(mut field: String) -> String {
    const MAX_CHARS: usize = 256;
    if let Some((cut, _)) = field.char_indices().nth(MAX_CHARS) {
        field.truncate(cut);
        field.push('…');
    }
    field
}

/// A body refused as a whole: nothing in it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Malformed JSON, with serde_json's (1-based) line and column.
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid JSON of the wrong shape for the whole body (e.g. an object where an array is
    /// required).
    #[error("wrong body shape: {0}")]
    Shape(String),
    /// More rows than [`Limits::max_rows`]: parsing stopped there.
    #[error("more than {0} rows in one request; send smaller batches")]
    TooManyRows(usize),
}

/// Runs the three parsers on `data` and discards the results: the single entry point for
/// fuzz targets, which only look for panics.
pub fn fuzz_all(data: &[u8]) {
    // Fixed so a crash replays; late 2026, far from jiff's limits, like a real receipt.
    const RECEIVED: Timestamp = Timestamp::constant(1_795_000_000, 0);
    for format in FORMATS {
        let _ = format.parse(data, RECEIVED, &Limits::default());
    }
}

/// A field refused or ignored, before the caller attaches the item's index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    field: String,
    reason: String,
}

impl Refusal {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// For `map_err`: blames `field` for a helper's reason.
    fn on(field: &str) -> impl FnOnce(String) -> Refusal + '_ {
        move |reason| Refusal::new(field, reason)
    }
}

fn json_error(error: serde_json::Error) -> BodyError {
    let (line, column) = (error.line(), error.column());
    let full = error.to_string();
    // serde_json appends the position to its message; it has fields of its own here.
    let message = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full)
        .to_owned();
    BodyError::Json {
        line,
        column,
        message,
    }
}

/// Hands `item` to `read` unless the rows are already over `limits`.
fn within(parsed: &Parsed, limits: &Limits) -> Result<(), BodyError> {
    if parsed.rows.len() > limits.max_rows {
        return Err(BodyError::TooManyRows(limits.max_rows));
    }
    Ok(())
}

/// "a string", "an object"...: for reasons that say what was found instead.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn sensor_id(text: &str) -> Result<String, String> {
    bounded_text(text, "sensor id", SENSOR_MAX_CHARS)
}

fn metric_name(text: &str) -> Result<String, String> {
    bounded_text(text, "metric", METRIC_MAX_CHARS)
}

fn unit_name(text: &str) -> Result<String, String> {
    bounded_text(text, "unit", UNIT_MAX_CHARS)
}

fn bounded_text(text: &str, what: &str, max_chars: usize) -> Result<String, String> {
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(format!(
            "{what} is {chars} characters long, at most {max_chars} are allowed"
        ));
    }
    // PostgreSQL text cannot hold NUL at all; other control characters are client bugs
    // that would only resurface in dashboards and CSV exports.
    if let Some(control) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} contains the control character U+{:04X}",
            u32::from(control)
        ));
    }
    Ok(text.to_owned())
}

fn finite(value: f64) -> Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{value} is not a finite number"))
    }
}

fn json_number(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| format!("{number} is not representable as a 64-bit float"))
            .and_then(finite),
        other => Err(format!("expected a number, found {}", kind(other))),
    }
}

/// An RFC 3339 timestamp that carries its offset.
fn timestamp(text: &str) -> Result<Timestamp, String> {
    match text.parse::<Timestamp>() {
        Ok(time) => Ok(time),
        // A civil time would be guessed into some zone; better to say what is missing.
        Err(_) if text.parse::<jiff::civil::DateTime>().is_ok() => Err(format!(
            "timestamp {text:?} has no offset: an offset is required, \
             e.g. 2026-11-23T10:00:00Z or 2026-11-23T11:00:00+01:00"
        )),
        Err(error) => Err(format!("{text:?} is not an RFC 3339 timestamp: {error}")),
    }
}

/// A field that may be absent (or null), but is a string when present.
fn optional_str<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("expected a string, found {}", kind(other))),
    }
}

/// A field that may be absent (or null), but is a finite number when present.
fn optional_number(fields: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => json_number(value).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_of_the_api_is_read_once_and_named_by_its_own_topic_level() {
        for kind in IngestFormat::ALL {
            let implementations = FORMATS
                .iter()
                .filter(|format| format.kind() == kind)
                .count();
            assert_eq!(implementations, 1, "{kind:?} needs one Format in FORMATS");
            let format = format(kind);
            let topic = format!("prato/sensors/{}/device-7", format.topic_level());
            assert_eq!(format_of_topic(&topic).map(|f| f.kind()), Some(kind));
        }
        assert_eq!(FORMATS.len(), IngestFormat::ALL.len());
        let mut levels: Vec<&str> = FORMATS.iter().map(|f| f.topic_level()).collect();
        levels.sort_unstable();
        levels.dedup();
        assert_eq!(
            levels.len(),
            FORMATS.len(),
            "topic levels tell formats apart"
        );
        assert!(format_of_topic("prato/sensors/device-7").is_none());
        // The last level that names a format decides.
        assert_eq!(
            format_of_topic("senml/gateway/measurements/7").map(|f| f.kind()),
            Some(IngestFormat::Measurements)
        );
    }

    #[test]
    fn a_timestamp_needs_an_offset() {
        let reason = timestamp("2026-11-23T10:00:00").expect_err("no offset must be refused");
        assert!(reason.contains("offset is required"), "{reason}");

        assert_eq!(
            timestamp("2026-11-23T11:00:00+01:00"),
            timestamp("2026-11-23T10:00:00Z")
        );
        let reason = timestamp("yesterday").expect_err("not a timestamp");
        assert!(reason.contains("not an RFC 3339 timestamp"), "{reason}");
    }

    /// The window of a tenant keeping 365 days, with clocks 5 minutes ahead allowed.
    fn a_year_and_five_minutes() -> Limits {
        Limits {
            max_rows: usize::MAX,
            window: Window {
                retention_days: Some(365),
                max_ahead: Some(SignedDuration::from_mins(5)),
            },
        }
    }

    fn blamed(parsed: &Parsed) -> Vec<(usize, &str)> {
        parsed
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect()
    }

    #[test]
    fn times_outside_the_window_are_rejected_item_by_item_in_every_format() {
        let limits = a_year_and_five_minutes();
        let received = samples::received();
        // Received 2026-11-23T10:05:00Z: the horizon is 2025-11-23T10:05:00Z, the latest
        // time 2026-11-23T10:10:00Z; both ends are inside.
        let batch = serde_json::json!([
            {"sensor": "s", "metric": "m", "value": 1, "time": "2026-11-23T10:10:00Z"},
            {"sensor": "s", "metric": "m", "value": 2, "time": "2100-01-01T00:00:00Z"},
            {"sensor": "s", "metric": "m", "value": 3, "time": "0001-01-01T00:00:00Z"},
            {"sensor": "s", "metric": "m", "value": 4, "time": "2025-11-23T10:05:00Z"},
            {"sensor": "s", "metric": "m", "value": 5, "time": "2025-11-23T10:04:59Z"},
        ]);
        let parsed = measurements::Measurements
            .parse(batch.to_string().as_bytes(), received, &limits)
            .expect("an array body");
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(blamed(&parsed), [(1, "time"), (2, "time"), (4, "time")]);
        assert_eq!(
            parsed.rejected[0].reason,
            "time 2100-01-01T00:00:00Z is more than 5m ahead of the time of receipt \
             2026-11-23T10:05:00Z: check the sender's clock"
        );
        assert_eq!(
            parsed.rejected[1].reason,
            "time 0001-01-01T00:00:00Z is before the retention horizon 2025-11-23T10:05:00Z \
             (the tenant keeps 365 days): it would be deleted at once"
        );

        // SenML: the issue's record of about 5300 BC (relative to receipt), and 2100.
        let pack = br#"[{"bn":"dev:","n":"temp","v":1,"t":-2.3e11},
                        {"n":"temp","v":2,"t":4102444800},
                        {"n":"temp","v":3}]"#;
        let parsed = senml::SenML.parse(pack, received, &limits).expect("a pack");
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(blamed(&parsed), [(0, "t"), (1, "t")]);

        // NGSI: the attribute whose time is outside is rejected, its neighbours stored.
        let notification = br#"{"subscriptionId": "s", "data": [
            {"id": "Room1", "temperature": 20, "TimeInstant": "2100-01-01T00:00:00Z"},
            {"id": "Room2", "temperature": {"type": "Number", "value": 21, "metadata":
                {"TimeInstant": {"type": "DateTime", "value": "1900-01-01T00:00:00Z"}}},
             "humidity": 40}]}"#;
        let parsed = ngsi::NgsiV2
            .parse(notification, received, &limits)
            .expect("a notification");
        assert_eq!(blamed(&parsed), [(0, "temperature"), (1, "temperature")]);
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].metric, "humidity");
    }

    #[test]
    fn without_a_window_any_time_jiff_holds_is_a_row() {
        let pack = br#"[{"bn":"dev:","n":"temp","v":1,"t":-2.3e11}]"#;
        let parsed = parse_senml(pack, samples::received()).expect("a pack");
        assert_eq!(parsed.rows.len(), 1, "{:?}", parsed.rejected);
    }

    #[test]
    fn text_limits_count_characters_not_bytes() {
        // 256 two-byte characters are 512 bytes, still a valid sensor id.
        assert!(sensor_id(&"è".repeat(SENSOR_MAX_CHARS)).is_ok());
        let reason = sensor_id(&"è".repeat(SENSOR_MAX_CHARS + 1)).expect_err("too long");
        assert!(reason.contains("257 characters"), "{reason}");
        assert_eq!(metric_name(""), Err("metric is empty".to_owned()));
        let reason = sensor_id("meteo\u{0}1").expect_err("NUL");
        assert!(reason.contains("U+0000"), "{reason}");
    }

    #[test]
    fn json_errors_carry_line_and_column_once() {
        // Also when the items before the error were read already (item by item).
        let body = b"[{\"sensor\": \"a\"},\n  {\"sensor\": \"a\",\n   \"metric\" \"x\"}\n]";
        let error = parse_measurements(body, Timestamp::UNIX_EPOCH).expect_err("missing colon");
        assert_eq!(
            error,
            BodyError::Json {
                line: 3,
                column: 13,
                message: "expected `:`".to_owned(),
            }
        );
        assert_eq!(
            error.to_string(),
            "malformed JSON at line 3 column 13: expected `:`"
        );
    }

    #[test]
    fn reports_serialize_as_the_http_response_shows_them() {
        let rejected = Rejected {
            index: 3,
            field: "time".to_owned(),
            reason: "timestamp has no offset".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(&rejected).expect("plain struct"),
            serde_json::json!({"index": 3, "field": "time", "reason": "timestamp has no offset"})
        );
    }

    /// Deterministic xorshift, so a failure names the same mutation on every run.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn no_payload_derived_mutation_makes_a_parser_panic() {
        let seeds = samples::all();
        let mut state = 0x5eed_1ca1_2026_u64;
        let (mut runs, mut accepted) = (0_usize, 0_usize);
        for seed in &seeds {
            for cut in 0..seed.len() {
                let prefix = seed.get(..cut).unwrap_or_default();
                fuzz_all(prefix);
                // Every seed is one JSON value, so every strict prefix is incomplete JSON.
                assert!(
                    matches!(
                        parse_senml(prefix, samples::received()),
                        Err(BodyError::Json { .. })
                    ),
                    "prefix of {cut} bytes was accepted"
                );
                runs += 1;
            }
            for _ in 0..200 {
                let mut mutant = seed.clone();
                for _ in 0..1 + next(&mut state) % 3 {
                    let at = usize::try_from(next(&mut state)).unwrap_or(0) % mutant.len().max(1);
                    if let Some(byte) = mutant.get_mut(at) {
                        *byte ^= 1 << (next(&mut state) % 8);
                    }
                }
                fuzz_all(&mutant);
                accepted += usize::from(parse_measurements(&mutant, samples::received()).is_ok())
                    + usize::from(parse_ngsi_notification(&mutant, samples::received()).is_ok())
                    + usize::from(parse_senml(&mutant, samples::received()).is_ok());
                runs += 1;
            }
        }
        assert!(runs > 1_000, "only {runs} inputs");
        // Some flips land inside strings and numbers: those reach the item checks.
        assert!(
            accepted > 100,
            "only {accepted} mutants got past the JSON parser"
        );
    }
}
