//! `POST /v2/notify`: NGSI-v2 notifications as FIWARE Orion sends them to a
//! subscription's URL. Pure (no I/O).
//!
//! The body is `{"subscriptionId": "...", "data": [entity, ...]}`; without a string
//! `subscriptionId` or an array `data` the whole body is refused. Both renderings of
//! attributes work, told apart per attribute, so one subscription may use either
//! `attrsFormat`:
//!
//! - normalized: `"temperature": {"type": "Number", "value": 23.5, "metadata": {...}}`
//!   (any object with a `value` member);
//! - keyValues: `"temperature": 23.5`.
//!
//! # Mapping
//!
//! | NGSI-v2 | stored as |
//! |---|---|
//! | entity `id` | sensor |
//! | attribute name | metric |
//! | JSON number | value |
//! | `true` / `false` | `1` / `0` (on/off sensors) |
//! | string holding a number (`"23.5"`): in keyValues, or when the type is `Number`, `Integer` or `Float` | value |
//! | metadata `unitCode` (normalized) | unit |
//! | text, `geo:json` and other objects, arrays, `null` | not stored, reported as ignored |
//! | `id`, `type`, `TimeInstant`, `dateModified`, `dateCreated` | never stored, not reported |
//!
//! The time of an attribute is the first of: its own `metadata.TimeInstant`, the entity's
//! `TimeInstant` attribute, its own `metadata.dateModified`, the entity's `dateModified`
//! attribute, and last the time of receipt. Entity attributes may be normalized
//! (`{"value": "..."}`) or keyValues strings; a `null` one counts as absent. The first
//! one present decides: if it is not an RFC 3339 timestamp with an offset, that attribute
//! is rejected rather than stored at another time.
//!
//! Reports use the entity's index in `data`; the field is the attribute name (`id` for
//! an entity without a usable id, which is rejected whole).

use jiff::Timestamp;
use serde_json::{Map, Value};
use smartregion_contract::format::IngestFormat;

use super::stream::{self, Member, Shape};
use super::{
    BodyError, Limits, Measurement, Parsed, Refusal, Window, finite, json_number, kind,
    metric_name, sensor_id, timestamp, unit_name, within,
};

/// Entity attributes that describe the entity or carry times: never stored as metrics.
const NOT_METRICS: [&str; 5] = ["id", "type", "TimeInstant", "dateModified", "dateCreated"];

/// NGSI types whose string values are numbers Orion has rendered as text.
const NUMERIC_TYPES: [&str; 3] = ["Number", "Integer", "Float"];

/// A parsed notification: which subscription it answers, and its measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct NgsiNotification {
    pub subscription_id: String,
    pub parsed: Parsed,
}

/// Parses an Orion notification body; `received` is the time of last resort.
pub fn parse_ngsi_notification(
    body: &[u8],
    received: Timestamp,
) -> Result<NgsiNotification, BodyError> {
    parse_ngsi_notification_within(body, received, &Limits::default())
}

/// As [`parse_ngsi_notification`], stopping with [`BodyError::TooManyRows`] past `limits`.
pub fn parse_ngsi_notification_within(
    body: &[u8],
    received: Timestamp,
    limits: &Limits,
) -> Result<NgsiNotification, BodyError> {
    let shape = Shape {
        bare_array: false,
        items_key: Some("data"),
        string_key: Some("subscriptionId"),
    };
    let mut parsed = Parsed::default();
    let outline = stream::items(body, &shape, &mut |index, entity| {
        read_entity(index, &entity, received, &limits.window, &mut parsed);
        within(&parsed, limits)
    })?;
    if outline.body_kind != "an object" {
        return Err(BodyError::Shape(
            "expected an NGSI-v2 notification: {\"subscriptionId\": ..., \"data\": [...]}"
                .to_owned(),
        ));
    }
    let subscription_id = match outline.string {
        Some(Ok(id)) => id,
        Some(Err(kind)) => {
            return Err(BodyError::Shape(format!(
                "\"subscriptionId\" must be a string, found {kind}"
            )));
        }
        None => return Err(BodyError::Shape("missing \"subscriptionId\"".to_owned())),
    };
    match outline.items {
        Member::Array => {}
        Member::Other(kind) => {
            return Err(BodyError::Shape(format!(
                "\"data\" must be an array of entities, found {kind}"
            )));
        }
        Member::Absent => return Err(BodyError::Shape("missing \"data\"".to_owned())),
        Member::Repeated => {
            return Err(BodyError::Shape(
                "\"data\" appears more than once".to_owned(),
            ));
        }
    }
    Ok(NgsiNotification {
        subscription_id,
        parsed,
    })
}

