//! The payload formats: `spec.ingest.formats` in the API, the endpoints ingest serves,
//! and the values of `SMARTREGION_INGEST_FORMATS` between the two — one enum for all.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A payload format the ingest service accepts.
#[derive(
    JsonSchema, Serialize, Deserialize, clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash,
)]
#[value(rename_all = "verbatim")]
pub enum IngestFormat {
    /// `POST /v1/measurements`: a JSON batch of sensor, metric, time, value.
    Measurements,
    /// `POST /v2/notify`: NGSI-v2 notifications as FIWARE Orion sends them.
    NgsiV2,
    /// `POST /v1/senml`: RFC 8428 SenML JSON packs.
    SenML,
}

impl IngestFormat {
    pub const ALL: [IngestFormat; 3] = [
        IngestFormat::Measurements,
        IngestFormat::NgsiV2,
        IngestFormat::SenML,
    ];

    /// The path ingest serves it on.
    pub fn endpoint(self) -> &'static str {
        match self {
            IngestFormat::Measurements => "/v1/measurements",
            IngestFormat::NgsiV2 => "/v2/notify",
            IngestFormat::SenML => "/v1/senml",
        }
    }

    /// As the API, the environment and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestFormat::Measurements => "Measurements",
            IngestFormat::NgsiV2 => "NgsiV2",
            IngestFormat::SenML => "SenML",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_spelling_is_the_same() {
        for format in IngestFormat::ALL {
            let json = serde_json::to_value(format).unwrap();
            assert_eq!(json, format.as_str());
            assert_eq!(IngestFormat::from_str(format.as_str(), false), Ok(format));
        }
    }
}
