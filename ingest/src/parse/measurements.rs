//! `POST /v1/measurements`: the service's own JSON batch format. Pure (no I/O).
//!
//! The body is an array of measurements, or an object `{"measurements": [...]}` for
//! clients whose tooling cannot send a bare array:
//!
//! ```json
//! [{"sensor": "firenze-aq-001", "metric": "no2", "time": "2026-11-23T11:00:00+01:00",
//!   "value": 41.5, "unit": "ug/m3"}]
//! ```
//!
//! - `sensor`, `metric`, `time` and `value` (a JSON number) are required; `time` is RFC
//!   3339 with an offset. It is required (unlike in NGSI and SenML, whose senders may
//!   leave it out) because it is part of the key that makes a retried batch store
//!   nothing new: a time filled in on receipt would differ on every retry;
//! - `unit` is optional; any other field is ignored, so senders may add their own.
//!
//! Each item is checked on its own: a bad one is rejected with its index and field, the
//! others are stored.

use jiff::Timestamp;
use serde_json::{Map, Value};
use smartregion_contract::format::IngestFormat;

use super::stream::{self, Member, Shape};
use super::{
    BodyError, Format, Limits, Measurement, Parsed, Refusal, Window, json_number, kind,
    metric_name, optional_str, sensor_id, timestamp, unit_name, within,
};

/// Parses a `/v1/measurements` body without limits. Every item carries its time;
/// `received` is what a window would be measured from.
pub fn parse_measurements(body: &[u8], received: Timestamp) -> Result<Parsed, BodyError> {
    Measurements.parse(body, received, &Limits::default())
}

/// `POST /v1/measurements`, MQTT topic level `measurements`.
pub struct Measurements;

impl Format for Measurements {
    fn kind(&self) -> IngestFormat {
        IngestFormat::Measurements
    }

    fn topic_level(&self) -> &'static str {
        "measurements"
    }

    fn parse(
        &self,
        body: &[u8],
        received: Timestamp,
        limits: &Limits,
    ) -> Result<Parsed, BodyError> {
        let shape = Shape {
            bare_array: true,
            items_key: Some("measurements"),
            string_key: None,
        };
        let mut parsed = Parsed::default();
        let outline = stream::items(body, &shape, &mut |index, item| {
            match measurement(&item, received, &limits.window) {
                Ok(row) => parsed.row(row),
                Err(refusal) => parsed.reject(index, refusal),
            }
            within(&parsed, limits)
        })?;
        match (outline.body_kind, outline.items) {
            ("an array", _) | (_, Member::Array) => Ok(parsed),
            ("an object", Member::Absent) => Err(BodyError::Shape(
                "an object body needs a \"measurements\" array".to_owned(),
            )),
            ("an object", Member::Other(kind)) => Err(BodyError::Shape(format!(
                "\"measurements\" must be an array, found {kind}"
            ))),
            ("an object", _) => Err(BodyError::Shape(
                "\"measurements\" appears more than once".to_owned(),
            )),
            (kind, _) => Err(BodyError::Shape(format!(
                "expected an array of measurements or {{\"measurements\": [...]}}, found {kind}"
            ))),
        }
    }
}

fn measurement(item: &Value, received: Timestamp, window: &Window) -> Result<Measurement, Refusal> {
    let Value::Object(fields) = item else {
        return Err(Refusal::new(
            "",
            format!("expected a measurement object, found {}", kind(item)),
        ));
    };
    let sensor = required_str(fields, "sensor")
        .and_then(sensor_id)
        .map_err(Refusal::on("sensor"))?;
    let metric = required_str(fields, "metric")
        .and_then(metric_name)
        .map_err(Refusal::on("metric"))?;
    let time = required_str(fields, "time")
        .and_then(timestamp)
        .and_then(|time| window.admit(time, received))
        .map_err(Refusal::on("time"))?;
    let value = match fields.get("value") {
        Some(value) => json_number(value),
        None => Err("value is required".to_owned()),
    }
    .map_err(Refusal::on("value"))?;
    let unit = optional_str(fields, "unit")
        .and_then(|unit| unit.map(unit_name).transpose())
        .map_err(Refusal::on("unit"))?;
    Ok(Measurement {
        sensor,
        metric,
        time,
        value,
        unit,
    })
}

fn required_str<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    optional_str(fields, name)?.ok_or_else(|| format!("{name} is required"))
}

