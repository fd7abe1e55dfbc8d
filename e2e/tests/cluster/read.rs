//! The read service (`smartregion-ingest read`) on the real PostgreSQL (and TimescaleDB in
//! its suite), with the tenant's own `db-reader` login: its answers equal SQL's row for
//! row, raw and aggregated; pages hold every row exactly once; a large page streams
//! within a memory bound; keys and shares are enforced, the shares by the database
//! (docs/read-api.md).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, bail, ensure};
use http_body_util::BodyExt;
use kube::Client;
use serde_json::{Value, json};
use smartregion_e2e::ingest::{HttpClient, Ingest};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};

/// How far back the data goes from the last whole hour, so every bucket below is whole
/// and the default range (the day before now) holds at least 23 hours of it.
pub(crate) const DAYS: i64 = 2;
pub(crate) const SENSORS: &[&str] = &["s-01", "s-02", "s-03"];
pub(crate) const METRICS: &[&str] = &["no2", "pm10"];

/// The read service of `tenant` as its Deployment runs it: the pod's environment (the
/// `db-reader` login and `read-keys` resolved, as the kubelet would), on the host; and
/// the first key of `read-keys`.
pub(crate) async fn read_service(client: &Client, tenant: &str) -> Result<(Ingest, String)> {
    let namespace = format!("srt-{tenant}");
    let env = smartregion_e2e::workload::container_env(client, &namespace, "read", "read").await?;
    let keys = secret_value(client, tenant, "read-keys", "keys").await?;
    let key = keys
        .lines()
        .next()
        .context("read-keys has no key")?
        .to_string();
    let mut service = Ingest::start_read(shared(), env)?;
    service.wait_ready(Duration::from_secs(30)).await?;
    Ok((service, key))
}

/// A minute of data per sensor and metric over the `DAYS` days before the last whole hour,
/// written by the tenant's writer login; the range it covers.
pub(crate) async fn write_minutes(client: &Client, tenant: &str) -> Result<(String, String)> {
    let writer = login(client, tenant, "db-writer").await?;
    let row = writer
        .query_one(
            "SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - make_interval(days => $1::int), \
                    'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    to_char(date_trunc('hour', now() AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[&(DAYS as i32)],
        )
        .await?;
    let (from, to): (String, String) = (row.get(0), row.get(1));
    writer
        .execute(
            "INSERT INTO measurements (sensor, metric, time, value) \
             SELECT sensor, metric, t, \
                    round((extract(epoch FROM t)::bigint % 997)::numeric / 7 + length(sensor || metric), 3)::float8 \
             FROM unnest($1::text[]) sensor, unnest($2::text[]) metric, \
                  generate_series($3::text::timestamptz, $4::text::timestamptz - interval '1 minute', interval '1 minute') t",
            &[&SENSORS, &METRICS, &from, &to],
        )
        .await?;
    writer
        .batch_execute(
            "INSERT INTO sensors (id, name, metadata) VALUES \
             ('s-01', 'Via Roma', '{\"lat\": 43.88}'), ('s-02', 'Piazza Duomo', '{}'), \
             ('s-03', NULL, '{}'), ('s-99', 'Never measured', '{}')",
        )
        .await?;
    Ok((from, to))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Every row of a query, page after page (following `next`), as JSON rows; the number of
/// pages.
/// Without a key when `key` is `None` (open data).
pub(crate) async fn all_pages(
    service: &Ingest,
    key: Option<&str>,
    path_and_query: &str,
) -> Result<(Vec<Value>, usize)> {
    let http = HttpClient::new();
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .iter()
        .map(|auth| ("authorization", auth.as_str()))
        .collect();
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => service.url(path_and_query),
            Some(cursor) => service.url(&format!("{path_and_query}&cursor={cursor}")),
        };
        let answer = http.get_with(&url, &headers).await?;
        ensure!(
            answer.status == 200,
            "{url}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let page = answer.json()?;
        pages += 1;
        rows.extend(page["rows"].as_array().context("no rows")?.iter().cloned());
        let link = answer
            .headers
            .get("link")
            .map(|value| value.to_str().unwrap().to_string());
        match page["next"].as_str() {
            Some(next) => {
                let link = link.context("a next cursor without a Link header")?;
                ensure!(link.contains(&format!("cursor={next}")), "{link}");
                cursor = Some(next.to_string());
            }
            None => {
                ensure!(link.is_none(), "the last page has a Link header: {link:?}");
                return Ok((rows, pages));
            }
        }
        ensure!(pages < 10_000, "paging does not end");
    }
}

