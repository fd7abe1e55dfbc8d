//! `POST /v1/senml`: SenML packs in JSON (RFC 8428). Pure (no I/O).
//!
//! The body is a JSON array of records; anything else is refused whole. Records are
//! resolved as RFC 8428 §4.6 says, each on its own, so a bad record never costs the others.
//!
//! # Mapping
//!
//! - Base fields `bn`, `bt`, `bu`, `bv` apply to their record and every later one until
//!   changed (an empty `bn` clears the base name); `bver` and `ut` are ignored.
//! - Name: `bn` + `n`, which must match `[a-zA-Z0-9][a-zA-Z0-9:./_-]*`.
//! - Sensor and metric: with a base name, the sensor is `bn` less one trailing `:`, `/`,
//!   `.` or `_`, and the metric is `n`, which is then required. Without one, the name is
//!   split at its last `:` or `/` (`lab-3/temperature`); a name with neither is refused,
//!   as is a base name without `n` (RFC 8428 §5.1.3 tells measurements apart only by
//!   unit, which this service does not treat as a metric).
//! - Time: `bt` + `t` seconds. Below 2^28 it is relative to the time of receipt (0 or
//!   absent: received; negative: in the past), otherwise seconds since the Unix epoch.
//!   Rounded to the microsecond, PostgreSQL's resolution.
//! - Value: `bv` + `v` is stored; `vb` is stored as `1` / `0`; `vs` (text), `vd` (data)
//!   and `s` (sums) are reported as ignored. A record carries exactly one of `v`, `vs`,
//!   `vb`, `vd` (a sum may come with `v` or `vb`), or at least an `s`.
//! - Unit: `u`, else `bu`, stored as sent.
//! - Fields ending in `_` must be understood (RFC 8428 §4.4): none is, so such a record
//!   is refused.
//!
//! A base field of the wrong type (`"bn": 5`) rejects every later record that relies on
//! it, until it is set again: storing them under the previous base would file data under
//! another sensor or another hour.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};
use smartregion_contract::format::IngestFormat;

use super::stream::{self, Shape};
use super::{
    BodyError, Format, Limits, Measurement, Parsed, Refusal, Window, finite, json_number, kind,
    metric_name, optional_number, optional_str, sensor_id, unit_name, within,
};

/// RFC 8428 §4.5.3: smaller times are relative to "now", the time of receipt here.
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// The value fields, of which a record carries at most one (RFC 8428 §4.2).
const VALUE_FIELDS: [&str; 4] = ["v", "vs", "vb", "vd"];

/// Parses a SenML JSON pack without limits; `received` is "now" for relative times.
pub fn parse_senml(body: &[u8], received: Timestamp) -> Result<Parsed, BodyError> {
    SenML.parse(body, received, &Limits::default())
}

/// `POST /v1/senml`, MQTT topic level `senml`.
pub struct SenML;

impl Format for SenML {
    fn kind(&self) -> IngestFormat {
        IngestFormat::SenML
    }

    fn topic_level(&self) -> &'static str {
        "senml"
    }

    fn parse(
        &self,
        body: &[u8],
        received: Timestamp,
        limits: &Limits,
    ) -> Result<Parsed, BodyError> {
        let shape = Shape {
            bare_array: true,
            items_key: None,
            string_key: None,
        };
        let mut base = Base::default();
        let mut parsed = Parsed::default();
        let outline = stream::items(body, &shape, &mut |index, record| {
            let Value::Object(fields) = &record else {
                let reason = format!("expected a SenML record object, found {}", kind(&record));
                parsed.reject(index, Refusal::new("", reason));
                return Ok(());
            };
            // Before the record's own checks: a refused record still sets the base its sender
            // meant for the records after it.
            base.update(index, fields);
            match read_record(fields, &base, received, &limits.window) {
                Ok(reading) => {
                    if let Some(row) = reading.row {
                        parsed.row(row);
                    }
                    for ignored in reading.ignored {
                        parsed.ignore(index, ignored);
                    }
                }
                Err(refusal) => parsed.reject(index, refusal),
            }
            within(&parsed, limits)
        })?;
        if outline.body_kind != "an array" {
            return Err(BodyError::Shape(format!(
                "expected a SenML pack (a JSON array of records), found {}",
                outline.body_kind
            )));
        }
        Ok(parsed)
    }
}

