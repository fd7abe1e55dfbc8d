//! Benchmark: the read service against the same SQL run directly by the tenant's reader,
//! in one run, on both storages (PostgreSQL's partitions, and TimescaleDB's hypertable
//! with its old chunks compressed, when TimescaleDB is installed). Prints the figures and
//! writes them to docs/benchmarks.md.
//!
//! Data: one sensor at 1-minute resolution for a year (525 600 rows), and 100 sensors
//! with two metrics each at 1-minute resolution for a day (288 000 rows), written with a
//! binary COPY into a tenant provisioned by the operator's own functions (partitions made
//! day by day as the operator would have made them over the year). The release
//! `smartregion-ingest read` runs as a host process with its Deployment's environment and
//! the reader's login. Each figure is the median of alternating runs (service, SQL,
//! service, ...) after a warm-up; the SQL is the statement text the service itself runs
//! (`smartregion_ingest::read::sql`), fetched completely by tokio-postgres as the reader.
//! Client, service and database share the machine's cores. Run with `e2e/bench`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use smartregion_e2e::ingest::{HttpClient, Ingest};
use smartregion_e2e::{Cluster, Engine, PostgresServer};
use smartregion_ingest::read::query::{Aggregation, Format, Method, SeriesQuery};
use smartregion_ingest::read::sql::{self, Flavour, Source};
use smartregion_operator::surface::TenantName;
use smartregion_operator::surface::provisioning::{self as provision, TenantDb};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const TENANT: &str = "bench-read";
const KEY: &str = "bench-read-key-0123456789abcdef";
const YEAR_ROWS: i64 = 525_600;
const SENSORS: usize = 100;
/// Alternating timed runs per figure, after one warm-up of each.
const RUNS: usize = 5;
/// Rows per page (the service's largest).
const PAGE: usize = 100_000;

#[tokio::main]
async fn main() -> Result<()> {
    smartregion_e2e::bench::on_fresh_cluster("e2e-bench-read", |cluster| async move {
        run(&cluster).await
    })
    .await
}

/// The figures of one storage.
struct Figures {
    storage: &'static str,
    raw_json: (f64, f64),
    raw_csv: (f64, f64),
    hourly: (f64, f64),
    latest: (f64, f64),
    rss_before: f64,
    rss_after: f64,
    page_bytes: usize,
}