/// A value of a row as the service and SQL give it.
fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => a == b,
    }
}

pub(crate) fn same_rows(what: &str, served: &[Value], expected: &[Value]) -> Result<()> {
    ensure!(
        served.len() == expected.len(),
        "{what}: the service gave {} rows, SQL {}",
        served.len(),
        expected.len()
    );
    for (index, (served, expected)) in served.iter().zip(expected).enumerate() {
        let fields = expected.as_object().context("a row is an object")?;
        for (field, value) in fields {
            ensure!(
                close(&served[field], value),
                "{what}, row {index}, {field}: the service gave {}, SQL {value}\n  served {served}\n  SQL    {expected}",
                served[field]
            );
        }
        ensure!(
            served.as_object().map(|object| object.len()) == Some(fields.len()),
            "{what}, row {index}: fields differ: {served} against {expected}"
        );
    }
    Ok(())
}

/// Rows of `sql` (run by `reader`), each an object of its columns: text as text, times as
/// RFC 3339 text, numbers as numbers.
pub(crate) async fn sql_rows(
    reader: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Value>> {
    use tokio_postgres::types::Type;
    let rows = reader.query(sql, params).await?;
    rows.iter()
        .map(|row| {
            let mut object = serde_json::Map::new();
            for (index, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::TEXT => json!(row.get::<_, String>(index)),
                    Type::FLOAT8 => json!(row.get::<_, Option<f64>>(index)),
                    Type::INT8 => json!(row.get::<_, i64>(index)),
                    Type::TIMESTAMPTZ => json!(row.get::<_, jiff::Timestamp>(index).to_string()),
                    ref other => bail!("no JSON for a column of type {other}"),
                };
                object.insert(column.name().to_string(), value);
            }
            Ok(Value::Object(object))
        })
        .collect()
}

