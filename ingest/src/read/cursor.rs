//! Where the next page starts: the key of its first row (sensor, metric, time: the
//! measurements' unique key, or the bucket's start), which query it belongs to, and the
//! range that query resolved (so a query that left `toDate` to "now" pages through the
//! same range).
//! Opaque to clients (base64url of JSON); only positions within the query's own rows,
//! so a forged cursor reaches nothing the query itself could not. Pure.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The query's fingerprint (`SeriesQuery::fingerprint`).
    #[serde(rename = "q")]
    pub query: String,
    #[serde(rename = "s")]
    pub sensor: String,
    #[serde(rename = "m")]
    pub metric: String,
    #[serde(rename = "t")]
    pub time: Timestamp,
    /// The query's range as its first page resolved it.
    #[serde(rename = "f")]
    pub from: Timestamp,
    #[serde(rename = "u")]
    pub to: Timestamp,
}

/// A cursor longer than this is not one of ours.
const MAX_LENGTH: usize = 2048;

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    pub fn decode(text: &str) -> Result<Cursor, &'static str> {
        const NOT_OURS: &str =
            "cursor is not one this service gave: copy the `next` value of the previous page";
        if text.len() > MAX_LENGTH {
            return Err(NOT_OURS);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| NOT_OURS)?;
        serde_json::from_slice(&bytes).map_err(|_| NOT_OURS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_nothing_else_decodes() {
        let cursor = Cursor {
            query: "0123456789abcdef".into(),
            sensor: "via roma, 1 \"nord\"".into(),
            metric: "pm2.5".into(),
            time: "2026-01-01T00:00:00.000001Z".parse().unwrap(),
            from: "2025-12-31T00:00:00Z".parse().unwrap(),
            to: "2026-01-02T00:00:00Z".parse().unwrap(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(b"{\"q\":1}")).is_err());
        assert!(Cursor::decode(&"A".repeat(MAX_LENGTH + 1)).is_err());
    }
}