/// `POST /v2/notify`, MQTT topic level `ngsi-v2` (Orion's MQTT notifications carry the
/// same body).
pub struct NgsiV2;

impl super::Format for NgsiV2 {
    fn kind(&self) -> IngestFormat {
        IngestFormat::NgsiV2
    }

    fn topic_level(&self) -> &'static str {
        "ngsi-v2"
    }

    fn parse(
        &self,
        body: &[u8],
        received: Timestamp,
        limits: &Limits,
    ) -> Result<Parsed, BodyError> {
        parse_ngsi_notification_within(body, received, limits)
            .map(|notification| notification.parsed)
    }
}

/// What became of one attribute.
enum Reading {
    Row(Measurement),
    Ignored(String),
    Rejected(String),
}

fn read_entity(
    index: usize,
    entity: &Value,
    received: Timestamp,
    window: &Window,
    parsed: &mut Parsed,
) {
    let Value::Object(attributes) = entity else {
        let reason = format!("expected an entity object, found {}", kind(entity));
        return parsed.reject(index, Refusal::new("", reason));
    };
    let sensor = match attributes.get("id") {
        Some(Value::String(id)) => sensor_id(id),
        Some(other) => Err(format!("expected a string, found {}", kind(other))),
        None => Err("entity has no id".to_owned()),
    };
    let sensor = match sensor {
        Ok(sensor) => sensor,
        Err(reason) => return parsed.reject(index, Refusal::new("id", reason)),
    };
    for (name, attribute) in attributes {
        if NOT_METRICS.contains(&name.as_str()) {
            continue;
        }
        match read_attribute(&sensor, name, attribute, attributes, received, window) {
            Reading::Row(row) => parsed.row(row),
            Reading::Ignored(reason) => parsed.ignore(index, Refusal::new(name, reason)),
            Reading::Rejected(reason) => parsed.reject(index, Refusal::new(name, reason)),
        }
    }
}

fn read_attribute(
    sensor: &str,
    name: &str,
    attribute: &Value,
    entity: &Map<String, Value>,
    received: Timestamp,
    window: &Window,
) -> Reading {
    // Only normalized attributes are objects with a `value`; a keyValues attribute that is
    // an object (a geo:json Point, say) has none.
    let normalized = attribute
        .as_object()
        .and_then(|fields| Some((fields.get("value")?, fields)));
    let (value, ngsi_type, metadata) = match normalized {
        Some((value, fields)) => (
            value,
            fields.get("type").and_then(Value::as_str),
            fields.get("metadata").and_then(Value::as_object),
        ),
        None => (attribute, None, None),
    };
    let metric = match metric_name(name) {
        Ok(metric) => metric,
        Err(reason) => return Reading::Rejected(reason),
    };
    let value = match number(value, ngsi_type) {
        Ok(value) => value,
        Err(reading) => return reading,
    };
    let time = match attribute_time(metadata, entity, received)
        .and_then(|time| window.admit(time, received))
    {
        Ok(time) => time,
        Err(reason) => return Reading::Rejected(reason),
    };
    let unit = match metadata.and_then(|metadata| metadata.get("unitCode")) {
        None => None,
        Some(unit_code) => match unit_code.get("value").and_then(Value::as_str) {
            Some(code) => match unit_name(code) {
                Ok(unit) => Some(unit),
                Err(reason) => return Reading::Rejected(format!("unitCode metadata: {reason}")),
            },
            None => {
                return Reading::Rejected("unitCode metadata must have a string value".to_owned());
            }
        },
    };
    Reading::Row(Measurement {
        sensor: sensor.to_owned(),
        metric,
        time,
        value,
        unit,
    })
}

