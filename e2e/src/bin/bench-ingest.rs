//! Benchmark: end-to-end HTTP ingest against raw binary COPY into the same table, in one
//! run on this machine, next to its peers. Prints the figures and writes them to
//! docs/benchmarks.md.
//!
//! The tenant schema is provisioned with the operator's own database functions on a fresh
//! PostgreSQL; `smartregion-ingest` (release build) runs as a host process with the
//! environment its Deployment would give it: once unconstrained, once inside a cgroup
//! with a tier's container limits (CPU and memory), where it also gets the near-limit
//! bodies that once OOM-killed it. Client, service and database share the two cores, as
//! they would on a small node.
//!
//! Peers, on the same rows and table layout: Telegraf (`inputs.http_listener_v2` →
//! `outputs.postgresql`, built by `e2e/go/telegraf.sh`), counted by the rows it committed,
//! not by its answers, and killed with SIGKILL mid-load to count what it acknowledged but
//! lost (smartregion-ingest gets the same). FIWARE QuantumLeap, which cannot be installed
//! from a registry, runs when `SMARTREGION_BENCH_QUANTUMLEAP` names a command that starts
//! an installed one (see docs/benchmarks.md). Run with `e2e/bench`.

use std::pin::pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use smartregion_e2e::cgroup::{self, Cgroup};
use smartregion_e2e::ingest::{HttpClient, Ingest, near_limit_notification};
use smartregion_e2e::{Cluster, PostgresServer, wait};
use smartregion_operator::surface::TenantName;
use smartregion_operator::surface::provisioning::HypertableSettings;
use smartregion_operator::surface::provisioning::RoleLimits;
use smartregion_operator::surface::provisioning::TenantDb;
use smartregion_operator::surface::provisioning::{self as provision, Desired};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const TENANT: &str = "bench-ingest";
const KEY: &str = "bench-key-0123456789abcdef";
const BATCHES: [usize; 4] = [1, 100, 1000, 10_000];
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Inside the tier's limits and for the peer: the batch sizes senders use.
const LIMITED_BATCHES: [usize; 3] = [1, 100, 1000];
const PEER_BATCHES: [usize; 3] = [1, 100, 1000];
/// `/v2/notify` runs against QuantumLeap and smartregion-ingest: (entities per
/// notification, senders).
const NOTIFY_RUNS: [(usize, usize); 5] = [(1, 1), (1, 8), (100, 1), (100, 8), (100, 64)];
/// Concurrent near-limit bodies against the constrained service (24 OOM-killed it once).
const NEAR_LIMIT_SENDERS: usize = 96;
/// Each combination sends for this long (after a short warm-up).
const RUN: Duration = Duration::from_secs(4);
const COPY_ROWS: usize = 1_000_000;

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Rows per second of one binary COPY of `COPY_ROWS` rows into `measurements`.
async fn raw_copy(url: &str, db: &TenantDb, run: &str) -> Result<f64> {
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
        let sensor = format!("{run}-{}", i / 86_400);
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
    /// Rows the service answered 2xx for.
    acknowledged: usize,
    started: Instant,
}

/// `concurrency` senders, each posting its own prepared bodies of `batch` rows for
/// [`RUN`], one request at a time. Rows per second as acknowledged.
async fn http_run(url: &str, run: &str, batch: usize, concurrency: usize) -> Result<Figures> {
    // Enough distinct bodies that no request repeats within the run, within about two
    // million rows of JSON in memory; all serialized before the clock starts.
    let per_worker = (2_000_000 / (batch * concurrency)).clamp(3, 4_000);
    let prepared: Vec<Vec<Bytes>> = (0..concurrency)
        .map(|worker| bodies(&format!("{run}-w{worker}"), batch, per_worker))
        .collect();
    let headers = vec![("authorization".to_string(), format!("Bearer {KEY}"))];
    send(url, &headers, prepared, batch).await
}

