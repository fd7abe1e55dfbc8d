//! Benchmark: end-to-end HTTP ingest against raw binary COPY into the same table, in one
//! run on this machine. Prints the figures and writes them to docs/benchmarks.md.
//!
//! The tenant schema is provisioned with the operator's own database functions on a fresh
//! PostgreSQL; `smartregion-ingest` (release build) runs as a host process with the
//! environment its Deployment would give it. Client, service and database share the two
//! cores, as they would on a small node. Run with `e2e/bench`.

use std::pin::pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use bytes::Bytes;
use smartregion_e2e::ingest::HttpClient;
use smartregion_e2e::{Cluster, PostgresServer, wait};
use smartregion_operator::database::names::TenantDb;
use smartregion_operator::database::provision::{self, Desired, Passwords};
use smartregion_operator::database::sql::RoleLimits;
use smartregion_operator::database::timescale::HypertableSettings;
use smartregion_operator::tenant::TenantName;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const TENANT: &str = "bench-ingest";
const KEY: &str = "bench-key-0123456789abcdef";
const BATCHES: [usize; 4] = [1, 100, 1000, 10_000];
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Each combination sends for this long (after a short warm-up).
const RUN: Duration = Duration::from_secs(4);
const COPY_ROWS: usize = 1_000_000;

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Rows per second of one binary COPY of `COPY_ROWS` rows into `measurements`.
async fn raw_copy(url: &str, db: &TenantDb) -> Result<f64> {
    let mut client = connect(url).await?;
    let started = Instant::now();
    let transaction = client.transaction().await?;
    let sink = transaction
        .copy_in(&format!(
            "COPY \"{}\".measurements (sensor, metric, time, value, received_at) FROM STDIN (FORMAT binary)",
            db.schema
        ))
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::FLOAT8,
        Type::TIMESTAMPTZ,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let base = SystemTime::now();
    for i in 0..COPY_ROWS {
        let time = base - Duration::from_secs(i as u64 % 86_400);
        let sensor = format!("copy-{}", i / 86_400);
        writer
            .as_mut()
            .write(&[&sensor, &"pm10", &time, &(i as f64), &base])
            .await?;
    }
    writer.finish().await?;
    transaction.commit().await?;
    Ok(COPY_ROWS as f64 / started.elapsed().as_secs_f64())
}

/// JSON bodies of `batch` rows, each batch with keys of its own.
fn bodies(run: &str, batch: usize, count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|b| {
            let items: Vec<serde_json::Value> = (0..batch)
                .map(|i| {
                    let second = (b * batch + i) as i64;
                    let time = k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 - second)
                        .expect("in range");
                    serde_json::json!({"sensor": format!("{run}-{}", b % 97), "metric": "pm10",
                                       "time": time.to_string(), "value": i})
                })
                .collect();
            Bytes::from(serde_json::to_vec(&items).expect("serializable"))
        })
        .collect()
}

