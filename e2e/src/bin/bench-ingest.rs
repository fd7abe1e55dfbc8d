//! Benchmark: end-to-end HTTP and MQTT ingest against their references, in one run on
//! this machine, next to their peers. Prints the figures and writes them to
//! docs/benchmarks.md.
//!
//! The tenant schema is provisioned with the operator's own database functions on a fresh
//! PostgreSQL; `smartregion-ingest` (release build) runs as a host process with the
//! environment its Deployment would give it: once unconstrained, once inside a cgroup
//! with a tier's container limits (CPU and memory), where it also gets the near-limit
//! bodies that once OOM-killed it. Client, service and database share the two cores, as
//! they would on a small node; each cell says where the CPU went (service, PostgreSQL,
//! the bench's own senders), read from `/proc` before and after it.
//!
//! References measured in the same run: one binary `COPY` of a million rows into the same
//! table (what batches can reach), and N plain connections each doing a one-row
//! `INSERT` and its `COMMIT` in a loop, N the cell's senders (what single-row senders can
//! reach without sharing commits).
//!
//! Peers, on the same rows and table layout: Telegraf (`inputs.http_listener_v2` and
//! `inputs.mqtt_consumer` → `outputs.postgresql`, built by `e2e/go/telegraf.sh`), counted
//! by the rows it committed, not by its answers, and killed with SIGKILL mid-load to count
//! what it acknowledged but lost (smartregion-ingest gets the same). MQTT devices publish
//! one reading per message at QoS 1 through Debian's Mosquitto. FIWARE QuantumLeap, which
//! cannot be installed from a registry, runs when `SMARTREGION_BENCH_QUANTUMLEAP` names a
//! command that starts an installed one (see docs/benchmarks.md). Run with `e2e/bench`.

use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use smartregion_e2e::cgroup::{self, Cgroup};
use smartregion_e2e::ingest::{HttpClient, Ingest, near_limit_notification};
use smartregion_e2e::mosquitto::{self, Broker, Mosquitto, Published};
use smartregion_e2e::{Cluster, PostgresServer, wait};
use smartregion_operator::surface::TenantName;
use smartregion_operator::surface::provisioning::TenantDb;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const TENANT: &str = "bench-ingest";
const KEY: &str = "bench-key-0123456789abcdef";
const BATCHES: [usize; 4] = [1, 100, 1000, 10_000];
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Inside the tier's limits and for the peer: the batch sizes senders use.
const LIMITED_BATCHES: [usize; 3] = [1, 100, 1000];
const PEER_BATCHES: [usize; 3] = [1, 100, 1000];
/// MQTT devices publishing at once, one reading per message.
const DEVICES: [usize; 3] = [1, 64, 1000];
/// `/v2/notify` runs against QuantumLeap and smartregion-ingest: (entities per
/// notification, senders).
const NOTIFY_RUNS: [(usize, usize); 5] = [(1, 1), (1, 8), (100, 1), (100, 8), (100, 64)];
/// Concurrent near-limit bodies against the constrained service (24 OOM-killed it once).
const NEAR_LIMIT_SENDERS: usize = 96;
/// Each combination sends for this long (after a short warm-up).
const RUN: Duration = Duration::from_secs(4);
const COPY_ROWS: usize = 1_000_000;
/// A reading's time: late 2026, inside the bench tenant's retention.
const BASE_SECOND: i64 = 1_795_000_000;

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Seconds of CPU (user and system) of process `pid`; with `waited`, also of the
/// children it has waited for.
fn cpu_seconds(pid: u32, waited: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (in parentheses, which may hold spaces): state is field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    let own = ticks(14)? + ticks(15)?;
    let children = if waited { ticks(16)? + ticks(17)? } else { 0.0 };
    // /proc counts in USER_HZ, 100 on Linux whatever the kernel's tick.
    Some((own + children) / 100.0)
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of `root` and its children: a PostgreSQL server's postmaster, its live
/// backends and the ones that exited.
fn tree_cpu_seconds(root: u32) -> f64 {
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(root))
        .filter_map(|pid| cpu_seconds(pid, false))
        .sum();
    cpu_seconds(root, true).unwrap_or(0.0) + children
}

/// Whose CPU a cell's figures count.
#[derive(Clone, Copy)]
struct Processes {
    /// The service measured (smartregion-ingest or a peer), if it runs apart.
    service: Option<u32>,
    /// PostgreSQL's postmaster.
    postgres: u32,
}

#[derive(Clone, Copy)]
struct CpuSample {
    service: f64,
    postgres: f64,
    bench: f64,
    at: Instant,
}

/// Where the CPU went during a cell, in cores (CPU seconds per second of the cell).
#[derive(Clone, Copy, Debug, Default)]
struct CpuUse {
    service: f64,
    postgres: f64,
    bench: f64,
}

impl Processes {
    fn sample(&self) -> CpuSample {
        CpuSample {
            service: self
                .service
                .and_then(|pid| cpu_seconds(pid, false))
                .unwrap_or(0.0),
            postgres: tree_cpu_seconds(self.postgres),
            bench: cpu_seconds(std::process::id(), false).unwrap_or(0.0),
            at: Instant::now(),
        }
    }

    fn since(&self, before: CpuSample) -> CpuUse {
        let now = self.sample();
        let wall = now.at.duration_since(before.at).as_secs_f64().max(1e-9);
        CpuUse {
            service: (now.service - before.service) / wall,
            postgres: (now.postgres - before.postgres) / wall,
            bench: (now.bench - before.bench) / wall,
        }
    }
}

/// The postmaster's pid, from its data directory.
fn postmaster(cluster: &Cluster, name: &str) -> Result<u32> {
    let file =
        smartregion_e2e::postgres::data_dir(&cluster.state_dir.join(name)).join("postmaster.pid");
    std::fs::read_to_string(&file)
        .with_context(|| format!("failed to read {}", file.display()))?
        .lines()
        .next()
        .context("an empty postmaster.pid")?
        .trim()
        .parse()
        .context("postmaster.pid does not start with a pid")
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
    cpu: CpuUse,
}

/// `concurrency` senders, each posting its own prepared bodies of `batch` rows for
/// [`RUN`], one request at a time. Rows per second as acknowledged.
async fn http_run(
    url: &str,
    run: &str,
    batch: usize,
    concurrency: usize,
    processes: Processes,
) -> Result<Figures> {
    // Enough distinct bodies that no request repeats within the run, within about two
    // million rows of JSON in memory; all serialized before the clock starts.
    let per_worker = (2_000_000 / (batch * concurrency)).clamp(3, 4_000);
    let prepared: Vec<Vec<Bytes>> = (0..concurrency)
        .map(|worker| bodies(&format!("{run}-w{worker}"), batch, per_worker))
        .collect();
    let headers = vec![("authorization".to_string(), format!("Bearer {KEY}"))];
    send(url, &headers, prepared, batch, processes).await
}

