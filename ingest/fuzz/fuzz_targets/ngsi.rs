//! Fuzz target: the ngsi parser must answer Ok or Err for any bytes, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smartregion_ingest::parse;

fn received() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_795_428_000).expect("in range")
}

fuzz_target!(|data: &[u8]| {
    let _ = parse::parse_ngsi_notification(data, received());
});