/// The number to store, or why the attribute is ignored or rejected instead.
fn number(value: &Value, ngsi_type: Option<&str>) -> Result<f64, Reading> {
    let type_note = ngsi_type.map_or(String::new(), |t| format!(" (type {t})"));
    match value {
        Value::Number(_) => json_number(value).map_err(Reading::Rejected),
        Value::Bool(on) => Ok(if *on { 1.0 } else { 0.0 }),
        Value::String(text)
            if looks_numeric(text) && ngsi_type.is_none_or(|t| NUMERIC_TYPES.contains(&t)) =>
        {
            text.parse::<f64>()
                .map_err(|error| format!("{text:?} is not a number: {error}"))
                .and_then(finite)
                .map_err(Reading::Rejected)
        }
        Value::String(_) => Err(Reading::Ignored(format!(
            "text value{type_note} is not stored"
        ))),
        Value::Null => Err(Reading::Ignored(format!(
            "null value{type_note} is not stored"
        ))),
        Value::Array(_) => Err(Reading::Ignored(format!(
            "array value{type_note} is not stored"
        ))),
        Value::Object(_) => Err(Reading::Ignored(format!(
            "structured value{type_note} is not stored"
        ))),
    }
}

/// Strings like "23.5", "-4", "1e3". Not "NaN" or "inf", which Rust would also parse:
/// in a keyValues attribute those are more likely text than numbers.
fn looks_numeric(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
}