/// Each sender posts its `prepared` bodies (of `rows` rows each) with `headers` for
/// [`RUN`], one request at a time.
async fn send(
    url: &str,
    headers: &[(String, String)],
    prepared: Vec<Vec<Bytes>>,
    rows_per_body: usize,
) -> Result<Figures> {
    let started = Instant::now();
    let deadline = started + RUN;
    let mut workers = Vec::new();
    for bodies in prepared {
        let (url, headers) = (url.to_string(), headers.to_vec());
        workers.push(tokio::spawn(async move {
            let http = HttpClient::new();
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let mut latencies = Vec::new();
            let (mut rows, mut failed) = (0usize, 0usize);
            for body in bodies {
                if Instant::now() >= deadline {
                    break;
                }
                let started = Instant::now();
                let answer = http.post(&url, &headers, body).await?;
                latencies.push(started.elapsed());
                if (200..300).contains(&answer.status) {
                    rows += rows_per_body;
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
        acknowledged: rows,
        started,
    })
}

/// NGSI-v2 notifications as Orion sends them, `entities` entities each (one number,
/// `NO2`, and `TimeInstant`), every entity id and time of its own.
fn notifications(run: &str, entities: usize, count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|n| {
            let data: Vec<serde_json::Value> = (0..entities)
                .map(|e| {
                    let time = k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 - n as i64)
                        .expect("in range");
                    serde_json::json!({
                        "id": format!("{run}-{n}-{e}"),
                        "type": "AirQualityObserved",
                        "NO2": {"type": "Number", "value": e, "metadata": {}},
                        "TimeInstant": {"type": "DateTime", "value": time.to_string()},
                    })
                })
                .collect();
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({"subscriptionId": run, "data": data}))
                    .expect("serializable"),
            )
        })
        .collect()
}

/// `/v2/notify` of `url` for each (entities per notification, senders) of
/// [`NOTIFY_RUNS`]; numbers stored per second.
async fn notify_matrix(
    who: &str,
    url: &str,
    headers: &[(String, String)],
) -> Result<Vec<(usize, usize, Figures)>> {
    let mut rows = Vec::new();
    for (entities, senders) in NOTIFY_RUNS {
        let per_worker = (400_000 / (entities * senders)).clamp(3, 4_000);
        let prepared = (0..senders)
            .map(|worker| {
                notifications(
                    &format!("{who}-e{entities}c{senders}-w{worker}"),
                    entities,
                    per_worker,
                )
            })
            .collect();
        let figures = send(url, headers, prepared, entities).await?;
        eprintln!(
            "bench-ingest: {who} /v2/notify: {entities:>3} entities × {senders:>2}: {:>8.0} values/s, p50 {:?}, p99 {:?}, failed {}",
            figures.rows_per_second, figures.p50, figures.p99, figures.failed
        );
        rows.push((entities, senders, figures));
    }
    Ok(rows)
}

/// For a peer that answers before it writes: rows per second as committed, from the
/// run's start until the database holds every acknowledged row of the run (`table`,
/// sensors `<run>-...`).
async fn committed_rate(
    db: &tokio_postgres::Client,
    table: &str,
    run: &str,
    figures: &mut Figures,
) -> Result<()> {
    let pattern = format!("{run}-%");
    let query = format!("SELECT count(*) FROM {table} WHERE sensor LIKE $1");
    let wanted = figures.acknowledged as i64;
    wait::until(
        &format!("{table} to hold the {wanted} rows acknowledged in {run}"),
        Duration::from_secs(120),
        || {
            let (query, pattern) = (query.clone(), pattern.clone());
            async move {
                let stored: i64 = db.query_one(&query, &[&pattern]).await?.get(0);
                Ok((stored >= wanted).then_some(()))
            }
        },
    )
    .await?;
    figures.rows_per_second = wanted as f64 / figures.started.elapsed().as_secs_f64();
    Ok(())
}

/// What a SIGKILL mid-load did to acknowledged rows.
struct KillFigures {
    acknowledged: usize,
    stored_of_acknowledged: i64,
}

