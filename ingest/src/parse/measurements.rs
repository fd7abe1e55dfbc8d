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

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smartregion_contract::format::IngestFormat;

use super::stream::{self, Member, Shape};
use super::{
    BodyError, Format, Limits, Measurement, Parsed, Refusal, Window, finite, metric_name,
    sensor_id, timestamp, unit_name, within,
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
            match measurement(item, received, &limits.window) {
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

fn measurement(
    item: Item<'_>,
    received: Timestamp,
    window: &Window,
) -> Result<Measurement, Refusal> {
    let fields = match item {
        Item::Object(fields) => fields,
        Item::Other(kind) => {
            return Err(Refusal::new(
                "",
                format!("expected a measurement object, found {kind}"),
            ));
        }
    };
    let sensor = required_str(fields.sensor.as_ref(), "sensor")
        .and_then(sensor_id)
        .map_err(Refusal::on("sensor"))?;
    let metric = required_str(fields.metric.as_ref(), "metric")
        .and_then(metric_name)
        .map_err(Refusal::on("metric"))?;
    let time = required_str(fields.time.as_ref(), "time")
        .and_then(timestamp)
        .and_then(|time| window.admit(time, received))
        .map_err(Refusal::on("time"))?;
    let value = match fields.value {
        Some(Field::Number(value)) => finite(value),
        Some(other) => Err(format!("expected a number, found {}", other.kind())),
        None => Err("value is required".to_owned()),
    }
    .map_err(Refusal::on("value"))?;
    let unit = optional_str(fields.unit.as_ref())
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

fn required_str<'a>(field: Option<&'a Field<'_>>, name: &str) -> Result<&'a str, String> {
    optional_str(field)?.ok_or_else(|| format!("{name} is required"))
}

/// A field that may be absent (or null), but is a string when present.
fn optional_str<'a>(field: Option<&'a Field<'_>>) -> Result<Option<&'a str>, String> {
    match field {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Text(text)) => Ok(Some(text)),
        Some(other) => Err(format!("expected a string, found {}", other.kind())),
    }
}

/// An item as this format reads it: of an object, only the five fields it uses (the
/// others are skipped unread); anything else, its kind. Read into a `Value`, an item was
/// a map of every member with a copy of every key and string, and building and dropping
/// it took most of the parse's time.
enum Item<'b> {
    Object(Fields<'b>),
    Other(&'static str),
}

/// The fields of a measurement object, as found. A field given twice keeps its last
/// value, as `serde_json::Map` does.
#[derive(Default)]
struct Fields<'b> {
    sensor: Option<Field<'b>>,
    metric: Option<Field<'b>>,
    time: Option<Field<'b>>,
    value: Option<Field<'b>>,
    unit: Option<Field<'b>>,
}

/// A field's value: a string (borrowed from the body unless it holds escapes), a number
/// (as `serde_json::Number::as_f64` gives it), null, or the kind of anything else.
enum Field<'b> {
    Null,
    Text(Cow<'b, str>),
    Number(f64),
    Other(&'static str),
}

impl Field<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Field::Null => "null",
            Field::Text(_) => "a string",
            Field::Number(_) => "a number",
            Field::Other(kind) => kind,
        }
    }
}

/// The members this format reads; any other is skipped.
enum Key {
    Sensor,
    Metric,
    Time,
    Value,
    Unit,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Key;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a member name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "sensor" => Key::Sensor,
                    "metric" => Key::Metric,
                    "time" => Key::Time,
                    "value" => Key::Value,
                    "unit" => Key::Unit,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Item<'de>, D::Error> {
        struct AnyItem;
        impl<'de> Visitor<'de> for AnyItem {
            type Value = Item<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a measurement")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Sensor => &mut fields.sensor,
                        Key::Metric => &mut fields.metric,
                        Key::Time => &mut fields.time,
                        Key::Value => &mut fields.value,
                        Key::Unit => &mut fields.unit,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(Item::Object(fields))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item<'de>, A::Error> {
                stream::Kind.visit_seq(seq).map(Item::Other)
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item<'de>, E> {
                Ok(Item::Other("a boolean"))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item<'de>, E> {
                Ok(Item::Other("a number"))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item<'de>, E> {
                Ok(Item::Other("a number"))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item<'de>, E> {
                Ok(Item::Other("a number"))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Item<'de>, E> {
                Ok(Item::Other("a string"))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Item<'de>, E> {
                Ok(Item::Other("null"))
            }
        }
        deserializer.deserialize_any(AnyItem)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field<'de>, D::Error> {
        struct AnyField;
        impl<'de> Visitor<'de> for AnyField {
            type Value = Field<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a field's value")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(text)))
            }

            // As `serde_json::Number::as_f64` converts them.
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Field<'de>, E> {
                Ok(Field::Number(number as f64))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Field<'de>, E> {
                Ok(Field::Number(number as f64))
            }

            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Field<'de>, E> {
                Ok(Field::Number(number))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
                Ok(Field::Null)
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
                Ok(Field::Other("a boolean"))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
                stream::Kind.visit_seq(seq).map(Field::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
                stream::Kind.visit_map(map).map(Field::Other)
            }
        }
        deserializer.deserialize_any(AnyField)
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{at, measurement_batch, received};
    use super::*;
    use serde_json::{Value, json};

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
    fn fields_are_read_as_a_json_map_would_hold_them() {
        // Escapes, a repeated field (the last counts), unknown members of any shape,
        // integers of both signs, null for an optional field.
        let body = br#"[
            {"sensor": "prato\"7\u00e8", "metric": "first", "metric": "no2",
             "extra": {"nested": [1, {"deep": null}]}, "more": [true, "x"],
             "time": "2026-11-23T10:00:00Z", "value": -3, "unit": null},
            {"sensor": "s", "metric": "m", "time": "2026-11-23T10:00:00Z",
             "value": 18446744073709551615},
            {"sensor": null, "metric": "m", "time": "2026-11-23T10:00:00Z", "value": 1},
            {"sensor": "s", "metric": ["m"], "time": "2026-11-23T10:00:00Z", "value": 1},
            {"sensor": "s", "metric": "m", "time": "2026-11-23T10:00:00Z", "value": {"v": 1}},
            {"sensor": "s", "metric": "m", "time": "2026-11-23T10:00:00Z", "value": null},
            {"sensor": "s", "metric": "m", "time": true, "value": 1}
        ]"#;
        let parsed = parse_measurements(body, received()).expect("an array body");
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].sensor, "prato\"7\u{e8}");
        assert_eq!(parsed.rows[0].metric, "no2");
        assert_eq!(parsed.rows[0].value, -3.0);
        assert_eq!(parsed.rows[0].unit, None);
        assert_eq!(parsed.rows[1].value, 18_446_744_073_709_551_615_f64);
        let refused: Vec<(usize, &str, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                (2, "sensor", "sensor is required"),
                (3, "metric", "expected a string, found an array"),
                (4, "value", "expected a number, found an object"),
                (5, "value", "expected a number, found null"),
                (6, "time", "expected a string, found a boolean"),
            ]
        );
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