struct Figures {
    rows_per_second: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

async fn http_run(url: &str, run: &str, batch: usize, concurrency: usize) -> Result<Figures> {
    // Enough distinct bodies that no request repeats within the run, within about two
    // million rows of JSON in memory; all serialized before the clock starts.
    let per_worker = (2_000_000 / (batch * concurrency)).clamp(3, 4_000);
    let auth = format!("Bearer {KEY}");
    let prepared: Vec<Vec<Bytes>> = (0..concurrency)
        .map(|worker| bodies(&format!("{run}-w{worker}"), batch, per_worker))
        .collect();
    let started = Instant::now();
    let deadline = started + RUN;
    let mut workers = Vec::new();
    for bodies in prepared {
        let (url, auth) = (url.to_string(), auth.clone());
        workers.push(tokio::spawn(async move {
            let http = HttpClient::new();
            let mut latencies = Vec::new();
            let (mut rows, mut failed) = (0usize, 0usize);
            for body in bodies {
                if Instant::now() >= deadline {
                    break;
                }
                let started = Instant::now();
                let answer = http
                    .post(&url, &[("authorization", auth.as_str())], body)
                    .await?;
                latencies.push(started.elapsed());
                if answer.status == 200 {
                    rows += batch;
                } else {
                    failed += 1;
                }
            }
            anyhow::Ok((rows, failed, latencies))
        }));
    }
    let (mut rows, mut failed, mut latencies) = (0, 0, Vec::new());
    for worker in workers {
        let (r, f, l) = worker.await??;
        rows += r;
        failed += f;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Figures {
        rows_per_second: rows as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        failed,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    smartregion_e2e::bench::on_fresh_cluster("e2e-bench-ingest", |cluster| async move {
        run(&cluster).await
    })
    .await
}

async fn run(cluster: &Cluster) -> Result<()> {
    let postgres = PostgresServer::start_new(cluster, "bench-postgres").await?;
    let url = postgres.url();
    let db = TenantDb::for_tenant(&TenantName::parse(TENANT)?);
    let password = smartregion_operator::database::new_password();
    let mut admin = connect(&url).await?;
    provision::ensure_schema_exists(
        &mut admin,
        &db,
        &Desired {
            limits: RoleLimits {
                connection_limit: 100,
                statement_timeout_ms: 30_000,
            },
            layout: smartregion_operator::database::storage::Layout::Partitions,
            timescaledb_schema: None,
            hypertable: HypertableSettings {
                chunk_interval_hours: 24,
                retention_days: 3650,
                compress_after_days: 7,
            },
        },
        None,
        &provision::WriterLogins::first(&db),
        &Passwords {
            writer: &password,
            reader: &password,
        },
        false,
        true,
    )
    .await?;
    provision::ensure_partitions(
        &mut admin,
        &db,
        k8s_openapi::jiff::Timestamp::now(),
        24,
        3650,
    )
    .await?;

    eprintln!("bench-ingest: reference: one binary COPY of {COPY_ROWS} rows");
    let copy = raw_copy(&url, &db).await?;
    eprintln!("bench-ingest: raw COPY {copy:.0} rows/s");

    let config: tokio_postgres::Config = url.parse()?;
    let port = smartregion_e2e::ingest::free_port()?;
    let binary = smartregion_e2e::ingest::binary()?;
    let log = cluster.state_dir.join("bench-ingest.log");
    let mut ingest = Command::new(&binary)
        .env_clear()
        .env("SMARTREGION_TENANT", TENANT)
        .env("SMARTREGION_INGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("SMARTREGION_INGEST_API_KEYS", KEY)
        .env("SMARTREGION_INGEST_RATE", "10000000")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", config.get_ports()[0].to_string())
        .env("PGDATABASE", "smartregion")
        .env("PGUSER", &db.writer_logins[0])
        .env("PGPASSWORD", &password)
        .env("SMARTREGION_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(
            cluster.state_dir.join("bench-ingest.err"),
        )?)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = HttpClient::new();
    wait::until("ingest to be ready", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("{base}/readyz");
        async move {
            Ok(http
                .get(&url)
                .await
                .ok()
                .filter(|a| a.status == 200)
                .map(|_| ()))
        }
    })
    .await?;
    let endpoint = format!("{base}/v1/measurements");
    http_run(&endpoint, "warmup", 100, 8).await?;

    let mut rows = Vec::new();
    for batch in BATCHES {
        for concurrency in CONCURRENCY {
            let figures = http_run(
                &endpoint,
                &format!("b{batch}c{concurrency}"),
                batch,
                concurrency,
            )
            .await?;
            eprintln!(
                "bench-ingest: batch {batch:>5} × {concurrency:>2}: {:>9.0} rows/s ({:.2}× COPY), p50 {:?}, p99 {:?}, failed {}",
                figures.rows_per_second,
                figures.rows_per_second / copy,
                figures.p50,
                figures.p99,
                figures.failed
            );
            rows.push((batch, concurrency, figures));
        }
    }
    let rss = smartregion_e2e::bench::peak_rss_mib(ingest.id())?;
    ingest.kill()?;
    ingest.wait()?;
    if rows.iter().any(|(_, _, f)| f.failed > 0) {
        eprintln!("bench-ingest: some requests were not acknowledged (see the table)");
    }

    let mut report = format!(
        "## Ingest: HTTP end to end against raw COPY\n\n\
         Measured by `e2e/bench` (`bench-ingest`, release build) on one PostgreSQL 15 with\n\
         fsync off, client, `smartregion-ingest` (2 writer connections, defaults otherwise)\n\
         and PostgreSQL on the same 2 cores. Each combination sends for {} s; bodies are\n\
         serialized before the clock starts. Rows are new (no duplicates).\n\n\
         Reference: one binary `COPY` of {COPY_ROWS} rows into the same `measurements`\n\
         table: **{copy:.0} rows/s**.\n\n\
         | batch | concurrency | rows/s | × raw COPY | p50 | p99 | not acknowledged |\n|---|---|---|---|---|---|---|\n",
        RUN.as_secs()
    );
    for (batch, concurrency, f) in &rows {
        report.push_str(&format!(
            "| {batch} | {concurrency} | {:.0} | {:.2} | {:.1} ms | {:.1} ms | {} |\n",
            f.rows_per_second,
            f.rows_per_second / copy,
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.failed
        ));
    }
    report.push_str(&format!(
        "\nIngest peak RSS (VmHWM) over the whole run: {rss:.1} MiB.\n"
    ));
    println!("{report}");
    smartregion_e2e::bench::write_section("## Ingest: HTTP end to end against raw COPY", &report)?;
    drop(postgres);
    if rows.is_empty() {
        bail!("no figures");
    }
    Ok(())
}
