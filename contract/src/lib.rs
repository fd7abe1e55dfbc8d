//! The contract between smartregion's two binaries, `smartregion-operator` and
//! `smartregion-ingest`: what one writes and the other reads, kept in one place.
//!
//! - [`env`](mod@env): the environment the operator's ingest Deployment sets and ingest reads.
//! - [`tenant`]: the tenant-name rule and the schema a name maps to.
//! - [`format`](mod@format): the payload formats (`spec.ingest.formats` and ingest's endpoints).
//! - [`mqtt`]: the MQTT broker address syntax.
//! - [`open_data`]: the vocabularies an open dataset is described with (licence, themes,
//!   update frequency).
//! - [`postgres`]: `sslmode` and TLS to PostgreSQL with rustls.
//! - [`logging`]: the log formats and their set-up.
//!
//! Pure: no server, no client, no I/O beyond reading a CA bundle. Neither binary's HTTP
//! or MQTT stack is linked through here.

pub mod env;
pub mod format;
pub mod logging;
pub mod mqtt;
pub mod open_data;
pub mod postgres;
pub mod tenant;