/// The base fields in force.
#[derive(Default)]
struct Base {
    name: Slot<String>,
    time: Slot<f64>,
    unit: Slot<String>,
    value: Slot<f64>,
}

/// One base field: unset, set, or set to something unusable (with the reason).
#[derive(Default)]
enum Slot<T> {
    #[default]
    Unset,
    Set(T),
    Invalid(String),
}

impl<T> Slot<T> {
    fn get(&self, field: &str) -> Result<Option<&T>, Refusal> {
        match self {
            Slot::Unset => Ok(None),
            Slot::Set(value) => Ok(Some(value)),
            Slot::Invalid(reason) => Err(Refusal::new(field, reason.clone())),
        }
    }
}

impl Base {
    fn update(&mut self, index: usize, fields: &Map<String, Value>) {
        // Builds the reason only: a closure cannot be generic over the slot's type.
        let unusable = |field: &str, reason: String| {
            format!("{field} set by record {index} is unusable: {reason}")
        };
        if let Some(name) = fields.get("bn") {
            self.name = match name {
                Value::String(name) if name.is_empty() => Slot::Unset,
                Value::String(name) => Slot::Set(name.clone()),
                other => Slot::Invalid(unusable(
                    "bn",
                    format!("expected a string, found {}", kind(other)),
                )),
            };
        }
        if let Some(unit) = fields.get("bu") {
            self.unit = match unit {
                Value::String(unit) => Slot::Set(unit.clone()),
                other => Slot::Invalid(unusable(
                    "bu",
                    format!("expected a string, found {}", kind(other)),
                )),
            };
        }
        for (field, slot) in [("bt", &mut self.time), ("bv", &mut self.value)] {
            if let Some(number) = fields.get(field) {
                *slot = match json_number(number) {
                    Ok(number) => Slot::Set(number),
                    Err(reason) => Slot::Invalid(unusable(field, reason)),
                };
            }
        }
    }
}

/// What one valid record gives: a row, reports of what it carried but is not stored, or
/// both (a value with a sum).
struct Reading {
    row: Option<Measurement>,
    ignored: Vec<Refusal>,
}

