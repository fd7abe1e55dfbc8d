//! The memory bound the HTTP layer reserves before parsing a body
//! (`parse::cost::parse_bytes`) holds for real parses: a counting allocator measures the
//! peak bytes each parse allocates, for realistic bodies and for shapes built to cost as
//! much memory per byte as JSON allows.
//!
//! Counting is per thread (the parse is synchronous, on the test's thread), so tests
//! running in parallel do not disturb each other. A reallocation counts its new buffer
//! before the old one is freed, as the copy does.

// A global allocator is an unsafe trait: the only unsafe code of the workspace, in a test.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use jiff::Timestamp;
use smartregion_ingest::parse::{self, Format as _, Limits};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + bytes);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            add(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(pointer, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            add(new_size as isize);
            add(-(layout.size() as isize));
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RECEIVED: Timestamp = Timestamp::constant(1_795_000_000, 0);

/// Peak bytes allocated by `run` beyond what was live when it started.
fn peak_of(run: impl FnOnce()) -> usize {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    run();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

enum Format {
    Measurements,
    Ngsi,
    SenML,
}

/// Parses `body` as `format` under `limits` and checks the peak against the bound.
fn check(name: &str, format: Format, body: &[u8], limits: Limits) {
    let bound = parse::cost::parse_bytes(body, &limits);
    let peak = peak_of(|| {
        let outcome = match format {
            Format::Measurements => parse::measurements::Measurements
                .parse(body, RECEIVED, &limits)
                .map(|parsed| parsed.rows.len()),
            Format::Ngsi => parse::ngsi::NgsiV2
                .parse(body, RECEIVED, &limits)
                .map(|parsed| parsed.rows.len()),
            Format::SenML => parse::senml::SenML
                .parse(body, RECEIVED, &limits)
                .map(|parsed| parsed.rows.len()),
        };
        std::hint::black_box(outcome.ok());
    });
    println!(
        "{name}: body {} B, peak {peak} B ({:.1}x the body), bound {bound} B ({:.1}x the peak)",
        body.len(),
        peak as f64 / body.len() as f64,
        bound as f64 / peak.max(1) as f64,
    );
    assert!(
        peak <= bound,
        "{name}: the parse took {peak} bytes, more than the bound of {bound}"
    );
}

fn repeat(item: &str, count: usize, open: &str, close: &str) -> Vec<u8> {
    let mut body = String::from(open);
    for index in 0..count {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&item.replace("{i}", &index.to_string()));
    }
    body.push_str(close);
    body.into_bytes()
}

#[test]
fn the_reserved_bound_covers_every_parse() {
    let all = Limits::default();
    let burst = Limits {
        max_rows: 1000,
        ..Limits::default()
    };
    let measurement = r#"{"sensor":"firenze-aq-{i}","metric":"no2","time":"2026-11-23T10:00:00Z","value":41.5,"unit":"ug/m3"}"#;
    check(
        "measurements, 1000 items",
        Format::Measurements,
        &repeat(measurement, 1000, "[", "]"),
        all,
    );
    check(
        "measurements, 100k items, stopped at 1000 rows",
        Format::Measurements,
        &repeat(measurement, 100_000, "[", "]"),
        burst,
    );
    check(
        "measurements, 100k items, wrapped, no row limit",
        Format::Measurements,
        &repeat(measurement, 100_000, r#"{"measurements":["#, "]}"),
        all,
    );
    check(
        "numbers, 1M",
        Format::Measurements,
        &repeat("0", 1_000_000, "[", "]"),
        all,
    );
    check(
        "empty objects, 1M",
        Format::SenML,
        &repeat("{}", 1_000_000, "[", "]"),
        all,
    );
    check(
        "one-member objects, 500k",
        Format::Measurements,
        &repeat(r#"{"a":0}"#, 500_000, "[", "]"),
        all,
    );
    let junk = repeat("1", 1_000_000, "[", "]");
    let huge_item = format!(
        r#"[{{"sensor":"a","metric":"b","time":"2026-11-23T10:00:00Z","value":1,"junk":{}}}]"#,
        String::from_utf8(junk).unwrap()
    );
    check(
        "one item with a million-number field",
        Format::Measurements,
        huge_item.as_bytes(),
        all,
    );
    let nested = format!("[{}1{}]", "[".repeat(120), "]".repeat(120));
    check(
        "nested arrays",
        Format::Measurements,
        nested.as_bytes(),
        all,
    );
    let text = "x".repeat(4 * 1024 * 1024);
    let long_string =
        format!(r#"[{{"sensor":"{text}","metric":"b","time":"2026-11-23T10:00:00Z","value":1}}]"#);
    check(
        "a 4 MiB sensor id (rejected)",
        Format::Measurements,
        long_string.as_bytes(),
        all,
    );
    let escaped = repeat(r#""\u00e8\n\"{i}""#, 200_000, "[", "]");
    check("escaped strings", Format::SenML, &escaped, all);
    let digits = format!(
        r#"{{"subscriptionId":"s","data":[{{"id":"e","t":{{"type":"Number","value":"1{}"}}}}]}}"#,
        "0".repeat(1_000_000)
    );
    check(
        "an NGSI number written as a million digits",
        Format::Ngsi,
        digits.as_bytes(),
        all,
    );

    let id = "urn:ngsi-ld:AirQualityObserved:".to_owned() + &"x".repeat(200);
    let note = "n".repeat(8000);
    let entity = format!(
        r#"{{"id":"{id}-{{i}}","type":"AirQualityObserved","no2":{{"type":"Number","value":41.5,"metadata":{{"unitCode":{{"type":"Text","value":"GQ"}}}}}},"address":{{"type":"Text","value":"{note}"}},"note":{{"type":"Text","value":"{note}"}}}}"#
    );
    check(
        "NGSI, 500 entities with long texts, 1000-row limit",
        Format::Ngsi,
        &repeat(&entity, 500, r#"{"subscriptionId":"sub-1","data":["#, "]}"),
        burst,
    );
    let many_attributes = format!(
        r#"{{"subscriptionId":"s","data":[{}]}}"#,
        String::from_utf8(repeat(
            r#""a{i}":{"type":"Number","value":{i}}"#,
            20_000,
            r#"{"id":"e","#,
            "}"
        ))
        .unwrap()
    );
    check(
        "NGSI, one entity with 20k attributes",
        Format::Ngsi,
        many_attributes.as_bytes(),
        all,
    );
    let senml = repeat(
        r#"{"v":{i}}"#,
        200_000,
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":1},"#,
        "]",
    );
    check("SenML, 200k compact records", Format::SenML, &senml, all);
    check(
        "SenML, 200k compact records, 1000-row limit",
        Format::SenML,
        &senml,
        burst,
    );
}