#[cfg(test)]
mod tests {
    use super::super::samples::{at, measurement_batch, received};
    use super::*;
    use serde_json::json;

    fn parse(body: &Value) -> Result<Parsed, BodyError> {
        parse_measurements(body.to_string().as_bytes(), received())
    }

    #[test]
    fn a_batch_of_100_with_3_bad_items_stores_97_and_explains_3() {
        let mut items = measurement_batch(100);
        items[7]["time"] = json!("2026-11-23T10:00:00");
        items[42]["sensor"] = json!("firenze-aq-\u{0}042");
        items[99]["value"] = json!("41.5");

        let parsed = parse(&Value::Array(items)).expect("an array body");

        assert_eq!(parsed.rows.len(), 97);
        let blamed: Vec<(usize, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(blamed, [(7, "time"), (42, "sensor"), (99, "value")]);
        assert!(parsed.rejected[0].reason.contains("offset is required"));
        assert!(parsed.rejected[1].reason.contains("U+0000"));
        assert_eq!(
            parsed.rejected[2].reason,
            "expected a number, found a string"
        );
        assert!(parsed.ignored.is_empty());
        // The good neighbours of the bad items are untouched, in order.
        assert_eq!(parsed.rows[7].time, at("2026-11-23T09:08:00Z"));
        assert_eq!(parsed.rows[0].sensor, "firenze-aq-000");
        assert_eq!(parsed.rows[0].value, 10.0);
    }

    #[test]
    fn the_wrapped_form_is_accepted_with_a_unit_and_a_missing_time_is_refused() {
        let body = json!({"measurements": [
            {"sensor": "prato-meteo-3", "metric": "temperature", "value": 7.25, "unit": "Cel",
             "time": "2026-11-23T10:00:00+01:00"},
            {"sensor": "prato-meteo-3", "metric": "temperature", "value": 7.5},
        ]});
        let parsed = parse(&body).expect("a wrapped body");
        assert_eq!(
            parsed.rows,
            [Measurement {
                sensor: "prato-meteo-3".to_owned(),
                metric: "temperature".to_owned(),
                time: at("2026-11-23T09:00:00Z"),
                value: 7.25,
                unit: Some("Cel".to_owned()),
            }]
        );
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(
            (parsed.rejected[0].index, parsed.rejected[0].field.as_str()),
            (1, "time")
        );
        assert_eq!(parsed.rejected[0].reason, "time is required");
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_refused_whole() {
        for body in [
            json!({"data": []}),
            json!({"measurements": {"sensor": "s"}}),
            json!("firenze"),
            json!(null),
        ] {
            assert!(
                matches!(parse(&body), Err(BodyError::Shape(_))),
                "{body} was not refused"
            );
        }
    }

    #[test]
    fn items_that_are_not_objects_or_lack_fields_are_explained() {
        let body = json!([
            42,
            {"metric": "no2", "value": 1},
            {"sensor": "s", "metric": "", "value": 1},
            {"sensor": "s", "metric": "no2", "time": "2026-11-23T10:00:00Z"},
            {"sensor": "s", "metric": "no2", "value": 1, "time": 1_795_428_300},
            {"sensor": "s", "metric": "no2", "value": 1, "unit": "\u{7}", "time": "2026-11-23T10:00:00Z"},
        ]);
        let parsed = parse(&body).expect("an array body");
        let blamed: Vec<(usize, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(
            blamed,
            [
                (0, ""),
                (1, "sensor"),
                (2, "metric"),
                (3, "value"),
                (4, "time"),
                (5, "unit")
            ]
        );
        assert!(parsed.rows.is_empty());
    }

    #[test]
    fn a_number_json_cannot_hold_as_f64_fails_the_body_at_its_position() {
        // serde_json refuses 1e999 while parsing, so it cannot reach the item checks.
        let body = b"[{\"sensor\": \"s\", \"metric\": \"m\", \"value\": 1e999}]";
        match parse_measurements(body, received()) {
            // Column 46 is the last digit of 1e999, where serde_json gives up.
            Err(BodyError::Json {
                line,
                column,
                message,
            }) => assert_eq!(
                (line, column, message.as_str()),
                (1, 46, "number out of range")
            ),
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let body = b"[\n  {\"sensor\": \"s\", \"metric\": \"m\", \"value\": 1},\n]";
        assert_eq!(
            parse_measurements(body, received()),
            Err(BodyError::Json {
                line: 3,
                column: 1,
                message: "trailing comma".to_owned(),
            })
        );
    }
}