fn read_record(
    fields: &Map<String, Value>,
    base: &Base,
    received: Timestamp,
    window: &Window,
) -> Result<Reading, Refusal> {
    if let Some(field) = fields.keys().find(|field| field.ends_with('_')) {
        return Err(Refusal::new(
            field.as_str(),
            "must-understand extension field is not supported",
        ));
    }
    let carried: Vec<&str> = VALUE_FIELDS
        .into_iter()
        .filter(|field| fields.contains_key(*field))
        .collect();
    if let [first, second, ..] = carried.as_slice() {
        return Err(Refusal::new(
            *second,
            format!("a record carries one value, found both {first} and {second}"),
        ));
    }
    if carried.is_empty() && !fields.contains_key("s") {
        return Err(Refusal::new(
            "v",
            "record has no value: one of v, vs, vb, vd or s is required",
        ));
    }
    let (sensor, metric) = sensor_and_metric(fields, base)?;

    let mut ignored = Vec::new();
    if optional_number(fields, "s")
        .map_err(Refusal::on("s"))?
        .is_some()
    {
        ignored.push(Refusal::new("s", "sums are not stored"));
    }
    for (field, reason) in [
        ("vs", "string values are not stored"),
        ("vd", "data values are not stored"),
    ] {
        if optional_str(fields, field)
            .map_err(Refusal::on(field))?
            .is_some()
        {
            ignored.push(Refusal::new(field, reason));
        }
    }
    let value = if let Some(value) = fields.get("v") {
        let value = json_number(value).map_err(Refusal::on("v"))?;
        let base_value = base.value.get("bv")?.copied().unwrap_or(0.0);
        // Two finite numbers can still add up to infinity.
        finite(base_value + value).map_err(Refusal::on("v"))?
    } else if let Some(on) = fields.get("vb") {
        match on {
            Value::Bool(true) => 1.0,
            Value::Bool(false) => 0.0,
            other => {
                let reason = format!("expected a boolean, found {}", kind(other));
                return Err(Refusal::new("vb", reason));
            }
        }
    } else {
        return Ok(Reading { row: None, ignored });
    };

    let base_time = base.time.get("bt")?.copied().unwrap_or(0.0);
    let own_time = optional_number(fields, "t")
        .map_err(Refusal::on("t"))?
        .unwrap_or(0.0);
    let time = resolve_time(base_time + own_time, received)
        .and_then(|time| window.admit(time, received))
        .map_err(Refusal::on("t"))?;
    let unit = match optional_str(fields, "u").map_err(Refusal::on("u"))? {
        Some(unit) => Some(unit_name(unit).map_err(Refusal::on("u"))?),
        None => match base.unit.get("bu")? {
            Some(unit) => Some(unit_name(unit).map_err(Refusal::on("bu"))?),
            None => None,
        },
    };
    Ok(Reading {
        row: Some(Measurement {
            sensor,
            metric,
            time,
            value,
            unit,
        }),
        ignored,
    })
}

fn sensor_and_metric(
    fields: &Map<String, Value>,
    base: &Base,
) -> Result<(String, String), Refusal> {
    let base_name = base.name.get("bn")?.map(String::as_str);
    let own_name = optional_str(fields, "n")
        .map_err(Refusal::on("n"))?
        .unwrap_or("");
    let name = format!("{}{own_name}", base_name.unwrap_or(""));
    if name.is_empty() {
        return Err(Refusal::new("n", "record has no name: n or bn is required"));
    }
    if !is_senml_name(&name) {
        return Err(Refusal::new(
            "n",
            format!("name {name:?} does not match [a-zA-Z0-9][a-zA-Z0-9:./_-]* (RFC 8428)"),
        ));
    }
    let Some(base_name) = base_name else {
        let Some((sensor, metric)) = name.rsplit_once([':', '/']) else {
            return Err(Refusal::new(
                "n",
                format!(
                    "cannot tell sensor from metric in {name:?}: send the sensor id as bn \
                     and the metric as n, e.g. \"bn\": \"urn:dev:mac:0024befffe804ff1:\", \
                     \"n\": \"temp\""
                ),
            ));
        };
        let sensor = sensor_id(sensor).map_err(Refusal::on("n"))?;
        return Ok((sensor, metric_name(metric).map_err(Refusal::on("n"))?));
    };
    let sensor = base_name
        .strip_suffix([':', '/', '.', '_'])
        .unwrap_or(base_name);
    let sensor = sensor_id(sensor).map_err(Refusal::on("bn"))?;
    if own_name.is_empty() {
        return Err(Refusal::new(
            "n",
            "n is required: with a base name, bn names the sensor and n the metric",
        ));
    }
    Ok((sensor, metric_name(own_name).map_err(Refusal::on("n"))?))
}

/// RFC 8428 §4.5.1: `^[a-zA-Z0-9][a-zA-Z0-9:./_-]*$`.
fn is_senml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '/' | '_' | '-'))
}

fn resolve_time(seconds: f64, received: Timestamp) -> Result<Timestamp, String> {
    let seconds = finite(seconds)?;
    // Float seconds carry noise below the microsecond (0.1 s is 0.09999999 s): rounding to
    // PostgreSQL's resolution stores the time the sender wrote. `as` saturates and jiff
    // refuses what is out of its range, so huge values fail below rather than wrap.
    let micros = (seconds * 1e6).round() as i64;
    let time = if seconds < RELATIVE_TIME_LIMIT {
        received.checked_add(SignedDuration::from_micros(micros))
    } else {
        Timestamp::from_microsecond(micros)
    };
    time.map_err(|error| format!("time {seconds} s is out of range: {error}"))
}