async fn run(cluster: &Cluster) -> Result<()> {
    let mut postgres = PostgresServer::start_new(cluster, "bench-read-postgres").await?;
    let mut all = vec![bench_storage(cluster, &postgres, None).await?];
    let bin = smartregion_e2e::paths::postgres_binaries()?;
    let timescaledb = match smartregion_e2e::postgres::check_timescaledb(&bin) {
        Ok(()) => {
            postgres.stop()?;
            postgres.restart_as(Engine::TimescaleDb).await?;
            let admin = connect(&postgres.url()).await?;
            admin
                .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .await?;
            all.push(bench_storage(cluster, &postgres, Some("public")).await?);
            None
        }
        Err(error) => Some(format!("{error:#}")),
    };
    let report = report(&all, timescaledb.as_deref(), &postgres).await?;
    println!("{report}");
    smartregion_e2e::bench::write_section(
        "## Read service: a year of one sensor, and 100 sensors' last values",
        &report,
    )
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Provisions a tenant on `timescaledb` (its schema) or partitions, loads the data, and
/// measures.
async fn bench_storage(
    cluster: &Cluster,
    postgres: &PostgresServer,
    timescaledb: Option<&str>,
) -> Result<Figures> {
    let storage = if timescaledb.is_some() {
        "TimescaleDB hypertable"
    } else {
        "PostgreSQL partitions"
    };
    let name = match timescaledb {
        Some(_) => format!("{TENANT}-ts"),
        None => TENANT.to_string(),
    };
    let db = TenantDb::for_tenant(&TenantName::parse(&name)?);
    let password = provision::new_password();
    let mut admin = connect(&postgres.url()).await?;
    let end = {
        let now = jiff::Timestamp::now().as_second();
        jiff::Timestamp::from_second(now - now.rem_euclid(3600))?
    };
    let start = end - jiff::SignedDuration::from_mins(YEAR_ROWS);
    smartregion_e2e::bench::provision_tenant(
        &mut admin,
        &db,
        &password,
        timescaledb,
        days(start, end),
    )
    .await?;
    eprintln!(
        "bench-read: {storage}: loading {YEAR_ROWS} + {} rows",
        SENSORS * 2 * 1440
    );
    load(&admin, &db, start, end).await?;
    if let Some(extension) = timescaledb {
        // As the compression job leaves a year of data: chunks older than 7 days compressed.
        admin
            .batch_execute(&format!(
                "SELECT count({extension}.compress_chunk(c, true)) FROM {extension}.show_chunks('\"{}\".measurements', older_than => INTERVAL '7 days') c",
                db.schema
            ))
            .await?;
    }
    admin
        .batch_execute(&format!("ANALYZE \"{}\".measurements", db.schema))
        .await?;
    let reader = {
        let mut config: tokio_postgres::Config = postgres.url().parse()?;
        // With the service's session settings (it turns JIT off).
        config
            .user(&db.reader)
            .password(&password)
            .options("-c jit=off");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
    };
    let flavour = match timescaledb {
        Some(schema) => Flavour::TimescaleDb {
            schema: schema.to_string(),
        },
        None => Flavour::Plain,
    };
    let config: tokio_postgres::Config = postgres.url().parse()?;
    let env: Vec<(String, String)> = [
        ("SMARTREGION_TENANT", name.clone()),
        ("SMARTREGION_READ_API_KEYS", KEY.to_string()),
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", config.get_ports()[0].to_string()),
        ("PGDATABASE", "smartregion".to_string()),
        ("PGUSER", db.reader.clone()),
        ("PGPASSWORD", password.clone()),
        ("SMARTREGION_LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut service = Ingest::start_read(cluster, env)?;
    service.wait_ready(Duration::from_secs(30)).await?;
    let http = HttpClient::new();
    let auth = format!("Bearer {KEY}");
    let range = format!("fromDate={start}&toDate={end}");
    let source = Source::own(&db.schema);
    let year = |aggregation: Option<Aggregation>, limit: usize| SeriesQuery {
        sensors: vec!["year-1".into()],
        metrics: vec!["temperature".into()],
        from: start,
        to: end,
        aggregation,
        limit,
        cursor: None,
        format: Format::Json,
    };

    // Correctness once, untimed: every row of the year through the pages.
    let (rows, page_bytes) = service_pages(
        &http,
        &service,
        &auth,
        &format!("/v2/entities/year-1/attrs/temperature?{range}&limit={PAGE}"),
        true,
    )
    .await?;
    ensure!(
        rows == YEAR_ROWS as usize,
        "the service gave {rows} rows of the year"
    );
    let rss_before = smartregion_e2e::bench::peak_rss_mib(service.pid())?;

    let raw = sql::series(&source, &flavour, &year(None, usize::MAX), None);
    let raw_json = alternate(
        || async {
            service_pages(
                &http,
                &service,
                &auth,
                &format!("/v2/entities/year-1/attrs/temperature?{range}&limit={PAGE}"),
                false,
            )
            .await
            .map(drop)
        },
        || direct(&reader, &raw, YEAR_ROWS as usize),
    )
    .await?;
    let raw_csv = alternate(
        || async {
            service_pages(
                &http,
                &service,
                &auth,
                &format!("/v2/entities/year-1/attrs/temperature?{range}&limit={PAGE}&format=csv"),
                false,
            )
            .await
            .map(drop)
        },
        || direct(&reader, &raw, YEAR_ROWS as usize),
    )
    .await?;
    let rss_after = smartregion_e2e::bench::peak_rss_mib(service.pid())?;

    let hourly = Aggregation {
        methods: vec![Method::Avg],
        period: jiff::SignedDuration::from_hours(1),
    };
    let hourly_sql = sql::series(&source, &flavour, &year(Some(hourly), usize::MAX), None);
    let hours = (YEAR_ROWS / 60) as usize;
    let hourly = alternate(
        || async {
            let (rows, _) = service_pages(&http, &service, &auth, &format!("/v2/entities/year-1/attrs/temperature?{range}&aggrMethod=avg&aggrPeriod=PT1H&limit={PAGE}"), true).await?;
            ensure!(rows == hours, "{rows} hourly rows");
            Ok(())
        },
        || direct(&reader, &hourly_sql, hours),
    )
    .await?;

    let catalogue = sql::catalogue(&source, None, None, 1000);
    let latest = alternate(
        || async {
            let answer = http
                .get_with(
                    &service.url("/v2/entities?limit=1000"),
                    &[("authorization", &auth)],
                )
                .await?;
            ensure!(answer.status == 200, "catalogue: {}", answer.status);
            let entities = answer.json()?["entities"].as_array().map_or(0, Vec::len);
            ensure!(
                entities == SENSORS + 1,
                "{entities} sensors in the catalogue"
            );
            Ok(())
        },
        || direct(&reader, &catalogue, SENSORS * 2 + 1),
    )
    .await?;
    drop(service);
    Ok(Figures {
        storage,
        raw_json,
        raw_csv,
        hourly,
        latest,
        rss_before,
        rss_after,
        page_bytes,
    })
}

/// Runs `service` and `reference` alternately, a warm-up then [`RUNS`] timed each; the
/// medians in ms.
async fn alternate<S, SF, R, RF>(service: S, reference: R) -> Result<(f64, f64)>
where
    S: Fn() -> SF,
    SF: std::future::Future<Output = Result<()>>,
    R: Fn() -> RF,
    RF: std::future::Future<Output = Result<()>>,
{
    service().await?;
    reference().await?;
    let (mut served, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        service().await?;
        served.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        reference().await?;
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(served), median(direct)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Every page of a query, following the `Link` header: the rows (counted when `count`,
/// from the JSON) and the largest page's size in bytes.
async fn service_pages(
    http: &HttpClient,
    service: &Ingest,
    auth: &str,
    path_and_query: &str,
    count: bool,
) -> Result<(usize, usize)> {
    let mut url = service.url(path_and_query);
    let (mut rows, mut largest) = (0, 0);
    loop {
        let answer = http.get_with(&url, &[("authorization", auth)]).await?;
        ensure!(answer.status == 200, "{url}: {}", answer.status);
        largest = largest.max(answer.body.len());
        if count {
            rows += answer.json()?["rows"].as_array().map_or(0, Vec::len);
        }
        match answer.headers.get("link") {
            Some(link) => {
                let link = link.to_str()?;
                let path = link
                    .strip_prefix('<')
                    .and_then(|rest| rest.split_once('>'))
                    .map(|(path, _)| path)
                    .context("a Link without a target")?;
                url = service.url(path);
            }
            None => return Ok((rows, largest)),
        }
    }
}

/// The statement fetched completely as the reader; `rows` expected.
async fn direct(
    reader: &tokio_postgres::Client,
    statement: &sql::Statement,
    rows: usize,
) -> Result<()> {
    let got = reader
        .query(&statement.text, &statement.params().collect::<Vec<_>>())
        .await?;
    ensure!(
        got.len() == rows,
        "SQL gave {} rows, {rows} expected",
        got.len()
    );
    Ok(())
}

/// Every day from `start` to `end`: the daily partitions the operator would have made
/// over the year.
fn days(start: jiff::Timestamp, end: jiff::Timestamp) -> impl Iterator<Item = jiff::Timestamp> {
    std::iter::successors(Some(start), |day| {
        Some(*day + jiff::SignedDuration::from_hours(24))
    })
    .take_while(move |day| *day <= end)
}

/// The year of `year-1`, and a day of 100 sensors with two metrics, by binary COPY.
async fn load(
    admin: &tokio_postgres::Client,
    db: &TenantDb,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> Result<()> {
    let sink = admin
        .copy_in(&format!(
            "COPY \"{}\".measurements (sensor, metric, time, value) FROM STDIN BINARY",
            db.schema
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::FLOAT8],
    );
    let mut writer = std::pin::pin!(writer);
    let (year, temperature) = ("year-1".to_string(), "temperature".to_string());
    for minute in 0..YEAR_ROWS {
        let time = start + jiff::SignedDuration::from_mins(minute);
        let value = 15.0 + 10.0 * ((minute as f64) / 1440.0 * std::f64::consts::TAU).sin();
        writer
            .as_mut()
            .write(&[
                &year as &(dyn tokio_postgres::types::ToSql + Sync),
                &temperature,
                &time,
                &value,
            ])
            .await?;
    }
    for sensor in 0..SENSORS {
        let id = format!("s-{sensor:03}");
        for metric in ["no2", "pm10"] {
            let metric = metric.to_string();
            for minute in 0..1440 {
                let time = end - jiff::SignedDuration::from_mins(1440 - minute);
                let value = (sensor * 7 + minute as usize % 97) as f64 / 3.0;
                writer
                    .as_mut()
                    .write(&[
                        &id as &(dyn tokio_postgres::types::ToSql + Sync),
                        &metric,
                        &time,
                        &value,
                    ])
                    .await?;
            }
        }
    }
    writer.finish().await?;
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{}\".sensors (id, name) SELECT 's-' || lpad(n::text, 3, '0'), 'Sensor ' || n \
             FROM generate_series(0, {}) n; INSERT INTO \"{}\".sensors (id, name) VALUES ('year-1', 'A year')",
            db.schema,
            SENSORS - 1,
            db.schema
        ))
        .await?;
    Ok(())
}

async fn report(
    all: &[Figures],
    timescaledb: Option<&str>,
    postgres: &PostgresServer,
) -> Result<String> {
    let admin = connect(&postgres.url()).await?;
    let version: String = admin.query_one("SELECT version()", &[]).await?.get(0);
    let extension: Option<String> = admin
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(smartregion_e2e::paths::workspace_root())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    let mut text = format!(
        "## Read service: a year of one sensor, and 100 sensors' last values\n\n\
         `e2e/bench` (`bench-read`), {}, commit {commit}, on this machine (2 cores shared by\n\
         the client, the service and the database). {version}{}. Data: one sensor at 1-minute\n\
         resolution for a year ({YEAR_ROWS} rows) and 100 sensors × 2 metrics for a day\n\
         (288 000 rows). Each figure: the median of {RUNS} alternating runs after a warm-up,\n\
         in ms; \"SQL\" is the statement the service runs, fetched completely by the tenant's\n\
         reader with tokio-postgres and the service's session settings (JIT off), the\n\
         reference, measured in the same run.\n\n\
         | storage | query | service | SQL as the reader | service / SQL |\n|---|---|---|---|---|\n",
        jiff::Timestamp::now().strftime("%-d %b %Y %H:%M UTC"),
        extension
            .map(|v| format!(", TimescaleDB {v}"))
            .unwrap_or_default()
    );
    for figures in all {
        for (query, (served, direct)) in [
            (
                format!(
                    "year raw, JSON, {} pages of {PAGE}",
                    (YEAR_ROWS as usize).div_ceil(PAGE)
                ),
                figures.raw_json,
            ),
            ("year raw, CSV".to_string(), figures.raw_csv),
            (
                "year as hourly averages (8 760 rows)".to_string(),
                figures.hourly,
            ),
            (
                "100 sensors' last values (the catalogue)".to_string(),
                figures.latest,
            ),
        ] {
            text.push_str(&format!(
                "| {} | {query} | {served:.0} | {direct:.0} | {:.2} |\n",
                figures.storage,
                served / direct
            ));
        }
    }
    text.push_str(
        "\nPeak memory of the service (VmHWM) before and after the raw year's pages:\n\n",
    );
    for figures in all {
        text.push_str(&format!(
            "- {}: {:.1} MiB → {:.1} MiB, with pages of up to {:.1} MB streamed.\n",
            figures.storage,
            figures.rss_before,
            figures.rss_after,
            figures.page_bytes as f64 / 1e6
        ));
    }
    if let Some(why) = timescaledb {
        text.push_str(&format!(
            "\nTimescaleDB is not installed for this machine's PostgreSQL, so only the partitions ran: {why}\n"
        ));
    }
    text.push_str(
        "\nOn TimescaleDB the chunks older than 7 days are compressed first, as the\n\
         compression job leaves a year of data. Rerun with `e2e/bench`, or the release\n\
         `bench-read` alone.\n",
    );
    Ok(text)
}