#[tokio::test]
async fn raw_and_aggregated_answers_equal_sql_row_for_row_and_pages_hold_each_row_once()
-> Result<()> {
    let client = client().await?;
    let shard = unique_name("read-sql");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let tenant = unique_name("read-a");
    apply_tenant(&client, &example("prato", &tenant, &shard)?).await?;
    wait_ready(&client, &tenant).await?;
    let (from, to) = write_minutes(&client, &tenant).await?;
    let (service, key) = read_service(&client, &tenant).await?;
    let reader = login(&client, &tenant, "db-reader").await?;
    let range = format!("fromDate={from}&toDate={to}");

    // Raw, every sensor and metric, in pages of 1000: each row exactly once, in key order.
    let (served, pages) = all_pages(
        &service,
        Some(&key),
        &format!("/v2/attrs?{range}&limit=1000"),
    )
    .await?;
    let expected = sql_rows(
        &reader,
        "SELECT sensor AS \"entityId\", metric AS \"attrName\", time, value FROM measurements \
         WHERE time >= $1::text::timestamptz AND time < $2::text::timestamptz ORDER BY 1, 2, 3",
        &[&from, &to],
    )
    .await?;
    ensure!(expected.len() == SENSORS.len() * METRICS.len() * DAYS as usize * 1440);
    same_rows("raw rows", &served, &expected)?;
    ensure!(
        pages == expected.len().div_ceil(1000),
        "{pages} pages for {} rows",
        expected.len()
    );

    // A query that leaves its range to the defaults (the day before now) pages through
    // that range, whatever "now" is when the later pages are asked for.
    let (served, pages) = all_pages(
        &service,
        Some(&key),
        "/v2/entities/s-01/attrs/pm10?limit=100",
    )
    .await?;
    let times: Vec<&str> = served
        .iter()
        .filter_map(|row| row["time"].as_str())
        .collect();
    ensure!(
        pages > 1 && times.len() > 100,
        "{pages} pages, {} rows",
        times.len()
    );
    ensure!(
        times.windows(2).all(|pair| pair[0] < pair[1]),
        "each row once, in order"
    );

    // Hourly aggregates of one metric of two sensors, every method, against SQL that
    // buckets by itself (date_trunc) and takes first and last by window functions.
    let (served, _) = all_pages(
        &service,
        Some(&key),
        &format!("/v2/attrs/pm10?id=s-02,s-01&{range}&aggrMethod=avg,min,max,sum,count,first,last&aggrPeriod=PT1H&limit=7"),
    )
    .await?;
    let expected = sql_rows(
        &reader,
        "SELECT sensor AS \"entityId\", metric AS \"attrName\", bucket AS time, \
                avg(value) AS avg, min(value) AS min, max(value) AS max, sum(value) AS sum, \
                count(*) AS count, min(first) AS first, min(last) AS last \
         FROM (SELECT sensor, metric, value, date_trunc('hour', time) AS bucket, \
                 first_value(value) OVER w AS first, last_value(value) OVER w AS last \
               FROM measurements \
               WHERE metric = 'pm10' AND sensor IN ('s-01', 's-02') \
                 AND time >= $1::text::timestamptz AND time < $2::text::timestamptz \
               WINDOW w AS (PARTITION BY sensor, metric, date_trunc('hour', time) ORDER BY time \
                            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) rows \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        &[&from, &to],
    )
    .await?;
    ensure!(expected.len() == 2 * DAYS as usize * 24);
    same_rows("hourly aggregates", &served, &expected)?;

    // Five-minute maxima of one series in CSV, paged: the CSV's rows are SQL's.
    let http = HttpClient::new();
    let auth = bearer(&key);
    let mut csv_rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let answer = http
            .get_with(
                &service.url(&format!("/v2/entities/s-03/attrs/no2?{range}&aggrMethod=max&aggrPeriod=PT5M&limit=100{cursor}")),
                &[("authorization", &auth), ("accept", "text/csv")],
            )
            .await?;
        ensure!(
            answer.status == 200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        ensure!(
            answer.headers["content-type"]
                .to_str()?
                .starts_with("text/csv")
        );
        let text = String::from_utf8(answer.body.to_vec())?;
        let mut lines = text.lines();
        ensure!(
            lines.next() == Some("entityId,attrName,time,max"),
            "{text:.200}"
        );
        csv_rows.extend(lines.map(str::to_string));
        match answer.headers.get("link") {
            Some(link) => {
                let link = link.to_str()?;
                let next = link
                    .split("cursor=")
                    .nth(1)
                    .and_then(|rest| rest.split('>').next());
                cursor = format!("&cursor={}", next.context("a Link without a cursor")?);
            }
            None => break,
        }
    }
    let expected: Vec<String> = reader
        .query(
            "SELECT to_timestamp(floor(extract(epoch FROM time) / 300) * 300) AS bucket, max(value) \
             FROM measurements WHERE sensor = 's-03' AND metric = 'no2' \
               AND time >= $1::text::timestamptz AND time < $2::text::timestamptz \
             GROUP BY 1 ORDER BY 1",
            &[&from, &to],
        )
        .await?
        .iter()
        .map(|row| {
            format!(
                "s-03,no2,{},{}",
                row.get::<_, jiff::Timestamp>(0),
                serde_json::Number::from_f64(row.get(1)).unwrap()
            )
        })
        .collect();
    ensure!(
        csv_rows == expected,
        "CSV rows differ: {} against {}; first {:?} against {:?}",
        csv_rows.len(),
        expected.len(),
        csv_rows.first(),
        expected.first()
    );

    // PT0S: one bucket for the whole range, starting at fromDate.
    let answer = http
        .get_with(
            &service.url(&format!(
                "/v2/entities/s-01?{range}&aggrMethod=count,avg&aggrPeriod=PT0S"
            )),
            &[("authorization", &auth)],
        )
        .await?
        .json()?;
    let expected = sql_rows(
        &reader,
        "SELECT sensor AS \"entityId\", metric AS \"attrName\", $1::text::timestamptz AS time, \
                count(*) AS count, avg(value) AS avg FROM measurements \
         WHERE sensor = 's-01' AND time >= $1::text::timestamptz AND time < $2::text::timestamptz \
         GROUP BY 1, 2 ORDER BY 1, 2",
        &[&from, &to],
    )
    .await?;
    same_rows(
        "the whole range",
        answer["rows"].as_array().context("rows")?,
        &expected,
    )?;
    ensure!(
        answer["aggrPeriod"] == "PT0S" && answer["next"].is_null(),
        "{answer}"
    );

    // The catalogue: every sensor, with each metric's last time and value (SQL's), and
    // a sensor never measured listed without metrics; paged by sensor.
    let answer = http
        .get_with(
            &service.url("/v2/entities?limit=3"),
            &[("authorization", &auth)],
        )
        .await?;
    ensure!(
        answer.status == 200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let first = answer.json()?;
    let next = first["next"]
        .as_str()
        .context("a second page of the catalogue")?;
    let second = http
        .get_with(
            &service.url(&format!("/v2/entities?limit=3&cursor={next}")),
            &[("authorization", &auth)],
        )
        .await?
        .json()?;
    let entities: Vec<Value> = [first, second]
        .iter()
        .flat_map(|page| page["entities"].as_array().cloned().unwrap_or_default())
        .collect();
    let ids: Vec<&str> = entities
        .iter()
        .filter_map(|entity| entity["id"].as_str())
        .collect();
    ensure!(ids == ["s-01", "s-02", "s-03", "s-99"], "{ids:?}");
    ensure!(
        entities[0]["name"] == "Via Roma" && entities[0]["metadata"]["lat"] == 43.88,
        "{}",
        entities[0]
    );
    ensure!(entities[3]["attrs"] == json!([]), "{}", entities[3]);
    let latest = sql_rows(
        &reader,
        "SELECT DISTINCT ON (sensor, metric) sensor AS \"entityId\", metric AS name, time AS \"lastTime\", value AS \"lastValue\" \
         FROM measurements ORDER BY sensor, metric, time DESC",
        &[],
    )
    .await?;
    let served: Vec<Value> = entities
        .iter()
        .flat_map(|entity| {
            entity["attrs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |mut attr| {
                    attr["entityId"] = entity["id"].clone();
                    attr
                })
        })
        .collect();
    same_rows("the catalogue's last values", &served, &latest)?;

    // Refusals say what is wrong and which parameter.
    for (query, parameter) in [
        (
            format!("/v2/attrs?fromDate={from}&toDate=2020-01-01T00:00:00Z"),
            "fromDate",
        ),
        (
            "/v2/attrs?fromDate=2020-01-01T00:00:00Z".to_string(),
            "range",
        ),
        ("/v2/attrs?limit=1000000".to_string(), "limit"),
        (
            "/v2/attrs?aggrMethod=avg&aggrPeriod=P1M".to_string(),
            "aggrPeriod",
        ),
        ("/v2/attrs?lastN=3".to_string(), "query"),
        ("/v2/attrs?cursor=forged".to_string(), "cursor"),
    ] {
        let answer = http
            .get_with(&service.url(&query), &[("authorization", &auth)])
            .await?;
        let body = answer.json()?;
        ensure!(
            answer.status == 400 && body["parameter"] == parameter,
            "{query}: {} {body}",
            answer.status
        );
    }
    delete_and_wait(&client, &tenant).await
}