#[cfg(test)]
mod tests {
    use super::super::samples::{
        SENML_MULTIPLE_DATA_TYPES, SENML_MULTIPLE_DATAPOINTS, SENML_MULTIPLE_MEASUREMENTS,
        SENML_RELATIVE, at, received,
    };
    use super::super::{Ignored, Rejected};
    use super::*;

    fn parse(body: &str) -> Parsed {
        parse_senml(body.as_bytes(), received()).expect("a SenML pack")
    }

    fn row(
        sensor: &str,
        metric: &str,
        time: Timestamp,
        value: f64,
        unit: Option<&str>,
    ) -> Measurement {
        Measurement {
            sensor: sensor.to_owned(),
            metric: metric.to_owned(),
            time,
            value,
            unit: unit.map(str::to_owned),
        }
    }

    fn blamed(rejected: &[Rejected]) -> Vec<(usize, &str)> {
        rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect()
    }

    #[test]
    fn rfc_multiple_datapoints_resolve_base_name_time_and_unit() {
        let parsed = parse(SENML_MULTIPLE_DATAPOINTS);
        let sensor = "urn:dev:ow:10e2073a0108006";
        let mut expected = vec![row(
            sensor,
            "voltage",
            at("2010-06-08T18:01:16.001Z"),
            120.1,
            Some("V"),
        )];
        for (t, value) in [
            (-5, 1.2),
            (-4, 1.3),
            (-3, 1.4),
            (-2, 1.5),
            (-1, 1.6),
            (0, 1.7),
        ] {
            let time = at("2010-06-08T18:01:16.001Z") + SignedDuration::from_secs(t);
            expected.push(row(sensor, "current", time, value, Some("A")));
        }
        assert_eq!(parsed.rows, expected);
        assert!(parsed.rejected.is_empty() && parsed.ignored.is_empty());
    }

    #[test]
    fn rfc_multiple_measurements_without_n_are_refused_with_advice() {
        let parsed = parse(SENML_MULTIPLE_MEASUREMENTS);
        assert!(parsed.rows.is_empty());
        assert_eq!(parsed.rejected.len(), 13);
        assert!(parsed.rejected.iter().all(|r| r.field == "n"));
        assert!(parsed.rejected[0].reason.starts_with("n is required"));
    }

    #[test]
    fn rfc_multiple_data_types_store_numbers_and_booleans_only() {
        let parsed = parse(SENML_MULTIPLE_DATA_TYPES);
        let sensor = "urn:dev:ow:10e2073a01080063";
        assert_eq!(
            parsed.rows,
            [
                row(sensor, "temp", received(), 23.1, Some("Cel")),
                row(sensor, "open", received(), 0.0, None),
            ]
        );
        assert_eq!(
            parsed.ignored,
            [
                Ignored {
                    index: 1,
                    field: "vs".to_owned(),
                    reason: "string values are not stored".to_owned()
                },
                Ignored {
                    index: 3,
                    field: "vd".to_owned(),
                    reason: "data values are not stored".to_owned()
                },
            ]
        );
    }

    #[test]
    fn small_times_are_relative_to_receipt_and_units_do_not_carry_over() {
        let parsed = parse(SENML_RELATIVE);
        let sensor = "urn:dev:mac:0024befffe804ff1";
        assert_eq!(
            parsed.rows,
            [
                row(
                    sensor,
                    "pm10",
                    received() - SignedDuration::from_secs(60),
                    18.0,
                    Some("ug/m3")
                ),
                row(
                    sensor,
                    "pm10",
                    received() - SignedDuration::from_secs(30),
                    19.5,
                    None
                ),
                row(sensor, "pm10", received(), 21.0, None),
                row(sensor, "door", received(), 1.0, None),
            ]
        );
    }