fn attribute_time(
    metadata: Option<&Map<String, Value>>,
    entity: &Map<String, Value>,
    received: Timestamp,
) -> Result<Timestamp, String> {
    let own = |key| metadata.and_then(|metadata| metadata.get(key));
    let candidates = [
        ("TimeInstant metadata", own("TimeInstant")),
        ("entity TimeInstant", entity.get("TimeInstant")),
        ("dateModified metadata", own("dateModified")),
        ("entity dateModified", entity.get("dateModified")),
    ];
    for (source, found) in candidates {
        let text = match found {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) => text,
            Some(Value::Object(normalized)) => match normalized.get("value") {
                None | Some(Value::Null) => continue,
                Some(Value::String(text)) => text,
                Some(other) => {
                    return Err(format!(
                        "{source}: expected a timestamp string, found {}",
                        kind(other)
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "{source}: expected a timestamp string, found {}",
                    kind(other)
                ));
            }
        };
        return timestamp(text).map_err(|reason| format!("{source}: {reason}"));
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::super::samples::{ORION_KEY_VALUES, ORION_NORMALIZED, at, received};
    use super::super::{Ignored, Rejected};
    use super::*;

    fn parse(body: &str) -> Result<NgsiNotification, BodyError> {
        parse_ngsi_notification(body.as_bytes(), received())
    }

    fn row(sensor: &str, metric: &str, time: &str, value: f64, unit: Option<&str>) -> Measurement {
        Measurement {
            sensor: sensor.to_owned(),
            metric: metric.to_owned(),
            time: at(time),
            value,
            unit: unit.map(str::to_owned),
        }
    }

    fn fields(reports: &[Ignored]) -> Vec<(usize, &str)> {
        reports
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect()
    }

    #[test]
    fn a_normalized_notification_maps_numbers_and_reports_the_rest() {
        let notification = parse(ORION_NORMALIZED).expect("a valid notification");
        assert_eq!(notification.subscription_id, "57458eb60962ef754e7c0998");
        let parsed = notification.parsed;
        // Attributes come out in name order; times from metadata, then the entity's
        // TimeInstant, then its dateModified.
        assert_eq!(
            parsed.rows,
            [
                row("Room1", "humidity", "2026-11-23T10:00:30Z", 61.0, None),
                row(
                    "Room1",
                    "temperature",
                    "2026-11-23T10:00:00Z",
                    23.5,
                    Some("CEL")
                ),
                row(
                    "urn:ngsi-ld:Streetlight:prato:0042",
                    "lampOn",
                    "2026-11-23T08:00:00Z",
                    1.0,
                    None
                ),
                row(
                    "urn:ngsi-ld:Streetlight:prato:0042",
                    "powerConsumption",
                    "2026-11-23T08:00:00Z",
                    61.2,
                    None
                ),
            ]
        );
        assert_eq!(fields(&parsed.ignored), [(0, "location"), (0, "name")]);
        assert_eq!(
            parsed.ignored[0].reason,
            "structured value (type geo:json) is not stored"
        );
        assert_eq!(
            parsed.ignored[1].reason,
            "text value (type Text) is not stored"
        );
        assert!(parsed.rejected.is_empty());
    }

    #[test]
    fn a_key_values_notification_gives_the_same_rows() {
        let parsed = parse(ORION_KEY_VALUES)
            .expect("a valid notification")
            .parsed;
        assert_eq!(
            parsed.rows,
            [
                row("Room1", "humidity", "2026-11-23T10:00:00Z", 61.0, None),
                row("Room1", "temperature", "2026-11-23T10:00:00Z", 23.5, None),
                // Room2 has no time of its own: the time of receipt.
                row("Room2", "occupied", "2026-11-23T10:05:00Z", 0.0, None),
                row("Room2", "temperature", "2026-11-23T10:05:00Z", 21.7, None),
            ]
        );
        assert_eq!(
            fields(&parsed.ignored),
            [(0, "location"), (0, "name"), (1, "note"), (1, "tags")]
        );
        assert!(parsed.rejected.is_empty());
    }

    #[test]
    fn numeric_strings_count_only_for_numeric_types() {
        let body = r#"{"subscriptionId": "s", "data": [{"id": "Pisa-001",
            "zip": {"type": "Text", "value": "56121"},
            "level": {"type": "Integer", "value": "3"},
            "big": {"type": "Number", "value": "1e999"},
            "status": "NaN"}]}"#;
        let parsed = parse(body).expect("a valid notification").parsed;
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(
            (parsed.rows[0].metric.as_str(), parsed.rows[0].value),
            ("level", 3.0)
        );
        assert_eq!(fields(&parsed.ignored), [(0, "status"), (0, "zip")]);
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(parsed.rejected[0].field, "big");
        assert_eq!(parsed.rejected[0].reason, "inf is not a finite number");
    }

    #[test]
    fn bad_times_reject_the_attribute_they_date() {
        let body = r#"{"subscriptionId": "s", "data": [
            {"id": "Siena-7", "TimeInstant": "2026-11-23T10:00:00",
             "temperature": 4.5,
             "pressure": {"type": "Number", "value": 1013,
                          "metadata": {"TimeInstant": {"type": "DateTime", "value": "2026-11-23T10:01:00Z"}}}},
            {"id": "Siena-8", "temperature": {"type": "Number", "value": 5,
             "metadata": {"TimeInstant": {"type": "DateTime", "value": "ieri"}}}}
        ]}"#;
        let parsed = parse(body).expect("a valid notification").parsed;
        // The attribute with its own valid time does not need the entity's broken one.
        assert_eq!(
            parsed.rows,
            [row(
                "Siena-7",
                "pressure",
                "2026-11-23T10:01:00Z",
                1013.0,
                None
            )]
        );
        let blamed: Vec<(usize, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(blamed, [(0, "temperature"), (1, "temperature")]);
        assert!(
            parsed.rejected[0]
                .reason
                .starts_with("entity TimeInstant: ")
        );
        assert!(parsed.rejected[0].reason.contains("offset is required"));
        assert!(
            parsed.rejected[1]
                .reason
                .starts_with("TimeInstant metadata: ")
        );
    }

    #[test]
    fn entities_without_a_usable_id_are_rejected_whole() {
        let body = r#"{"subscriptionId": "s", "data": [
            {"type": "Room", "temperature": 20},
            {"id": 17, "temperature": 20},
            {"id": "Room\u0000", "temperature": 20},
            "Room4",
            {"id": "Room5", "temperature": 20}
        ]}"#;
        let parsed = parse(body).expect("a valid notification").parsed;
        assert_eq!(
            parsed.rejected,
            [
                Rejected {
                    index: 0,
                    field: "id".to_owned(),
                    reason: "entity has no id".to_owned()
                },
                Rejected {
                    index: 1,
                    field: "id".to_owned(),
                    reason: "expected a string, found a number".to_owned()
                },
                Rejected {
                    index: 2,
                    field: "id".to_owned(),
                    reason: "sensor id contains the control character U+0000".to_owned()
                },
                Rejected {
                    index: 3,
                    field: String::new(),
                    reason: "expected an entity object, found a string".to_owned()
                },
            ]
        );
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].sensor, "Room5");
    }

    #[test]
    fn envelopes_without_subscription_or_data_are_refused_whole() {
        for body in [
            r#"[{"id": "Room1"}]"#,
            r#"{"data": []}"#,
            r#"{"subscriptionId": 7, "data": []}"#,
            r#"{"subscriptionId": "s"}"#,
            r#"{"subscriptionId": "s", "data": {"id": "Room1"}}"#,
        ] {
            assert!(
                matches!(parse(body), Err(BodyError::Shape(_))),
                "{body} was not refused"
            );
        }
        assert!(matches!(
            parse(r#"{"subscriptionId": "s", "data": [}"#),
            Err(BodyError::Json {
                line: 1,
                column: 34,
                ..
            })
        ));
    }
}