/// Each sender posts its `prepared` bodies (of `rows` rows each) with `headers` for
/// [`RUN`], one request at a time.
async fn send(
    url: &str,
    headers: &[(String, String)],
    prepared: Vec<Vec<Bytes>>,
    rows_per_body: usize,
    processes: Processes,
) -> Result<Figures> {
    let cpu = processes.sample();
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
    let cpu = processes.since(cpu);
    latencies.sort();
    Ok(Figures {
        rows_per_second: rows as f64 / elapsed.as_secs_f64(),
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        failed,
        acknowledged: rows,
        started,
        cpu,
    })
}

/// The `q` quantile of sorted `latencies`.
fn quantile(latencies: &[Duration], q: f64) -> Duration {
    latencies
        .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The commit-rate reference: `connections` plain connections, each doing one-row
/// `INSERT` and `COMMIT` in a loop for [`RUN`], into the same table; rows per second.
async fn commit_rate(url: &str, db: &TenantDb, connections: usize) -> Result<f64> {
    let statement = format!(
        "INSERT INTO \"{}\".measurements (sensor, metric, time, value, received_at) \
         VALUES ($1, 'pm10', $2, $3, now())",
        db.schema
    );
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(url).await?);
    }
    let started = Instant::now();
    let deadline = started + RUN;
    let mut workers = Vec::new();
    for (index, client) in clients.into_iter().enumerate() {
        let statement = statement.clone();
        workers.push(tokio::spawn(async move {
            let insert = client.prepare(&statement).await?;
            let sensor = format!("plain-c{connections}-{index}");
            let mut rows = 0u64;
            while Instant::now() < deadline {
                let time = SystemTime::UNIX_EPOCH
                    + Duration::from_secs((BASE_SECOND - rows as i64) as u64);
                // Autocommit: each statement is its own transaction, committed.
                client
                    .execute(&insert, &[&sensor, &time, &(rows as f64)])
                    .await?;
                rows += 1;
            }
            anyhow::Ok(rows)
        }));
    }
    let mut rows = 0;
    for worker in workers {
        rows += worker.await??;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
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
    processes: Processes,
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
        let figures = send(url, headers, prepared, entities, processes).await?;
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

/// What MQTT devices got from a subscriber.
struct MqttFigures {
    /// Rows committed per second, from the first publish until the table held every
    /// message the broker acknowledged.
    rows_per_second: f64,
    /// Publish to the broker's PUBACK.
    p50: Duration,
    p99: Duration,
    /// From the last publish until all of them were committed (or the wait gave up).
    drained: Duration,
    acknowledged: usize,
    /// Of those, committed when the wait ended (all, unless it gave up after 120 s).
    stored: i64,
    cpu: CpuUse,
}

/// The topic device `device` of run `run` publishes on, under `prefix`.
fn device_topic(prefix: &str, run: &str, device: usize) -> String {
    format!("{prefix}/measurements/{run}/{device}")
}

/// One reading as `/v1/measurements` JSON: sensor `<run>-d<device>`, a time of its own
/// per message.
fn reading(run: &str, device: usize, message: usize) -> String {
    let time =
        k8s_openapi::jiff::Timestamp::from_second(BASE_SECOND - message as i64).expect("in range");
    format!(r#"[{{"sensor":"{run}-d{device}","metric":"pm10","time":"{time}","value":{message}}}]"#)
}

/// `devices` devices publish readings through `broker` for [`RUN`] under `prefix`; the
/// subscriber stores them into `table`.
async fn mqtt_run(
    broker: &Mosquitto,
    prefix: &str,
    run: &str,
    devices: usize,
    db: &tokio_postgres::Client,
    table: &str,
    processes: Processes,
) -> Result<MqttFigures> {
    let cpu = processes.sample();
    let started = Instant::now();
    let (topic_run, payload_run) = (run.to_string(), run.to_string());
    let prefix = prefix.to_string();
    let mut published = mosquitto::publish_readings(
        broker.address,
        broker.port,
        devices,
        started + RUN,
        move |device| device_topic(&prefix, &topic_run, device),
        move |device, message| reading(&payload_run, device, message),
    )
    .await?;
    let last_publish = Instant::now();
    let acknowledged = published.acknowledged.len();
    let stored = wait_stored(db, table, run, acknowledged, Duration::from_secs(120)).await?;
    let cpu = processes.since(cpu);
    Ok(MqttFigures {
        rows_per_second: stored as f64 / started.elapsed().as_secs_f64(),
        p50: published.latency(0.5),
        p99: published.latency(0.99),
        drained: last_publish.elapsed(),
        acknowledged,
        stored,
        cpu,
    })
}

/// Waits until `table` holds `wanted` rows of sensors `<run>-...`, or `timeout`; how many
/// it holds.
async fn wait_stored(
    db: &tokio_postgres::Client,
    table: &str,
    run: &str,
    wanted: usize,
    timeout: Duration,
) -> Result<i64> {
    let query = format!("SELECT count(*) FROM {table} WHERE sensor LIKE $1");
    let pattern = format!("{run}-%");
    let count = || async { anyhow::Ok(db.query_one(&query, &[&pattern]).await?.get::<_, i64>(0)) };
    let reached = wait::until(
        &format!("{table} to hold the {wanted} rows of {run}"),
        timeout,
        || async { Ok((count().await? >= wanted as i64).then_some(())) },
    )
    .await;
    if let Err(error) = reached {
        eprintln!("bench-ingest: {error:#}");
    }
    count().await
}

/// What a SIGKILL of the subscriber did to messages the broker had acknowledged.
struct MqttKill {
    acknowledged: usize,
    stored: i64,
}

/// 64 devices publish for 6 s; the subscriber is killed with SIGKILL after 2 s and
/// started again after 3 s (the same session, as a replaced pod would resume it); then
/// the acknowledged messages found in `table`.
async fn mqtt_kill_run(
    broker: &Mosquitto,
    prefix: &str,
    run: &str,
    db: &tokio_postgres::Client,
    table: &str,
    kill: impl FnOnce() -> Result<()>,
    restart: impl FnOnce() -> Result<()>,
) -> Result<MqttKill> {
    let (topic_run, payload_run) = (run.to_string(), run.to_string());
    let prefix = prefix.to_string();
    let (address, port) = (broker.address, broker.port);
    let devices = tokio::spawn(mosquitto::publish_readings(
        address,
        port,
        64,
        Instant::now() + Duration::from_secs(6),
        move |device| device_topic(&prefix, &topic_run, device),
        move |device, message| reading(&payload_run, device, message),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    restart()?;
    let published: Published = devices.await??;
    let acknowledged = published.acknowledged.len();
    let stored = wait_stored(db, table, run, acknowledged, Duration::from_secs(60)).await?;
    Ok(MqttKill {
        acknowledged,
        stored,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    smartregion_e2e::bench::on_fresh_cluster("e2e-bench-ingest", |cluster| async move {
        run(&cluster).await
    })
    .await
}

/// What every part of the bench shares: the database, the tenant, the broker.
struct Bench<'a> {
    cluster: &'a Cluster,
    postgres: PostgresServer,
    url: String,
    db: TenantDb,
    password: String,
    pg_port: u16,
    admin: tokio_postgres::Client,
    /// The raw COPY reference at the start.
    copy: f64,
    broker: Mosquitto,
    postmaster: u32,
}

impl Bench<'_> {
    async fn set_up(cluster: &Cluster) -> Result<Bench<'_>> {
        let postgres = PostgresServer::start_new(cluster, "bench-postgres").await?;
        let url = postgres.url();
        let db = TenantDb::for_tenant(&TenantName::parse(TENANT)?);
        let password = smartregion_operator::surface::provisioning::new_password();
        let mut admin = connect(&url).await?;
        smartregion_e2e::bench::provision_tenant(
            &mut admin,
            &db,
            &password,
            None,
            [jiff::Timestamp::now()],
        )
        .await?;
        eprintln!("bench-ingest: reference: one binary COPY of {COPY_ROWS} rows");
        let copy = raw_copy(&url, &db, "copy-a").await?;
        eprintln!("bench-ingest: raw COPY {copy:.0} rows/s");
        let config: tokio_postgres::Config = url.parse()?;
        let broker = Mosquitto::start_with(
            cluster,
            "bench-mosquitto",
            Broker::for_devices(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        )
        .await?;
        Ok(Bench {
            cluster,
            postmaster: postmaster(cluster, "bench-postgres")?,
            pg_port: config.get_ports()[0],
            postgres,
            url,
            db,
            password,
            admin,
            copy,
            broker,
        })
    }

    fn processes(&self, service: Option<u32>) -> Processes {
        Processes {
            service,
            postgres: self.postmaster,
        }
    }

    fn table(&self) -> String {
        format!("\"{}\".measurements", self.db.schema)
    }

    /// The environment the Deployment gives an ingest pod, for this bench's tenant, with
    /// the broker under `bench/ingest` when `mqtt`.
    fn ingest_env(&self, memory_limit: Option<u64>, mqtt: bool) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("SMARTREGION_TENANT", TENANT.to_string()),
            ("SMARTREGION_INGEST_API_KEYS", KEY.to_string()),
            // The quota is not what is measured.
            ("SMARTREGION_INGEST_RATE", "10000000".to_string()),
            // The bench tenant's retention, as the Deployment passes it.
            ("SMARTREGION_INGEST_RETENTION_DAYS", "3650".to_string()),
            ("PGHOST", "127.0.0.1".to_string()),
            ("PGPORT", self.pg_port.to_string()),
            ("PGDATABASE", "smartregion".to_string()),
            ("PGUSER", self.db.writer_logins[0].clone()),
            ("PGPASSWORD", self.password.clone()),
            ("SMARTREGION_LOG_FORMAT", "json".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(limit) = memory_limit {
            env.push(("SMARTREGION_INGEST_MEMORY_LIMIT".into(), limit.to_string()));
        }
        if mqtt {
            env.push(("SMARTREGION_INGEST_MQTT_URL".into(), self.broker.url()));
            env.push((
                "SMARTREGION_INGEST_MQTT_TOPICS".into(),
                "bench/ingest/#".into(),
            ));
        }
        env
    }

    /// Publishes readings until `table` holds one: the subscriber is in place.
    async fn warm_mqtt(&self, prefix: &str, table: &str) -> Result<()> {
        let run = format!("warm{}", prefix.replace('/', "-"));
        wait::until(
            &format!("the subscriber of {prefix} to store a reading"),
            Duration::from_secs(60),
            || async {
                let (topic_run, payload_run, prefix) =
                    (run.clone(), run.clone(), prefix.to_string());
                mosquitto::publish_readings(
                    self.broker.address,
                    self.broker.port,
                    1,
                    Instant::now() + Duration::from_millis(200),
                    move |device| device_topic(&prefix, &topic_run, device),
                    move |device, message| reading(&payload_run, device, message),
                )
                .await?;
                let stored =
                    wait_stored(&self.admin, table, &run, 1, Duration::from_secs(1)).await?;
                Ok((stored > 0).then_some(()))
            },
        )
        .await
    }
}

/// N plain connections doing one-row INSERT and COMMIT, for each N of [`CONCURRENCY`].
async fn plain_references(bench: &Bench<'_>) -> Result<Vec<(usize, f64)>> {
    let mut references = Vec::new();
    for connections in CONCURRENCY {
        let rate = commit_rate(&bench.url, &bench.db, connections).await?;
        eprintln!(
            "bench-ingest: reference: {connections:>2} plain connections, one-row INSERT + COMMIT: {rate:.0} rows/s"
        );
        references.push((connections, rate));
    }
    Ok(references)
}

/// smartregion-ingest without limits: the HTTP matrix, the MQTT devices, SIGKILL under
/// MQTT and under HTTP load.
struct Ours {
    http: Vec<(usize, usize, Figures)>,
    rss: f64,
    kill: KillFigures,
    mqtt: Vec<(usize, MqttFigures)>,
    mqtt_kill: MqttKill,
}

async fn ours_unconstrained(bench: &Bench<'_>) -> Result<Ours> {
    let mut ingest = Ingest::start(bench.cluster, bench.ingest_env(None, true))?;
    let base = ingest.url("");
    wait_ready(&base).await?;
    let processes = bench.processes(Some(ingest.pid()));
    let endpoint = format!("{base}/v1/measurements");
    http_run(&endpoint, "warmup", 100, 8, processes).await?;
    let http = matrix(
        "ingest",
        &endpoint,
        &BATCHES,
        &CONCURRENCY,
        bench.copy,
        processes,
    )
    .await?;
    let table = bench.table();
    bench.warm_mqtt("bench/ingest", &table).await?;
    let mut mqtt = Vec::new();
    for devices in DEVICES {
        let figures = mqtt_run(
            &bench.broker,
            "bench/ingest",
            &format!("ingest-mqtt{devices}"),
            devices,
            &bench.admin,
            &table,
            processes,
        )
        .await?;
        print_mqtt("ingest", devices, &figures);
        mqtt.push((devices, figures));
    }
    let rss = smartregion_e2e::bench::peak_rss_mib(ingest.pid())?;
    let mqtt_kill = {
        let ingest = std::sync::Mutex::new(&mut ingest);
        mqtt_kill_run(
            &bench.broker,
            "bench/ingest",
            "ingest-mqtt-kill",
            &bench.admin,
            &table,
            || ingest.lock().expect("not poisoned").kill(),
            || ingest.lock().expect("not poisoned").restart(),
        )
        .await?
    };
    ingest.wait_ready(Duration::from_secs(30)).await?;
    let kill = kill_run(&endpoint, "ingest-kill", &bench.admin, &table, || {
        ingest.kill()
    })
    .await?;
    Ok(Ours {
        http,
        rss,
        kill,
        mqtt,
        mqtt_kill,
    })
}

fn print_mqtt(who: &str, devices: usize, figures: &MqttFigures) {
    eprintln!(
        "bench-ingest: {who}: MQTT {devices:>4} devices: {} messages acknowledged, {} committed, {:>7.0} rows/s committed, PUBACK p50 {:?}, p99 {:?}, committed {:?} after the last publish",
        figures.acknowledged,
        figures.stored,
        figures.rows_per_second,
        figures.p50,
        figures.p99,
        figures.drained
    );
}

/// smartregion-ingest inside the small tier's container limits.
struct Limited {
    container_cpu: String,
    container_memory: String,
    memory_bytes: u64,
    http: Vec<(usize, usize, Figures)>,
    mqtt: MqttFigures,
    near_limit: String,
    peak_mib: f64,
    oom_kills: u64,
    alive: bool,
}

/// The small tier's container limits, as a cgroup gets them.
fn small_tier_limits() -> Result<cgroup::Limits> {
    let tier = smartregion_operator::surface::Tiers::default().small;
    Ok(cgroup::Limits {
        memory_bytes: u64::try_from(tier.container_memory.whole_units())?,
        // Thousandths of a core are millicores.
        cpu_millis: u64::try_from(
            smartregion_operator::surface::parse_quantity(tier.container_cpu.as_str())
                .context("the tier's container CPU")?,
        )?,
    })
}

async fn ours_in_limits(bench: &Bench<'_>) -> Result<Limited> {
    let tier = smartregion_operator::surface::Tiers::default().small;
    let limits = small_tier_limits()?;
    let group = Cgroup::create("bench-ingest", limits)?;
    let mut limited = Ingest::start_in(
        bench.cluster,
        bench.ingest_env(Some(limits.memory_bytes), true),
        &group,
    )?;
    let base = limited.url("");
    wait_ready(&base).await?;
    let processes = bench.processes(Some(limited.pid()));
    let endpoint = format!("{base}/v1/measurements");
    http_run(&endpoint, "warmup-limited", 100, 8, processes).await?;
    let who = "ingest in limits";
    let http = matrix(
        who,
        &endpoint,
        &LIMITED_BATCHES,
        &CONCURRENCY,
        bench.copy,
        processes,
    )
    .await?;
    let table = bench.table();
    let run = "limited-mqtt64";
    let mqtt = mqtt_run(
        &bench.broker,
        "bench/ingest",
        run,
        64,
        &bench.admin,
        &table,
        processes,
    )
    .await?;
    print_mqtt(who, 64, &mqtt);
    let near_limit = near_limit_burst(&format!("{base}/v2/notify"), NEAR_LIMIT_SENDERS).await?;
    let peak_mib = group.peak_bytes()? as f64 / (1 << 20) as f64;
    let oom_kills = group.oom_kills()?;
    let alive = limited.running();
    limited.kill()?;
    drop(limited);
    group.remove()?;
    eprintln!(
        "bench-ingest: in limits: near-limit bodies {near_limit}, peak {peak_mib:.1} MiB, OOM kills {oom_kills}, alive {alive}"
    );
    Ok(Limited {
        container_cpu: tier.container_cpu.to_string(),
        container_memory: tier.container_memory.to_string(),
        memory_bytes: limits.memory_bytes,
        http,
        mqtt,
        near_limit,
        peak_mib,
        oom_kills: oom_kills as u64,
        alive,
    })
}

/// Names builds of `smartregion-ingest` to compare instead of the whole bench:
/// `before=/path/to/smartregion-ingest,after=/path/to/another`.
const COMPARE: &str = "SMARTREGION_BENCH_COMPARE";
/// Rounds of a comparison (3 unless set).
const COMPARE_ROUNDS: &str = "SMARTREGION_BENCH_COMPARE_ROUNDS";

/// Compares builds of `smartregion-ingest` (`builds` as [`COMPARE`] gives them) on the
/// HTTP matrix, inside the small tier's limits and without limits: in each round, each
/// build in turn (each round starting with the next one), on the same database, each
/// from an empty table, so that what changes over the run (the machine's other load)
/// falls on every build alike. Prints each cell
/// as measured, then the means and their ratio to the first build's. Writes no docs.
async fn compare(bench: &Bench<'_>, builds: &str) -> Result<()> {
    let builds = builds
        .split(',')
        .map(|build| {
            let (name, program) = build
                .split_once('=')
                .with_context(|| format!("{COMPARE}: '{build}' is not name=path"))?;
            let program = std::path::PathBuf::from(program);
            if !program.is_file() {
                bail!("{COMPARE}: {} is not a file", program.display());
            }
            Ok((name.to_string(), program))
        })
        .collect::<Result<Vec<_>>>()?;
    let rounds: usize = match std::env::var(COMPARE_ROUNDS) {
        Ok(rounds) => rounds
            .parse()
            .with_context(|| format!("{COMPARE_ROUNDS}: '{rounds}' is not a count"))?,
        Err(_) => 3,
    };
    // (limits, batch, senders) → each build's rows/s, one per round.
    let mut cells: std::collections::BTreeMap<(&str, usize, usize), Vec<Vec<f64>>> =
        std::collections::BTreeMap::new();
    for round in 1..=rounds {
        // Each round starts with the next build: what drifts within a round (the
        // database's background work, the machine's other load) falls on each alike.
        for turn in 0..builds.len() {
            let index = (turn + round - 1) % builds.len();
            let (name, program) = &builds[index];
            for in_tier in [true, false] {
                let limits = if in_tier { "small tier" } else { "none" };
                eprintln!(
                    "bench-ingest: compare: round {round} of {rounds}, {name}, limits {limits}"
                );
                let who = format!("{name} r{round} {}", limits.replace(' ', "-"));
                for (batch, senders, figures) in compare_run(bench, &who, program, in_tier).await? {
                    let runs = cells
                        .entry((limits, batch, senders))
                        .or_insert_with(|| vec![Vec::new(); builds.len()]);
                    runs[index].push(figures.rows_per_second);
                }
            }
        }
    }
    let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len().max(1) as f64;
    let names: Vec<&str> = builds.iter().map(|(name, _)| name.as_str()).collect();
    println!(
        "| limits | batch × senders | {} |",
        names
            .iter()
            .enumerate()
            .map(|(i, name)| if i == 0 {
                format!("{name}: rows/s (runs)")
            } else {
                format!("{name}: rows/s (runs) | ratio")
            })
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for ((limits, batch, senders), runs) in &cells {
        let first = mean(&runs[0]);
        let columns: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(i, runs)| {
                let each: Vec<String> = runs.iter().map(|rate| format!("{rate:.0}")).collect();
                let cell = format!("{:.0} ({})", mean(runs), each.join(", "));
                if i == 0 {
                    cell
                } else {
                    format!("{cell} | {:.2}", mean(runs) / first)
                }
            })
            .collect();
        println!(
            "| {limits} | {batch} × {senders} | {} |",
            columns.join(" | ")
        );
    }
    Ok(())
}

/// One build's HTTP matrix: inside the small tier's limits (`in_tier`, with its batches)
/// or without.
async fn compare_run(
    bench: &Bench<'_>,
    who: &str,
    program: &std::path::Path,
    in_tier: bool,
) -> Result<Vec<(usize, usize, Figures)>> {
    let (group, env, batches) = if in_tier {
        let limits = small_tier_limits()?;
        let group = Cgroup::create("bench-ingest", limits)?;
        let env = bench.ingest_env(Some(limits.memory_bytes), false);
        (Some(group), env, &LIMITED_BATCHES[..])
    } else {
        (None, bench.ingest_env(None, false), &BATCHES[..])
    };
    // Every build starts from an empty table, and the rounds' rows (tens of millions)
    // never pile up on the disk.
    bench
        .admin
        .batch_execute(&format!("TRUNCATE {}", bench.table()))
        .await
        .context("emptying the table between builds")?;
    let mut ingest = Ingest::start_program(bench.cluster, program, env, group.as_ref())?;
    let base = ingest.url("");
    wait_ready(&base).await?;
    let processes = bench.processes(Some(ingest.pid()));
    let endpoint = format!("{base}/v1/measurements");
    http_run(
        &endpoint,
        &format!("warmup-{}", who.replace(' ', "-")),
        100,
        8,
        processes,
    )
    .await?;
    let http = matrix(who, &endpoint, batches, &CONCURRENCY, bench.copy, processes).await?;
    ingest.kill()?;
    drop(ingest);
    if let Some(group) = group {
        group.remove()?;
    }
    Ok(http)
}

/// Telegraf on the same rows, into tables of the same layout.
struct Peer {
    version: String,
    http: Vec<(usize, usize, Figures)>,
    rss: f64,
    kill: KillFigures,
    mqtt: Vec<(usize, MqttFigures)>,
    mqtt_kill: MqttKill,
}

async fn telegraf(bench: &Bench<'_>) -> Result<Peer> {
    for table in ["measurements", "mqtt_measurements"] {
        bench
            .admin
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS telegraf; \
                 CREATE TABLE telegraf.{table} (LIKE \"{schema}\".measurements INCLUDING ALL); \
                 ALTER TABLE telegraf.{table} ALTER received_at SET DEFAULT now()",
                schema = bench.db.schema
            ))
            .await?;
    }
    let binary = telegraf_binary()?;
    let version = telegraf_version(&binary)?;
    let port = smartregion_e2e::ingest::free_port()?;
    let mut telegraf = Telegraf::start(
        bench.cluster,
        &binary,
        &bench.url,
        &TelegrafInput::Http(port),
    )?;
    telegraf.wait_listening(port).await?;
    let processes = bench.processes(Some(telegraf.pid()));
    let endpoint = format!("http://127.0.0.1:{port}/v1/measurements");
    let table = "telegraf.measurements";
    http_run(&endpoint, "telegraf-warmup", 100, 8, processes).await?;
    let mut http = Vec::new();
    for &batch in &PEER_BATCHES {
        for &senders in &CONCURRENCY {
            let run = format!("telegraf-b{batch}c{senders}");
            let mut figures = http_run(&endpoint, &run, batch, senders, processes).await?;
            committed_rate(&bench.admin, table, &run, &mut figures).await?;
            eprintln!(
                "bench-ingest: telegraf: batch {batch:>5} × {senders:>2}: {:>9.0} rows/s committed ({:.2}× COPY), answers p50 {:?}, p99 {:?}",
                figures.rows_per_second,
                figures.rows_per_second / bench.copy,
                figures.p50,
                figures.p99
            );
            http.push((batch, senders, figures));
        }
    }
    let rss = smartregion_e2e::bench::peak_rss_mib(telegraf.pid())?;
    let kill = kill_run(&endpoint, "telegraf-kill", &bench.admin, table, || {
        telegraf.kill()
    })
    .await?;
    drop(telegraf);

    let input = TelegrafInput::Mqtt {
        broker: format!("tcp://{}:{}", bench.broker.address, bench.broker.port),
        prefix: "bench/telegraf".into(),
    };
    let mut telegraf = Telegraf::start(bench.cluster, &binary, &bench.url, &input)?;
    let processes = bench.processes(Some(telegraf.pid()));
    let table = "telegraf.mqtt_measurements";
    bench.warm_mqtt("bench/telegraf", table).await?;
    let mut mqtt = Vec::new();
    for devices in DEVICES {
        let run = format!("telegraf-mqtt{devices}");
        let figures = mqtt_run(
            &bench.broker,
            "bench/telegraf",
            &run,
            devices,
            &bench.admin,
            table,
            processes,
        )
        .await?;
        print_mqtt("telegraf", devices, &figures);
        mqtt.push((devices, figures));
    }
    let mqtt_kill = {
        let telegraf = std::sync::Mutex::new(&mut telegraf);
        mqtt_kill_run(
            &bench.broker,
            "bench/telegraf",
            "telegraf-mqtt-kill",
            &bench.admin,
            table,
            || telegraf.lock().expect("not poisoned").kill(),
            || telegraf.lock().expect("not poisoned").restart(),
        )
        .await?
    };
    Ok(Peer {
        version,
        http,
        rss,
        kill,
        mqtt,
        mqtt_kill,
    })
}

async fn run(cluster: &Cluster) -> Result<()> {
    let bench = Bench::set_up(cluster).await?;
    if let Ok(builds) = std::env::var(COMPARE) {
        return compare(&bench, &builds).await;
    }
    let plain = plain_references(&bench).await?;
    let ours = ours_unconstrained(&bench).await?;
    let limited = ours_in_limits(&bench).await?;
    let peer = telegraf(&bench).await?;
    let notify = match std::env::var_os("SMARTREGION_BENCH_QUANTUMLEAP") {
        Some(command) => Some(
            quantumleap(
                cluster,
                &bench.postgres,
                &bench.admin,
                &bench.db,
                &bench.password,
                bench.pg_port,
                &command,
                bench.processes(None),
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
    let copy_after = raw_copy(&bench.url, &bench.db, "copy-b").await?;
    eprintln!("bench-ingest: raw COPY again {copy_after:.0} rows/s");
    let report = report(
        &bench,
        copy_after,
        &plain,
        &ours,
        &limited,
        &peer,
        notify.as_deref(),
    );
    println!("{report}");
    smartregion_e2e::bench::write_section(
        "## Ingest: HTTP and MQTT end to end against their references",
        &report,
    )?;
    Ok(())
}

/// The matrix of batch sizes and senders against `endpoint`; each line printed as it is
/// measured, labelled `who`.
async fn matrix(
    who: &str,
    endpoint: &str,
    batches: &[usize],
    concurrency: &[usize],
    copy: f64,
    processes: Processes,
) -> Result<Vec<(usize, usize, Figures)>> {
    let mut rows = Vec::new();
    for &batch in batches {
        for &senders in concurrency {
            let run = format!("{}-b{batch}c{senders}", who.replace(' ', "-"));
            let figures = http_run(endpoint, &run, batch, senders, processes).await?;
            eprintln!(
                "bench-ingest: {who}: batch {batch:>5} × {senders:>2}: {:>9.0} rows/s ({:.2}× COPY), p50 {:?}, p99 {:?}, failed {}, CPU service {:.2} PostgreSQL {:.2} senders {:.2}",
                figures.rows_per_second,
                figures.rows_per_second / copy,
                figures.p50,
                figures.p99,
                figures.failed,
                figures.cpu.service,
                figures.cpu.postgres,
                figures.cpu.bench,
            );
            rows.push((batch, senders, figures));
        }
    }
    Ok(rows)
}

/// The plain-connection reference for `senders` connections.
fn plain_for(plain: &[(usize, f64)], senders: usize) -> f64 {
    plain
        .iter()
        .find(|(connections, _)| *connections == senders)
        .map_or(f64::NAN, |(_, rate)| *rate)
}

fn table(
    rows: &[(usize, usize, Figures)],
    copy: f64,
    plain: &[(usize, f64)],
    answers: &str,
) -> String {
    let mut text = format!(
        "| batch | senders | rows/s | × raw COPY | × plain INSERT+COMMIT | p50 {answers} | p99 | not acknowledged | CPU: service | PostgreSQL | senders |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for (batch, senders, f) in rows {
        text.push_str(&format!(
            "| {batch} | {senders} | {:.0} | {:.2} | {:.2} | {:.1} ms | {:.1} ms | {} | {:.2} | {:.2} | {:.2} |\n",
            f.rows_per_second,
            f.rows_per_second / copy,
            f.rows_per_second / plain_for(plain, *senders),
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.failed,
            f.cpu.service,
            f.cpu.postgres,
            f.cpu.bench,
        ));
    }
    text
}

fn find(rows: &[(usize, usize, Figures)], batch: usize, senders: usize) -> Option<&Figures> {
    rows.iter()
        .find(|(b, s, _)| *b == batch && *s == senders)
        .map(|(_, _, f)| f)
}

fn mqtt_table(
    ours: &[(usize, MqttFigures)],
    peer: &[(usize, MqttFigures)],
    version: &str,
) -> String {
    let mut text = format!(
        "| devices | smartregion-ingest rows/s | committed / acknowledged | PUBACK p50 | p99 | committed after the last publish | CPU: service | PostgreSQL | {version} rows/s | committed / acknowledged | PUBACK p50 | committed after | CPU: service | PostgreSQL | ratio |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for ((devices, mine), (_, theirs)) in ours.iter().zip(peer) {
        text.push_str(&format!(
            "| {devices} | {:.0} | {} / {} | {:.1} ms | {:.1} ms | {:.0} ms | {:.2} | {:.2} | {:.0} | {} / {} | {:.1} ms | {:.0} ms | {:.2} | {:.2} | {:.2} |\n",
            mine.rows_per_second,
            mine.stored,
            mine.acknowledged,
            ms(mine.p50),
            ms(mine.p99),
            ms(mine.drained),
            mine.cpu.service,
            mine.cpu.postgres,
            theirs.rows_per_second,
            theirs.stored,
            theirs.acknowledged,
            ms(theirs.p50),
            ms(theirs.drained),
            theirs.cpu.service,
            theirs.cpu.postgres,
            mine.rows_per_second / theirs.rows_per_second.max(1.0),
        ));
    }
    text
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn lost(acknowledged: usize, stored: i64) -> String {
    let lost = acknowledged as i64 - stored;
    format!(
        "{lost} ({:.0} %)",
        100.0 * lost as f64 / acknowledged.max(1) as f64
    )
}

fn report(
    bench: &Bench<'_>,
    copy_after: f64,
    plain: &[(usize, f64)],
    ours: &Ours,
    limited: &Limited,
    peer: &Peer,
    notify: Option<&str>,
) -> String {
    let copy = bench.copy;
    let version = &peer.version;
    let mut report = format!(
        "## Ingest: HTTP and MQTT end to end against their references\n\n\
         Measured by `e2e/bench` (`bench-ingest`, release build) on one PostgreSQL 15 with\n\
         fsync off, client, service and PostgreSQL on the same 2 cores. Each combination\n\
         sends for {} s, one request at a time per sender; bodies are serialized before the\n\
         clock starts. Rows are new (no duplicates). CPU columns are cores used during the\n\
         cell (CPU seconds per second; 2 is the machine): the service, PostgreSQL (all its\n\
         processes), and the bench's own senders.\n\n\
         References, in the same run and table:\n\n\
         - one binary `COPY` of {COPY_ROWS} rows: **{copy:.0} rows/s** at the start,\n  \
         {copy_after:.0} rows/s at the end (ratios below are to the first);\n\
         - N plain connections each doing one-row `INSERT` + `COMMIT` in a loop, N the\n  \
         cell's senders (what single-row senders get without sharing commits): {}.\n\n\
         ### smartregion-ingest, unconstrained\n\n\
         2 writer connections, defaults otherwise; a 2xx only after the commit.\n\n",
        RUN.as_secs(),
        plain
            .iter()
            .map(|(n, rate)| format!("{n}: {rate:.0} rows/s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    report.push_str(&table(&ours.http, copy, plain, "(after commit)"));
    report.push_str(&format!(
        "\nPeak RSS (VmHWM): {:.1} MiB.\n\n\
         ### smartregion-ingest inside the small tier's container limits\n\n\
         A cgroup with the tier's `containerCpu` {} and `containerMemory` {} (what every\n\
         tier gives an ingest container), the memory limit passed as the Deployment passes it.\n\n",
        ours.rss, limited.container_cpu, limited.container_memory
    ));
    report.push_str(&table(&limited.http, copy, plain, "(after commit)"));
    report.push_str(&format!(
        "\n64 MQTT devices (as below): {:.0} rows/s committed ({} of {} acknowledged messages).\n\n\
         Then {NEAR_LIMIT_SENDERS} concurrent NGSI notifications of just under 8 MiB each (what \
         OOM-killed it at 24 before): {}. Peak memory of the cgroup over the whole \
         run: {:.1} MiB of {} MiB; OOM kills: {}; process alive at the end: {}.\n\n\
         ### Peer: {version}\n\n\
         `inputs.http_listener_v2` (JSON, `sensor`/`metric` as tags, `time` as timestamp) →\n\
         `outputs.postgresql` into a table of the same layout (`LIKE ... INCLUDING ALL`, so\n\
         the same unique key). Telegraf answers 204 when it has parsed a request, before\n\
         writing: rows/s here are rows **committed**, from the start of the run until the\n\
         table holds every acknowledged row.\n\n",
        limited.mqtt.rows_per_second,
        limited.mqtt.stored,
        limited.mqtt.acknowledged,
        limited.near_limit,
        limited.peak_mib,
        limited.memory_bytes >> 20,
        limited.oom_kills,
        limited.alive,
    ));
    report.push_str(&table(&peer.http, copy, plain, "(before writing)"));
    report.push_str(&format!(
        "\nPeak RSS (VmHWM): {:.1} MiB.\n\n\
         ### MQTT devices, next to {version}'s `mqtt_consumer`\n\n\
         Devices publish through Mosquitto 2 (QoS 1, `max_inflight_messages 1000`), each one\n\
         reading per message (`/v1/measurements` JSON, on `.../measurements/...` topics), the\n\
         next once the broker acknowledged the last; rows/s are rows **committed**, from the\n\
         first publish until the table holds every message the broker acknowledged. PUBACK is\n\
         the broker's answer to a device; both subscribers acknowledge to the broker only\n\
         after writing (Telegraf: `max_undelivered_messages 1000`, a persistent session).\n\n",
        peer.rss
    ));
    report.push_str(&mqtt_table(&ours.mqtt, &peer.mqtt, version));
    report.push_str(&format!(
        "\n### SIGKILL mid-load\n\n\
         HTTP: 8 senders of 1000-row batches, SIGKILL after 2 s; rows of acknowledged batches\n\
         found in the table afterwards. MQTT: 64 devices for 6 s, the subscriber killed after\n\
         2 s and started again (the same session) after 3 s; messages the broker acknowledged\n\
         to the devices found in the table afterwards.\n\n\
         | service | HTTP rows acknowledged | of those stored | lost | MQTT messages acknowledged | of those stored | lost |\n\
         |---|---|---|---|---|---|---|\n\
         | smartregion-ingest | {} | {} | {} | {} | {} | {} |\n\
         | {version} | {} | {} | {} | {} | {} | {} |\n\n",
        ours.kill.acknowledged,
        ours.kill.stored_of_acknowledged,
        lost(ours.kill.acknowledged, ours.kill.stored_of_acknowledged),
        ours.mqtt_kill.acknowledged,
        ours.mqtt_kill.stored,
        lost(ours.mqtt_kill.acknowledged, ours.mqtt_kill.stored),
        peer.kill.acknowledged,
        peer.kill.stored_of_acknowledged,
        lost(peer.kill.acknowledged, peer.kill.stored_of_acknowledged),
        peer.mqtt_kill.acknowledged,
        peer.mqtt_kill.stored,
        lost(peer.mqtt_kill.acknowledged, peer.mqtt_kill.stored),
    ));
    if let Some(notify) = notify {
        report.push_str(notify);
    }
    report.push_str(&targets(ours, peer, copy, plain));
    report.push_str(&tiers_report(limited));
    report
}

fn met(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

/// The targets of issue 26 (and the earlier ones of docs/benchmarks.md), each a ratio in
/// this run.
fn targets(ours: &Ours, peer: &Peer, copy: f64, plain: &[(usize, f64)]) -> String {
    let mut text = String::from("### Targets\n\n| target | measured | met |\n|---|---|---|\n");
    let rows = &ours.http;
    if let Some(f) = find(rows, 1, 1) {
        let ms = ms(f.p50);
        text.push_str(&format!(
            "| one sender, batch 1: p50 under 1.5 ms | {ms:.2} ms | {} |\n",
            met(ms < 1.5)
        ));
    }
    for (batch, senders, wanted) in [(1000, 1, 0.5), (1000, 8, 0.85), (100, 64, 0.8)] {
        if let Some(f) = find(rows, batch, senders) {
            let ratio = f.rows_per_second / copy;
            text.push_str(&format!(
                "| batch {batch} × {senders}: at least {wanted}× raw COPY | {ratio:.2}× | {} |\n",
                met(ratio >= wanted)
            ));
        }
    }
    for senders in [8, 64] {
        if let Some(f) = find(rows, 1, senders) {
            let ratio = f.rows_per_second / plain_for(plain, senders);
            text.push_str(&format!(
                "| batch 1 × {senders}: at least 1.5× {senders} plain connections' INSERT + COMMIT | {ratio:.2}× | {} |\n",
                met(ratio >= 1.5)
            ));
        }
    }
    for (batch, senders, theirs) in &peer.http {
        if let Some(f) = find(rows, *batch, *senders) {
            let ratio = f.rows_per_second / theirs.rows_per_second.max(1.0);
            text.push_str(&format!(
                "| batch {batch} × {senders}: at least {}'s committed rows/s | {ratio:.2}× | {} |\n",
                peer.version,
                met(ratio >= 1.0)
            ));
        }
    }
    for ((devices, mine), (_, theirs)) in ours.mqtt.iter().zip(&peer.mqtt) {
        let ratio = mine.rows_per_second / theirs.rows_per_second.max(1.0);
        text.push_str(&format!(
            "| MQTT, {devices} devices: at least {}'s committed rows/s | {ratio:.2}× | {} |\n",
            peer.version,
            met(ratio >= 1.0)
        ));
    }
    let lost = ours.mqtt_kill.acknowledged as i64 - ours.mqtt_kill.stored;
    text.push_str(&format!(
        "| MQTT, SIGKILL of the subscriber: no acknowledged message lost | {lost} lost | {} |\n",
        met(lost == 0)
    ));
    text.push('\n');
    text
}

/// What each tier promises per ingest pod against what one pod delivered in the tier's
/// container limits.
fn tiers_report(limited: &Limited) -> String {
    let tiers = smartregion_operator::surface::Tiers::default();
    let mut text = String::from(
        "### Tiers: promised rate per pod against one pod inside the container limits\n\n\
         | tier | ingestRate | replicas | per pod | single-row senders (batch 1 × 64) | batching senders (batch 100 × 8) | batch 1000 × 8 | MQTT, 64 devices |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let at =
        |batch, senders| find(&limited.http, batch, senders).map_or(0.0, |f| f.rows_per_second);
    for (name, tier) in [
        ("small", &tiers.small),
        ("medium", &tiers.medium),
        ("large", &tiers.large),
    ] {
        text.push_str(&format!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            tier.ingest_rate,
            tier.ingest_replicas,
            f64::from(tier.ingest_rate) / f64::from(tier.ingest_replicas),
            at(1, 64),
            at(100, 8),
            at(1000, 8),
            limited.mqtt.rows_per_second,
        ));
    }
    text.push('\n');
    text
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
    binary: std::path::PathBuf,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

/// What Telegraf reads.
enum TelegrafInput {
    /// `inputs.http_listener_v2` on this loopback port.
    Http(u16),
    /// `inputs.mqtt_consumer` of this broker, topics under this prefix.
    Mqtt { broker: String, prefix: String },
}

impl Telegraf {
    fn start(
        cluster: &Cluster,
        binary: &std::path::Path,
        database_url: &str,
        input: &TelegrafInput,
    ) -> Result<Telegraf> {
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
        // Both inputs read the same JSON as smartregion-ingest: sensor and metric as
        // tags, time as the timestamp, into a table named after the input.
        let json = r#"  data_format = "json"
  tag_keys = ["sensor", "metric"]
  json_time_key = "time"
  json_time_format = "2006-01-02T15:04:05Z07:00""#;
        let (name, input) = match input {
            TelegrafInput::Http(port) => (
                "http",
                format!(
                    r#"[[inputs.http_listener_v2]]
  service_address = "127.0.0.1:{port}"
  paths = ["/v1/measurements"]
  methods = ["POST"]
  name_override = "measurements"
{json}"#
                ),
            ),
            // Acknowledged once written (max_undelivered_messages in flight), on a
            // persistent session that a restart resumes.
            TelegrafInput::Mqtt { broker, prefix } => (
                "mqtt",
                format!(
                    r#"[[inputs.mqtt_consumer]]
  servers = ["{broker}"]
  topics = ["{prefix}/#"]
  qos = 1
  client_id = "telegraf-bench"
  persistent_session = true
  max_undelivered_messages = 1000
  topic_tag = ""
  name_override = "mqtt_measurements"
{json}"#
                ),
            ),
        };
        let file = cluster.state_dir.join(format!("telegraf-{name}.conf"));
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

{input}

[[outputs.postgresql]]
  connection = "{connection}"
  schema = "telegraf"
  timestamp_column_name = "time"
"#
            ),
        )?;
        let log = cluster.state_dir.join(format!("telegraf-{name}.log"));
        let child = Self::spawn(binary, &file, &log)?;
        Ok(Telegraf {
            child,
            binary: binary.to_path_buf(),
            config: file,
            log,
        })
    }

    fn spawn(
        binary: &std::path::Path,
        config: &std::path::Path,
        log: &std::path::Path,
    ) -> Result<std::process::Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Ok(Command::new(binary)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_listening(&self, port: u16) -> Result<()> {
        wait_listening("Telegraf", port, Duration::from_secs(30))
            .await
            .with_context(|| format!("Telegraf did not start; its log:\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts it again with the same configuration.
    fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.binary, &self.config, &self.log)?;
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
#[allow(clippy::too_many_arguments)] // the bench's parts, named; a struct would only rename them
async fn quantumleap(
    cluster: &Cluster,
    postgres: &PostgresServer,
    admin: &tokio_postgres::Client,
    db: &TenantDb,
    password: &str,
    pg_port: u16,
    command: &std::ffi::OsStr,
    processes: Processes,
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
        processes,
    )
    .await?;
    let ql = notify_matrix("quantumleap", &ql_url, &ql_headers, processes).await?;
    let stored: i64 = ql_db
        .query_one("SELECT count(*) FROM mtbench.etairqualityobserved", &[])
        .await?
        .get(0);
    let acknowledged: usize = ql.iter().map(|(_, _, f)| f.acknowledged).sum::<usize>() + 3;
    let _ = child.kill();
    let _ = child.wait();
    let ql_rss = "its processes' peak is not read (gunicorn workers)";
    let mut ingest = Ingest::start(cluster, ingest_env(db, password, pg_port))?;
    let base = ingest.url("");
    wait_ready(&base).await?;
    let ours = notify_matrix(
        "ingest",
        &format!("{base}/v2/notify"),
        &[("authorization".to_string(), format!("Bearer {KEY}"))],
        Processes {
            service: Some(ingest.pid()),
            ..processes
        },
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

/// The environment of an ingest pod of the bench's tenant, without MQTT.
fn ingest_env(db: &TenantDb, password: &str, pg_port: u16) -> Vec<(String, String)> {
    [
        ("SMARTREGION_TENANT", TENANT.to_string()),
        ("SMARTREGION_INGEST_API_KEYS", KEY.to_string()),
        ("SMARTREGION_INGEST_RATE", "10000000".to_string()),
        ("SMARTREGION_INGEST_RETENTION_DAYS", "3650".to_string()),
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", pg_port.to_string()),
        ("PGDATABASE", "smartregion".to_string()),
        ("PGUSER", db.writer_logins[0].clone()),
        ("PGPASSWORD", password.to_string()),
        ("SMARTREGION_LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