    #[test]
    fn without_a_base_name_the_name_splits_at_its_last_separator() {
        let parsed = parse(
            r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1},
                {"n":"lab-3/temperature","t":1.7954283001e9,"v":20},
                {"n":"temperature","v":19}]"#,
        );
        assert_eq!(
            parsed.rows,
            [
                row(
                    "urn:dev:ow",
                    "10e2073a01080063",
                    received(),
                    23.1,
                    Some("Cel")
                ),
                row(
                    "lab-3",
                    "temperature",
                    at("2026-11-23T10:05:00.1Z"),
                    20.0,
                    None
                ),
            ]
        );
        assert_eq!(blamed(&parsed.rejected), [(2, "n")]);
        assert!(
            parsed.rejected[0]
                .reason
                .contains("send the sensor id as bn")
        );
    }

    #[test]
    fn base_value_and_base_time_are_added() {
        let parsed = parse(
            r#"[{"bn":"publiacqua:tank-12:","bt":1.7954283e9,"bv":100,"bu":"m","n":"level","v":-0.5},
                {"n":"level","t":60,"v":0.25},
                {"n":"level","t":120,"v":1e308,"bv":1e308}]"#,
        );
        assert_eq!(
            parsed.rows,
            [
                row("publiacqua:tank-12", "level", received(), 99.5, Some("m")),
                row(
                    "publiacqua:tank-12",
                    "level",
                    at("2026-11-23T10:06:00Z"),
                    100.25,
                    Some("m")
                ),
            ]
        );
        assert_eq!(blamed(&parsed.rejected), [(2, "v")]);
        assert_eq!(parsed.rejected[0].reason, "inf is not a finite number");
    }

    #[test]
    fn malformed_records_are_explained_one_by_one() {
        let parsed = parse(
            r#"[{"n":"a/b","v":1,"vs":"x"},
                {"n":"a/b"},
                {"n":"a b/c","v":1},
                {"n":"a/b","v":1,"x_":1},
                {"n":"a/b","v":"1"},
                {"n":"a/b","vb":1},
                {"n":"a/b","t":1e300,"v":1},
                {"n":"a/b","u":"","v":1},
                "a/b",
                {"n":"a/b","s":1042.5}]"#,
        );
        assert_eq!(
            blamed(&parsed.rejected),
            [
                (0, "vs"),
                (1, "v"),
                (2, "n"),
                (3, "x_"),
                (4, "v"),
                (5, "vb"),
                (6, "t"),
                (7, "u"),
                (8, "")
            ]
        );
        assert!(parsed.rows.is_empty());
        let ignored: Vec<(usize, &str)> = parsed
            .ignored
            .iter()
            .map(|i| (i.index, i.field.as_str()))
            .collect();
        assert_eq!(ignored, [(9, "s")]);
    }

    #[test]
    fn an_unusable_base_field_rejects_the_records_relying_on_it() {
        let parsed = parse(
            r#"[{"bn":"meteo-1:","n":"temp","v":1},
                {"bn":5,"n":"temp","v":2},
                {"n":"temp","v":3},
                {"bn":"meteo-2:","n":"temp","v":4}]"#,
        );
        let sensors: Vec<&str> = parsed.rows.iter().map(|r| r.sensor.as_str()).collect();
        assert_eq!(sensors, ["meteo-1", "meteo-2"]);
        assert_eq!(blamed(&parsed.rejected), [(1, "bn"), (2, "bn")]);
        assert_eq!(
            parsed.rejected[1].reason,
            "bn set by record 1 is unusable: expected a string, found a number"
        );
    }

    #[test]
    fn a_body_that_is_not_an_array_is_refused_whole() {
        for body in [r#"{"n":"a/b","v":1}"#, "17", r#""[]""#] {
            assert!(
                matches!(
                    parse_senml(body.as_bytes(), received()),
                    Err(BodyError::Shape(_))
                ),
                "{body} was not refused"
            );
        }
    }
}
