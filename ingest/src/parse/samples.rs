//! Test fixtures: realistic payloads of the three formats, shared by the parsers' unit
//! tests and the mutation test. Test-only, pure.

use jiff::Timestamp;

/// When the test payloads "arrived": 2026-11-23T10:05:00Z.
pub(super) fn received() -> Timestamp {
    Timestamp::constant(1_795_428_300, 0)
}

/// Parses a timestamp the test itself wrote.
pub(super) fn at(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|error| panic!("bad test timestamp {text}: {error}"))
}

/// Orion notification in normalized rendering, as in the Orion NGSI-v2 docs, with the
/// TimeInstant metadata an IoT Agent adds and a few attributes that are not numbers.
pub(super) const ORION_NORMALIZED: &str = r#"{
  "subscriptionId": "57458eb60962ef754e7c0998",
  "data": [
    {
      "id": "Room1",
      "type": "Room",
      "temperature": {
        "type": "Number",
        "value": 23.5,
        "metadata": {
          "TimeInstant": {"type": "DateTime", "value": "2026-11-23T10:00:00.000Z"},
          "unitCode": {"type": "Text", "value": "CEL"}
        }
      },
      "humidity": {
        "type": "Number",
        "value": "61",
        "metadata": {
          "TimeInstant": {"type": "DateTime", "value": "2026-11-23T10:00:30.000Z"}
        }
      },
      "name": {"type": "Text", "value": "Sala Rossa", "metadata": {}},
      "location": {
        "type": "geo:json",
        "value": {"type": "Point", "coordinates": [11.2558, 43.7696]},
        "metadata": {}
      },
      "TimeInstant": {"type": "DateTime", "value": "2026-11-23T09:59:00.000Z", "metadata": {}}
    },
    {
      "id": "urn:ngsi-ld:Streetlight:prato:0042",
      "type": "Streetlight",
      "lampOn": {"type": "Boolean", "value": true, "metadata": {}},
      "powerConsumption": {"type": "Number", "value": 61.2, "metadata": {}},
      "dateModified": {"type": "DateTime", "value": "2026-11-23T09:00:00+01:00", "metadata": {}}
    }
  ]
}"#;

/// The same kind of notification with `attrsFormat: keyValues`: bare values, time in the
/// entity's TimeInstant attribute.
pub(super) const ORION_KEY_VALUES: &str = r#"{
  "subscriptionId": "57458eb60962ef754e7c0998",
  "data": [
    {
      "id": "Room1",
      "type": "Room",
      "temperature": 23.5,
      "humidity": 61,
      "name": "Sala Rossa",
      "location": {"type": "Point", "coordinates": [11.2558, 43.7696]},
      "TimeInstant": "2026-11-23T10:00:00.000Z"
    },
    {
      "id": "Room2",
      "type": "Room",
      "temperature": "21.7",
      "occupied": false,
      "tags": ["north", "ground floor"],
      "note": null
    }
  ]
}"#;

/// RFC 8428 §5.1.2, "Multiple Datapoints": relative times against an absolute base time.
pub(super) const SENML_MULTIPLE_DATAPOINTS: &str = r#"[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
]"#;

/// RFC 8428 §5.1.3, "Multiple Measurements": one name, told apart only by unit.
pub(super) const SENML_MULTIPLE_MEASUREMENTS: &str = r#"[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":20},
  {"u":"lon","v":24.30621},
  {"u":"lat","v":60.07965},
  {"t":60,"v":20.3},
  {"u":"lon","t":60,"v":24.30622},
  {"u":"lat","t":60,"v":60.07965},
  {"t":120,"v":20.7},
  {"u":"lon","t":120,"v":24.30623},
  {"u":"lat","t":120,"v":60.07966},
  {"u":"%EL","t":150,"v":98},
  {"t":180,"v":21.2},
  {"u":"lon","t":180,"v":24.30628},
  {"u":"lat","t":180,"v":60.07967}
]"#;

/// RFC 8428 §5.1.6, "Multiple Data Types".
pub(super) const SENML_MULTIPLE_DATA_TYPES: &str = r#"[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
  {"n":"label","vs":"Machine Room"},
  {"n":"open","vb":false},
  {"n":"nfc-reader","vd":"aGkgCg"}
]"#;

/// A sensor without a clock: times relative to receipt, no base time.
pub(super) const SENML_RELATIVE: &str = r#"[
  {"bn":"urn:dev:mac:0024befffe804ff1/","n":"pm10","u":"ug/m3","t":-60,"v":18},
  {"n":"pm10","t":-30,"v":19.5},
  {"n":"pm10","v":21},
  {"n":"door","vb":true}
]"#;

/// A `/v1/measurements` batch of `count` good items from Florence air-quality stations.
pub(super) fn measurement_batch(count: usize) -> Vec<serde_json::Value> {
    (0..count)
        .map(|i| {
            serde_json::json!({
                "sensor": format!("firenze-aq-{:03}", i % 7),
                "metric": if i % 2 == 0 { "no2" } else { "pm10" },
                "time": format!("2026-11-23T10:{:02}:00+01:00", i % 60),
                "value": 10.0 + i as f64 / 4.0,
                "station": "Firenze Gramsci",
            })
        })
        .collect()
}

/// Every valid payload above, as bytes: seeds for the mutation test.
pub(super) fn all() -> Vec<Vec<u8>> {
    let batch = serde_json::Value::Array(measurement_batch(5)).to_string();
    [
        batch.as_str(),
        ORION_NORMALIZED,
        ORION_KEY_VALUES,
        SENML_MULTIPLE_DATAPOINTS,
        SENML_MULTIPLE_MEASUREMENTS,
        SENML_MULTIPLE_DATA_TYPES,
        SENML_RELATIVE,
    ]
    .iter()
    .map(|payload| payload.as_bytes().to_vec())
    .collect()
}