/// Peak resident memory of a process so far (VmHWM), in bytes.
fn peak_memory(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no VmHWM")?
        .parse()?;
    Ok(kib * 1024)
}

#[tokio::test]
async fn a_large_page_streams_within_a_memory_bound_and_keys_are_required() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("read-mem");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let tenant = unique_name("read-m");
    apply_tenant(&client, &example("prato", &tenant, &shard)?).await?;
    wait_ready(&client, &tenant).await?;
    // 100 000 minutes of one series (about 70 days), the largest page.
    let writer = login(&client, &tenant, "db-writer").await?;
    writer
        .execute(
            "INSERT INTO measurements (sensor, metric, time, value) \
             SELECT 'big', 'pm10', date_trunc('minute', now()) - make_interval(mins => n), n / 7.0 \
             FROM generate_series(1, 100000) n",
            &[],
        )
        .await?;
    let (service, key) = read_service(&client, &tenant).await?;
    let http = HttpClient::new();
    let auth = bearer(&key);

    // Keys: none, another's, a near miss: 401, and nothing of the data in the answer.
    for header in [
        None,
        Some("Bearer someone-elses-key-0123456789".to_string()),
        Some(bearer(&key[..key.len() - 1])),
    ] {
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        let answer = http
            .get_with(&service.url("/v2/entities/big/attrs/pm10"), &headers)
            .await?;
        ensure!(answer.status == 401, "{header:?}: {}", answer.status);
        ensure!(!String::from_utf8_lossy(&answer.body).contains("big"));
    }

    // A small page first, so the peak below is what the large page adds.
    let url = service
        .url("/v2/entities/big/attrs/pm10?fromDate=2000-01-01T00:00:00Z&limit=10&aggrMethod=count");
    ensure!(
        http.get_with(&url, &[("authorization", &auth)])
            .await?
            .status
            == 400,
        "a 26-year range is over the aggregated limit"
    );
    let answer = http
        .get_with(
            &service.url("/v2/entities/big/attrs/pm10?fromDate=2026-01-01T00:00:00Z&limit=10"),
            &[("authorization", &auth)],
        )
        .await?;
    ensure!(
        answer.status == 200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let before = peak_memory(service.pid())?;

    // The whole series as one page of 100 000 rows, read slowly: what the service holds
    // does not grow with what it sends.
    let from = "fromDate=2026-01-01T00:00:00Z";
    let response = http
        .open(
            &service.url(&format!("/v2/entities/big/attrs/pm10?{from}&limit=100000")),
            &[("authorization", &auth)],
        )
        .await?;
    ensure!(response.status() == 200);
    let mut body = response.into_body();
    let mut bytes = 0usize;
    let mut text = Vec::new();
    let mut pieces = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len();
            text.extend_from_slice(&data);
            pieces += 1;
            if pieces % 20 == 0 {
                // A slow client: the database and the service wait for it.
                tokio::task::yield_now().await;
            }
        }
    }
    let page: Value = serde_json::from_slice(&text)?;
    let rows = page["rows"].as_array().context("rows")?.len();
    ensure!(rows == 100_000 - 1 || rows == 100_000, "{rows} rows");
    let after = peak_memory(service.pid())?;
    let grown = after.saturating_sub(before);
    println!(
        "a page of {rows} rows ({bytes} bytes) raised the service's peak memory by {} KiB (from {} KiB)",
        grown / 1024,
        before / 1024
    );
    ensure!(
        grown < bytes as u64 / 4,
        "the service's peak memory grew by {grown} bytes for a {bytes}-byte page: it holds the page, not a piece of it"
    );
    delete_and_wait(&client, &tenant).await
}