/// 8 senders of 1000-row batches (each batch its own sensor); `kill` after 2 s, then
/// count the acknowledged batches' rows in `table`.
async fn kill_run(
    url: &str,
    run: &str,
    db: &tokio_postgres::Client,
    table: &str,
    kill: impl FnOnce() -> Result<()>,
) -> Result<KillFigures> {
    const SENDERS: usize = 8;
    const BATCH: usize = 1000;
    let auth = format!("Bearer {KEY}");
    let mut workers = Vec::new();
    for worker in 0..SENDERS {
        let (url, auth, run) = (url.to_string(), auth.clone(), run.to_string());
        workers.push(tokio::spawn(async move {
            let http = HttpClient::new();
            let mut acknowledged = Vec::new();
            for number in 0.. {
                let sensor = format!("{run}-w{worker}-b{number}");
                let items: Vec<serde_json::Value> = (0..BATCH)
                    .map(|i| {
                        let time = k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 - i as i64)
                            .expect("in range");
                        serde_json::json!({"sensor": sensor, "metric": "pm10", "time": time.to_string(), "value": i})
                    })
                    .collect();
                let body = Bytes::from(serde_json::to_vec(&items)?);
                match http.post(&url, &[("authorization", auth.as_str())], body).await {
                    Ok(answer) if (200..300).contains(&answer.status) => acknowledged.push(sensor),
                    Ok(_) => {}
                    // Killed: the sender stops.
                    Err(_) => break,
                }
            }
            anyhow::Ok(acknowledged)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill()?;
    let mut sensors = Vec::new();
    for worker in workers {
        sensors.extend(worker.await??);
    }
    let stored: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE sensor = ANY($1)"),
            &[&sensors],
        )
        .await?
        .get(0);
    Ok(KillFigures {
        acknowledged: sensors.len() * BATCH,
        stored_of_acknowledged: stored,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    smartregion_e2e::bench::on_fresh_cluster("e2e-bench-ingest", |cluster| async move {
        run(&cluster).await
    })
    .await
}

/// The environment the Deployment gives an ingest pod, for this bench's tenant.
fn ingest_env(
    db: &TenantDb,
    password: &str,
    port: u16,
    memory_limit: Option<u64>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("SMARTREGION_TENANT", TENANT.to_string()),
        ("SMARTREGION_INGEST_API_KEYS", KEY.to_string()),
        // The quota is not what is measured.
        ("SMARTREGION_INGEST_RATE", "10000000".to_string()),
        // The bench tenant's retention, as the Deployment passes it.
        ("SMARTREGION_INGEST_RETENTION_DAYS", "3650".to_string()),
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", port.to_string()),
        ("PGDATABASE", "smartregion".to_string()),
        ("PGUSER", db.writer_logins[0].clone()),
        ("PGPASSWORD", password.to_string()),
        ("SMARTREGION_LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(limit) = memory_limit {
        env.push(("SMARTREGION_INGEST_MEMORY_LIMIT".into(), limit.to_string()));
    }
    env
}

/// The matrix of batch sizes and senders against `endpoint`; each line printed as it is
/// measured, labelled `who`.
async fn matrix(
    who: &str,
    endpoint: &str,
    batches: &[usize],
    concurrency: &[usize],
    copy: f64,
) -> Result<Vec<(usize, usize, Figures)>> {
    let mut rows = Vec::new();
    for &batch in batches {
        for &senders in concurrency {
            let figures = http_run(
                endpoint,
                &format!("{who}-b{batch}c{senders}"),
                batch,
                senders,
            )
            .await?;
            eprintln!(
                "bench-ingest: {who}: batch {batch:>5} × {senders:>2}: {:>9.0} rows/s ({:.2}× COPY), p50 {:?}, p99 {:?}, failed {}",
                figures.rows_per_second,
                figures.rows_per_second / copy,
                figures.p50,
                figures.p99,
                figures.failed
            );
            rows.push((batch, senders, figures));
        }
    }
    Ok(rows)
}

fn table(rows: &[(usize, usize, Figures)], copy: f64, answers: &str) -> String {
    let mut text = format!(
        "| batch | senders | rows/s | × raw COPY | p50 {answers} | p99 | not acknowledged |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for (batch, senders, f) in rows {
        text.push_str(&format!(
            "| {batch} | {senders} | {:.0} | {:.2} | {:.1} ms | {:.1} ms | {} |\n",
            f.rows_per_second,
            f.rows_per_second / copy,
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.failed
        ));
    }
    text
}

fn find(rows: &[(usize, usize, Figures)], batch: usize, senders: usize) -> Option<&Figures> {
    rows.iter()
        .find(|(b, s, _)| *b == batch && *s == senders)
        .map(|(_, _, f)| f)
}

/// Waits until something accepts connections on loopback `port` (a peer without a
/// readiness endpoint).
async fn wait_listening(what: &str, port: u16, timeout: Duration) -> Result<()> {
    let address = format!("127.0.0.1:{port}");
    wait::until(&format!("{what} to listen"), timeout, || {
        let address = address.clone();
        async move {
            Ok(tokio::net::TcpStream::connect(&address)
                .await
                .ok()
                .map(|_| ()))
        }
    })
    .await
}

async fn wait_ready(base: &str) -> Result<()> {
    let http = HttpClient::new();
    wait::until("the service to answer", Duration::from_secs(30), || {
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
    .await
}

async fn run(cluster: &Cluster) -> Result<()> {
    let postgres = PostgresServer::start_new(cluster, "bench-postgres").await?;
    let url = postgres.url();
    let db = TenantDb::for_tenant(&TenantName::parse(TENANT)?);
    let password = smartregion_operator::surface::provisioning::new_password();
    let mut admin = connect(&url).await?;
    provision::ensure_schema_exists(
        &mut admin,
        &db,
        &provision::Provisioning {
            desired: &Desired {
                limits: RoleLimits {
                    connection_limit: 100,
                    statement_timeout_ms: 30_000,
                },
                layout: smartregion_operator::surface::provisioning::Layout::Partitions,
                timescaledb_schema: None,
                hypertable: HypertableSettings {
                    chunk_interval_hours: 24,
                    retention_days: 3650,
                    compress_after_days: 7,
                },
            },
            table: None,
            logins: &provision::WriterLogins::first(&db),
            passwords: provision::Passwords {
                writer: &password,
                reader: &password,
            },
            credentials: provision::Credentials::Keep,
            writes: provision::Writes::Allowed,
        },
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
    let copy = raw_copy(&url, &db, "copy-a").await?;
    eprintln!("bench-ingest: raw COPY {copy:.0} rows/s");

    let config: tokio_postgres::Config = url.parse()?;
    let pg_port = config.get_ports()[0];

    // Unconstrained.
    let mut ingest = Ingest::start(cluster, ingest_env(&db, &password, pg_port, None))?;
    let base = ingest.url("");
    wait_ready(&base).await?;
    let endpoint = format!("{base}/v1/measurements");
    http_run(&endpoint, "warmup", 100, 8).await?;
    let free = matrix("ingest", &endpoint, &BATCHES, &CONCURRENCY, copy).await?;
    let free_rss = smartregion_e2e::bench::peak_rss_mib(ingest.pid())?;
    let table_name = format!("\"{}\".measurements", db.schema);
    let ingest_kill = kill_run(&endpoint, "ingest-kill", &admin, &table_name, || {
        ingest.kill()
    })
    .await?;
    drop(ingest);

    // Inside a cgroup with the small tier's container limits.
    let tier = smartregion_operator::surface::Tiers::default().small;
    let limits = cgroup::Limits {
        memory_bytes: u64::try_from(tier.container_memory.whole_units())?,
        // Thousandths of a core are millicores.
        cpu_millis: u64::try_from(
            smartregion_operator::surface::parse_quantity(tier.container_cpu.as_str())
                .context("the tier's container CPU")?,
        )?,
    };
    let group = Cgroup::create("bench-ingest", limits)?;
    let mut limited = Ingest::start_in(
        cluster,
        ingest_env(&db, &password, pg_port, Some(limits.memory_bytes)),
        &group,
    )?;
    let base = limited.url("");
    wait_ready(&base).await?;
    let endpoint = format!("{base}/v1/measurements");
    http_run(&endpoint, "warmup-limited", 100, 8).await?;
    let constrained = matrix(
        "ingest in limits",
        &endpoint,
        &LIMITED_BATCHES,
        &CONCURRENCY,
        copy,
    )
    .await?;
    let near_limit = near_limit_burst(&format!("{base}/v2/notify"), NEAR_LIMIT_SENDERS).await?;
    let limited_peak = group.peak_bytes()? as f64 / (1 << 20) as f64;
    let oom_kills = group.oom_kills()?;
    let alive = limited.running();
    limited.kill()?;
    drop(limited);
    group.remove()?;
    drop(group);
    eprintln!(
        "bench-ingest: in limits: near-limit bodies {near_limit}, peak {limited_peak:.1} MiB, OOM kills {oom_kills}, alive {alive}"
    );

    // Telegraf on the same rows, into a table of the same layout.
    let telegraf_table = "telegraf.measurements";
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA telegraf; \
             CREATE TABLE {telegraf_table} (LIKE \"{schema}\".measurements INCLUDING ALL); \
             ALTER TABLE {telegraf_table} ALTER received_at SET DEFAULT now()",
            schema = db.schema
        ))
        .await?;
    let telegraf_binary = telegraf_binary()?;
    let version = telegraf_version(&telegraf_binary)?;
    let mut telegraf = Telegraf::start(cluster, &telegraf_binary, &url)?;
    telegraf.wait_ready().await?;
    let endpoint = telegraf.url();
    http_run(&endpoint, "telegraf-warmup", 100, 8).await?;
    let mut peer = Vec::new();
    for &batch in &PEER_BATCHES {
        for &senders in &CONCURRENCY {
            let run = format!("telegraf-b{batch}c{senders}");
            let mut figures = http_run(&endpoint, &run, batch, senders).await?;
            committed_rate(&admin, telegraf_table, &run, &mut figures).await?;
            eprintln!(
                "bench-ingest: telegraf: batch {batch:>5} × {senders:>2}: {:>9.0} rows/s committed ({:.2}× COPY), answers p50 {:?}, p99 {:?}",
                figures.rows_per_second,
                figures.rows_per_second / copy,
                figures.p50,
                figures.p99
            );
            peer.push((batch, senders, figures));
        }
    }
    let telegraf_rss = smartregion_e2e::bench::peak_rss_mib(telegraf.pid())?;
    let telegraf_kill = kill_run(&endpoint, "telegraf-kill", &admin, telegraf_table, || {
        telegraf.kill()
    })
    .await?;
    drop(telegraf);

    let notify = match std::env::var_os("SMARTREGION_BENCH_QUANTUMLEAP") {
        Some(command) => Some(
            quantumleap(
                cluster, &postgres, &admin, &db, &password, pg_port, &command,
            )
            .await?,
        ),
        None => {
            eprintln!(
                "bench-ingest: SMARTREGION_BENCH_QUANTUMLEAP is not set: no QuantumLeap figures (docs/benchmarks.md says how to install it)"
            );
            None
        }
    };

    let copy_after = raw_copy(&url, &db, "copy-b").await?;
    eprintln!("bench-ingest: raw COPY again {copy_after:.0} rows/s");

    let mut report = format!(
        "## Ingest: HTTP end to end against raw COPY\n\n\
         Measured by `e2e/bench` (`bench-ingest`, release build) on one PostgreSQL 15 with\n\
         fsync off, client, service and PostgreSQL on the same 2 cores. Each combination\n\
         sends for {} s, one request at a time per sender; bodies are serialized before the\n\
         clock starts. Rows are new (no duplicates).\n\n\
         Reference: one binary `COPY` of {COPY_ROWS} rows into the same `measurements`\n\
         table: **{copy:.0} rows/s** at the start, {copy_after:.0} rows/s at the end (ratios\n\
         below are to the first).\n\n\
         ### smartregion-ingest, unconstrained\n\n\
         2 writer connections, defaults otherwise; a 2xx only after the commit.\n\n",
        RUN.as_secs()
    );
    report.push_str(&table(&free, copy, "(after commit)"));
    report.push_str(&format!(
        "\nPeak RSS (VmHWM): {free_rss:.1} MiB.\n\n\
         ### smartregion-ingest inside the small tier's container limits\n\n\
         A cgroup with the tier's `containerCpu` {} and `containerMemory` {} (what every\n\
         tier gives an ingest container), the memory limit passed as the Deployment passes it.\n\n",
        tier.container_cpu, tier.container_memory
    ));
    report.push_str(&table(&constrained, copy, "(after commit)"));
    report.push_str(&format!(
        "\nThen {NEAR_LIMIT_SENDERS} concurrent NGSI notifications of just under 8 MiB each (what \
         OOM-killed it at 24 before): {near_limit}. Peak memory of the cgroup over the whole \
         run: {limited_peak:.1} MiB of {} MiB; OOM kills: {oom_kills}; process alive at the end: {alive}.\n\n\
         ### Peer: {version}\n\n\
         `inputs.http_listener_v2` (JSON, `sensor`/`metric` as tags, `time` as timestamp) →\n\
         `outputs.postgresql` into a table of the same layout (`LIKE ... INCLUDING ALL`, so\n\
         the same unique key). Telegraf answers 204 when it has parsed a request, before\n\
         writing: rows/s here are rows **committed**, from the start of the run until the\n\
         table holds every acknowledged row.\n\n",
        limits.memory_bytes >> 20
    ));
    report.push_str(&table(&peer, copy, "(before writing)"));
    report.push_str(&format!(
        "\nPeak RSS (VmHWM): {telegraf_rss:.1} MiB.\n\n\
         ### SIGKILL mid-load\n\n\
         8 senders of 1000-row batches, SIGKILL after 2 s; rows of acknowledged batches found\n\
         in the table afterwards.\n\n\
         | service | rows acknowledged | of those stored | lost |\n|---|---|---|---|\n\
         | smartregion-ingest | {} | {} | {} |\n| {version} | {} | {} | {} ({:.0} %) |\n\n",
        ingest_kill.acknowledged,
        ingest_kill.stored_of_acknowledged,
        ingest_kill.acknowledged as i64 - ingest_kill.stored_of_acknowledged,
        telegraf_kill.acknowledged,
        telegraf_kill.stored_of_acknowledged,
        telegraf_kill.acknowledged as i64 - telegraf_kill.stored_of_acknowledged,
        100.0 * (telegraf_kill.acknowledged as f64 - telegraf_kill.stored_of_acknowledged as f64)
            / telegraf_kill.acknowledged.max(1) as f64,
    ));
    if let Some(notify) = &notify {
        report.push_str(notify);
    }
    report.push_str(&targets(&free, copy));
    report.push_str(&tiers_report(&constrained));
    println!("{report}");
    smartregion_e2e::bench::write_section("## Ingest: HTTP end to end against raw COPY", &report)?;
    drop(postgres);
    Ok(())
}

/// The issue's targets, from the unconstrained run.
fn targets(rows: &[(usize, usize, Figures)], copy: f64) -> String {
    let mut text = String::from("### Targets\n\n| target | measured | met |\n|---|---|---|\n");
    if let Some(f) = find(rows, 1, 1) {
        let ms = f.p50.as_secs_f64() * 1000.0;
        text.push_str(&format!(
            "| one sender, batch 1: p50 under 1.5 ms | {ms:.2} ms | {} |\n",
            if ms < 1.5 { "yes" } else { "no" }
        ));
    }
    for (batch, senders, wanted) in [(1000, 1, 0.5), (1000, 8, 0.85), (100, 64, 0.8)] {
        if let Some(f) = find(rows, batch, senders) {
            let ratio = f.rows_per_second / copy;
            text.push_str(&format!(
                "| batch {batch} × {senders}: at least {wanted}× raw COPY | {ratio:.2}× | {} |\n",
                if ratio >= wanted { "yes" } else { "no" }
            ));
        }
    }
    text.push('\n');
    text
}

/// What each tier promises per ingest pod against what one pod delivered in the tier's
/// container limits.
fn tiers_report(constrained: &[(usize, usize, Figures)]) -> String {
    let tiers = smartregion_operator::surface::Tiers::default();
    let mut text = String::from(
        "### Tiers: promised rate per pod against one pod inside the container limits\n\n\
         | tier | ingestRate | replicas | per pod | delivered, batch 1 × 8 | batch 100 × 8 | batch 1000 × 8 |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let at = |batch| find(constrained, batch, 8).map_or(0.0, |f| f.rows_per_second);
    for (name, tier) in [
        ("small", &tiers.small),
        ("medium", &tiers.medium),
        ("large", &tiers.large),
    ] {
        text.push_str(&format!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            tier.ingest_rate,
            tier.ingest_replicas,
            f64::from(tier.ingest_rate) / f64::from(tier.ingest_replicas),
            at(1),
            at(100),
            at(1000),
        ));
    }
    text.push('\n');
    text
}

/// `senders` concurrent near-8-MiB notifications; how they were answered.
async fn near_limit_burst(url: &str, senders: usize) -> Result<String> {
    let auth = format!("Bearer {KEY}");
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let (url, auth) = (url.to_string(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let body = near_limit_notification(&format!("near-{sender}"), 20);
            HttpClient::new()
                .post(&url, &[("authorization", auth.as_str())], body)
                .await
                .map(|answer| answer.status)
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        let status = match task.await? {
            Ok(status) => status.to_string(),
            Err(_) => "no answer".to_string(),
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    Ok(statuses
        .iter()
        .map(|(status, count)| format!("{count} × {status}"))
        .collect::<Vec<_>>()
        .join(", "))
}

fn telegraf_binary() -> Result<std::path::PathBuf> {
    smartregion_e2e::paths::printed_path("e2e/go/telegraf.sh")
}

fn telegraf_version(binary: &std::path::Path) -> Result<String> {
    let output = Command::new(binary).arg("--version").output()?;
    Ok(String::from_utf8(output.stdout)?
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// Telegraf as a host process with a config of the bench's own.
struct Telegraf {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Telegraf {
    fn start(cluster: &Cluster, binary: &std::path::Path, database_url: &str) -> Result<Telegraf> {
        let port = smartregion_e2e::ingest::free_port()?;
        let config: tokio_postgres::Config = database_url.parse()?;
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let connection = format!(
            "host=127.0.0.1 port={} user={} password={password} dbname={} sslmode=disable",
            config.get_ports()[0],
            config.get_user().unwrap_or("postgres"),
            config.get_dbname().unwrap_or("postgres"),
        );
        let file = cluster.state_dir.join("telegraf.conf");
        std::fs::write(
            &file,
            format!(
                r#"[agent]
  interval = "1s"
  flush_interval = "100ms"
  flush_jitter = "0s"
  metric_batch_size = 10000
  metric_buffer_limit = 10000000
  omit_hostname = true

[[inputs.http_listener_v2]]
  service_address = "127.0.0.1:{port}"
  paths = ["/v1/measurements"]
  methods = ["POST"]
  data_format = "json"
  name_override = "measurements"
  tag_keys = ["sensor", "metric"]
  json_time_key = "time"
  json_time_format = "2006-01-02T15:04:05Z07:00"

[[outputs.postgresql]]
  connection = "{connection}"
  schema = "telegraf"
  timestamp_column_name = "time"
"#
            ),
        )?;
        let log_path = cluster.state_dir.join("telegraf.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Telegraf {
            child,
            port,
            log: log_path,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/measurements", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self) -> Result<()> {
        wait_listening("Telegraf", self.port, Duration::from_secs(30))
            .await
            .with_context(|| {
                format!(
                    "Telegraf did not start; its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
    }

    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Telegraf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QuantumLeap (started by `command`, an installed QuantumLeap's launcher that reads
/// `QL_PORT` and `QL_DB_HOST|PORT|NAME|USER|PASS`) and smartregion-ingest on the same
/// notifications; the report's section.
async fn quantumleap(
    cluster: &Cluster,
    postgres: &PostgresServer,
    admin: &tokio_postgres::Client,
    db: &TenantDb,
    password: &str,
    pg_port: u16,
    command: &std::ffi::OsStr,
) -> Result<String> {
    if cluster.engine != smartregion_e2e::Engine::TimescaleDb {
        bail!("QuantumLeap needs TimescaleDB: run with SMARTREGION_TIMESCALEDB=1");
    }
    let ql_password = smartregion_operator::surface::provisioning::new_password();
    admin
        .batch_execute(&format!(
            "CREATE ROLE quantumleap LOGIN PASSWORD '{ql_password}'"
        ))
        .await?;
    // Not in the same call: CREATE DATABASE refuses to run in a transaction block.
    admin
        .batch_execute("CREATE DATABASE quantumleap OWNER quantumleap")
        .await?;
    let ql_db = connect(&postgres.url().replace("/smartregion", "/quantumleap")).await?;
    ql_db
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await?;
    let port = smartregion_e2e::ingest::free_port()?;
    let log = std::fs::File::create(cluster.state_dir.join("quantumleap.log"))?;
    let mut child = Command::new(command)
        .env("QL_PORT", port.to_string())
        .env("QL_DB_HOST", "127.0.0.1")
        .env("QL_DB_PORT", pg_port.to_string())
        .env("QL_DB_NAME", "quantumleap")
        .env("QL_DB_USER", "quantumleap")
        .env("QL_DB_PASS", &ql_password)
        .env("QL_LOGLEVEL", "WARNING")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let address = format!("127.0.0.1:{port}");
    wait_listening("QuantumLeap", port, Duration::from_secs(60)).await?;
    let ql_headers = vec![
        ("fiware-service".to_string(), "bench".to_string()),
        ("fiware-servicepath".to_string(), "/".to_string()),
    ];
    let ql_url = format!("http://{address}/v2/notify");
    // Its first notification creates the schema and table.
    send(
        &ql_url,
        &ql_headers,
        vec![notifications("ql-warmup", 1, 3)],
        1,
    )
    .await?;
    let ql = notify_matrix("quantumleap", &ql_url, &ql_headers).await?;
    let stored: i64 = ql_db
        .query_one("SELECT count(*) FROM mtbench.etairqualityobserved", &[])
        .await?
        .get(0);
    let acknowledged: usize = ql.iter().map(|(_, _, f)| f.acknowledged).sum::<usize>() + 3;
    let _ = child.kill();
    let _ = child.wait();
    let ql_rss = "its processes' peak is not read (gunicorn workers)";
    let mut ingest = Ingest::start(cluster, ingest_env(db, password, pg_port, None))?;
    let base = ingest.url("");
    wait_ready(&base).await?;
    let ours = notify_matrix(
        "ingest",
        &format!("{base}/v2/notify"),
        &[("authorization".to_string(), format!("Bearer {KEY}"))],
    )
    .await?;
    ingest.kill()?;
    let mut text = format!(
        "### Peer: FIWARE QuantumLeap on TimescaleDB, `/v2/notify`\n\n\
         QuantumLeap started by `SMARTREGION_BENCH_QUANTUMLEAP` on the same PostgreSQL (with\n\
         TimescaleDB); it answers after its insert commits (checked: {stored} rows stored for\n\
         {acknowledged} acknowledged entities; {ql_rss}). Each entity has one number, so values/s\n\
         are entities/s for both.\n\n\
         | entities per notification | senders | QuantumLeap values/s | p50 | smartregion-ingest values/s | p50 | ratio |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for ((entities, senders, theirs), (_, _, mine)) in ql.iter().zip(&ours) {
        text.push_str(&format!(
            "| {entities} | {senders} | {:.0} | {:.1} ms | {:.0} | {:.1} ms | {:.2} |\n",
            theirs.rows_per_second,
            theirs.p50.as_secs_f64() * 1000.0,
            mine.rows_per_second,
            mine.p50.as_secs_f64() * 1000.0,
            mine.rows_per_second / theirs.rows_per_second.max(1.0),
        ));
    }
    text.push('\n');
    Ok(text)
}
