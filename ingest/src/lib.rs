//! smartregion-ingest as a library: the parts of the ingest service that need no network,
//! database or clock, so they can be unit-tested and fuzzed on their own.
//!
//! - [`parse`]: the three payload formats (own JSON batch, NGSI-v2, SenML) into rows and
//!   per-item explanations. Pure.
//!
//! The binary (`main.rs`) owns all I/O: HTTP, MQTT and PostgreSQL.

pub mod parse;