#[tokio::test]
async fn shared_data_reads_through_the_shares_views_for_its_consumers_only() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("read-share");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let (provider, consumer, third) = (
        unique_name("read-p"),
        unique_name("read-c"),
        unique_name("read-t"),
    );
    for (example_name, name) in [
        ("prato", &provider),
        ("firenze", &consumer),
        ("unione-mugello", &third),
    ] {
        apply_tenant(&client, &example(example_name, name, &shard)?).await?;
    }
    for name in [&provider, &consumer, &third] {
        wait_ready(&client, name).await?;
    }
    let (from, to) = write_minutes(&client, &provider).await?;
    apply_share(
        &client,
        &share(
            &provider,
            "air",
            &[&consumer],
            json!({ "metrics": ["pm10"], "sensors": ["s-01"] }),
        ),
    )
    .await?;
    wait_share(&client, &provider, "air", "Ready", share_ready).await?;
    let (consumer_service, consumer_key) = read_service(&client, &consumer).await?;
    let (third_service, third_key) = read_service(&client, &third).await?;
    let http = HttpClient::new();
    let range = format!("fromDate={from}&toDate={to}");

    // The consumer reads the shared series, marked with its provider, equal to the view.
    let path = format!("/shared/{provider}/air/v2/attrs?{range}&limit=100000");
    let answer = http
        .get_with(
            &consumer_service.url(&path),
            &[("authorization", &bearer(&consumer_key))],
        )
        .await?;
    ensure!(
        answer.status == 200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    ensure!(
        answer
            .headers
            .get("x-provider")
            .map(|value| value.to_str().unwrap())
            == Some(provider.as_str())
    );
    let page = answer.json()?;
    ensure!(page["provider"] == provider.as_str());
    let rows = page["rows"].as_array().context("rows")?;
    ensure!(
        rows.len() == DAYS as usize * 1440,
        "{} shared rows",
        rows.len()
    );
    ensure!(
        rows.iter()
            .all(|row| row["entityId"] == "s-01" && row["attrName"] == "pm10")
    );
    // Asking the shared path for more than is shared gets nothing more: the view decides.
    let wider = http
        .get_with(
            &consumer_service.url(&format!(
                "/shared/{provider}/air/v2/attrs/no2?id=s-02&{range}"
            )),
            &[("authorization", &bearer(&consumer_key))],
        )
        .await?
        .json()?;
    ensure!(wider["rows"] == json!([]), "{wider}");
    let catalogue = http
        .get_with(
            &consumer_service.url(&format!("/shared/{provider}/air/v2/entities")),
            &[("authorization", &bearer(&consumer_key))],
        )
        .await?
        .json()?;
    let ids: Vec<&str> = catalogue["entities"]
        .as_array()
        .context("entities")?
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    ensure!(ids == ["s-01"], "{catalogue}");

    // A tenant the share does not name is refused by the database: 404, whatever it asks.
    for path in [
        format!("/shared/{provider}/air/v2/attrs?{range}"),
        format!("/shared/{provider}/air/v2/entities"),
        format!("/shared/{provider}/missing/v2/attrs?{range}"),
    ] {
        let answer = http
            .get_with(
                &third_service.url(&path),
                &[("authorization", &bearer(&third_key))],
            )
            .await?;
        ensure!(
            answer.status == 404,
            "{path}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        ensure!(!String::from_utf8_lossy(&answer.body).contains("s-01"));
    }
    // The consumer's own service holds no data of the provider under its own paths.
    let own = http
        .get_with(
            &consumer_service.url(&format!("/v2/attrs?{range}")),
            &[("authorization", &bearer(&consumer_key))],
        )
        .await?
        .json()?;
    ensure!(own["rows"] == json!([]), "{own}");
    // The consumer's key opens nothing of the third's service.
    let answer = http
        .get_with(
            &third_service.url(&format!("/v2/attrs?{range}")),
            &[("authorization", &bearer(&consumer_key))],
        )
        .await?;
    ensure!(answer.status == 401);
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts
            .entry(row["time"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    ensure!(
        counts.values().all(|count| *count == 1),
        "a shared row came twice"
    );
    delete_all_and_wait(&client, &[provider, consumer, third]).await
}

#[tokio::test]
async fn the_operator_runs_the_read_service_with_the_readers_login_and_its_own_keys() -> Result<()>
{
    use k8s_openapi::api::apps::v1::Deployment;
    let client = client().await?;
    let shard = unique_name("read-op");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let tenant = unique_name("read-o");
    apply_tenant(&client, &example("prato", &tenant, &shard)?).await?;
    let ready = wait_ready(&client, &tenant).await?;
    let namespace = format!("srt-{tenant}");
    let read_ready = condition(&ready, "ReadReady").context("ReadReady")?.clone();
    let status = ready.status.context("status")?;
    ensure!(
        status.read_endpoint.as_deref()
            == Some(format!("http://read.{namespace}.svc:8081").as_str()),
        "{:?}",
        status.read_endpoint
    );
    ensure!(
        read_ready.status == "True" && read_ready.reason == "Available",
        "{read_ready:?}"
    );

    // The pod holds the reader's login and the read keys, never the writer's or ingest's.
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), &namespace);
    let deployment = deployments.get("read").await?;
    let text = serde_json::to_string(&deployment.spec)?;
    ensure!(
        !text.contains("db-writer") && !text.contains("ingest-keys"),
        "{text}"
    );
    let (service, key) = read_service(&client, &tenant).await?;
    let http = HttpClient::new();
    let url = service.url("/v2/entities");
    ensure!(
        http.get_with(&url, &[("authorization", &bearer(&key))])
            .await?
            .status
            == 200
    );
    let ingest_key = secret_value(&client, &tenant, "ingest-keys", "keys").await?;
    let ingest_key = ingest_key.lines().next().context("an ingest key")?;
    ensure!(
        http.get_with(&url, &[("authorization", &bearer(ingest_key))])
            .await?
            .status
            == 401,
        "an ingest key opens the read service"
    );

    // A key added to read-keys rolls the pod (its checksum changes).
    let checksum = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|meta| meta.annotations.as_ref())
            .and_then(|annotations| {
                annotations
                    .get("smartregion.toscana.it/secrets-checksum")
                    .cloned()
            })
    };
    let before = checksum(&deployment).context("a checksum")?;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &namespace);
    let added = format!("{key}\nsecond-read-key-0123456789abcdef");
    secrets
        .patch(
            "read-keys",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "stringData": { "keys": added } })),
        )
        .await?;
    let deployments = &deployments;
    let before = &before;
    wait::until(
        "the read pod to roll for the new key",
        READY_TIMEOUT,
        || async move {
            let deployment = deployments.get("read").await?;
            Ok(checksum(&deployment)
                .filter(|now| now != before)
                .map(|_| ()))
        },
    )
    .await?;

    // Suspended: no read pod.
    let mut suspended = example("prato", &tenant, &shard)?;
    suspended["spec"]["suspended"] = json!(true);
    apply_tenant(&client, &suspended).await?;
    let tenants = tenants(&client);
    let tenants = &tenants;
    let name = tenant.as_str();
    wait::until("ReadReady ScaledToZero", READY_TIMEOUT, || async move {
        let tenant = tenants.get(name).await?;
        Ok(condition(&tenant, "ReadReady")
            .filter(|c| c.reason == "ScaledToZero" && c.status == "True")
            .map(|_| ()))
    })
    .await?;
    ensure!(deployments.get("read").await?.spec.and_then(|s| s.replicas) == Some(0));
    delete_and_wait(&client, &tenant).await
}
