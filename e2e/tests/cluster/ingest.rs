//! The ingest service as the operator deploys it: started as a host process with exactly
//! the environment and Secret values of the tenant's `ingest` Deployment, then used as
//! sensors and FIWARE Orion use it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use smartregion_e2e::cgroup::{self, Cgroup};
use smartregion_e2e::ingest::{HttpClient, Ingest, deployment_env, near_limit_notification};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{Cluster, PostgresServer, shared, unique_name, wait};

/// A Ready tenant's ingest, running with its Deployment's environment.
struct Running {
    ingest: Ingest,
    key: String,
    schema: String,
}

async fn start_ingest(cluster: &Cluster, client: &kube::Client, tenant: &Value) -> Result<Running> {
    start_ingest_in(cluster, client, tenant, None, &[]).await
}

/// As `start_ingest`, inside `cgroup` when given, with `changes` to the Deployment's
/// environment (a value of `None` removes the variable).
async fn start_ingest_in(
    cluster: &Cluster,
    client: &kube::Client,
    tenant: &Value,
    cgroup: Option<&Cgroup>,
    changes: &[(&str, Option<&str>)],
) -> Result<Running> {
    let name = tenant["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_string();
    apply_tenant(client, tenant).await?;
    wait_ready(client, &name).await?;
    let mut env = deployment_env(client, &format!("srt-{name}")).await?;
    for (variable, value) in changes {
        env.retain(|(name, _)| name != variable);
        if let Some(value) = value {
            env.push((variable.to_string(), value.to_string()));
        }
    }
    let key = env
        .iter()
        .find(|(k, _)| k == smartregion_contract::env::API_KEYS)
        .map(|(_, v)| v.lines().next().unwrap_or_default().to_string())
        .context("the Deployment passes the API keys")?;
    let mut ingest = match cgroup {
        Some(cgroup) => Ingest::start_in(cluster, env, cgroup)?,
        None => Ingest::start(cluster, env)?,
    };
    ingest.wait_ready(Duration::from_secs(30)).await?;
    Ok(Running {
        ingest,
        key,
        schema: format!("t_{}", name.replace('-', "_")),
    })
}

async fn database(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn count(db: &tokio_postgres::Client, schema: &str, filter: &str) -> Result<i64> {
    Ok(db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".measurements WHERE {filter}"),
            &[],
        )
        .await?
        .get(0))
}

fn batch(sensor: &str, from: usize, rows: usize) -> Value {
    Value::Array(
        (from..from + rows)
            .map(|i| {
                json!({
                    "sensor": sensor,
                    "metric": "pm10",
                    "time": format!("2026-11-23T{:02}:{:02}:{:02}Z", i / 3600 % 24, i / 60 % 60, i % 60),
                    "value": i as f64 / 10.0,
                })
            })
            .collect(),
    )
}

#[tokio::test]
async fn the_three_formats_are_stored_and_every_refusal_is_explained() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("prato");
    let running = start_ingest(shared(), &client, &example("prato", &name, &shard)?).await?;
    let (ingest, schema) = (&running.ingest, &running.schema);
    let auth = format!("Bearer {}", running.key);
    let headers = [("authorization", auth.as_str())];
    let http = HttpClient::new();
    let db = database(&shared().database_url).await?;

    // Own JSON batch.
    let answer = http
        .post(
            &ingest.url("/v1/measurements"),
            &headers,
            batch("via-roma", 0, 3).to_string(),
        )
        .await?;
    ensure!(answer.status == 200, "{answer:?}");
    ensure!(answer.json()?["committed"] == 3);
    ensure!(count(&db, schema, "sensor = 'via-roma'").await? == 3);
    // The same batch again: 200, nothing new.
    let again = http
        .post(
            &ingest.url("/v1/measurements"),
            &headers,
            batch("via-roma", 0, 3).to_string(),
        )
        .await?;
    ensure!(again.status == 200, "{again:?}");
    ensure!(
        count(&db, schema, "sensor = 'via-roma'").await? == 3,
        "a resent batch stores nothing new"
    );

    // NGSI-v2 as Orion sends it (normalized), with the tenant's Fiware-Service.
    let notification = json!({
        "subscriptionId": "5f1a2b3c4d5e6f7a8b9c0d1e",
        "data": [{
            "id": "urn:ngsi-ld:AirQualityObserved:prato-01",
            "type": "AirQualityObserved",
            "NO2": {"type": "Number", "value": 41.5,
                    "metadata": {"TimeInstant": {"type": "DateTime", "value": "2026-11-23T10:00:00.000Z"}}},
            "PM10": {"type": "Number", "value": 17, "metadata": {}},
            "address": {"type": "Text", "value": "Via Roma 1, Prato"},
            "TimeInstant": {"type": "DateTime", "value": "2026-11-23T10:00:05.000Z"}
        }]
    });
    let fiware = [
        ("authorization", auth.as_str()),
        ("fiware-service", name.as_str()),
    ];
    let answer = http
        .post(&ingest.url("/v2/notify"), &fiware, notification.to_string())
        .await?;
    ensure!(answer.status == 200, "{answer:?}");
    let rows = db
        .query(
            &format!("SELECT metric, value, time::text FROM \"{schema}\".measurements WHERE sensor = 'urn:ngsi-ld:AirQualityObserved:prato-01' ORDER BY metric"),
            &[],
        )
        .await?;
    let stored: Vec<(String, f64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    ensure!(
        stored
            == [
                (
                    "NO2".to_string(),
                    41.5,
                    "2026-11-23 10:00:00+00".to_string()
                ),
                (
                    "PM10".to_string(),
                    17.0,
                    "2026-11-23 10:00:05+00".to_string()
                ),
            ],
        "NGSI attributes as rows, times from TimeInstant: {stored:?}"
    );

    // SenML (RFC 8428) with base name and base time.
    let pack = json!([
        {"bn": "urn:dev:mac:0024befffe804ff1:", "bt": 1.7958816e9, "bu": "Cel", "n": "temperature", "v": 7.5},
        {"n": "temperature", "t": 60, "v": 7.75},
        {"n": "door", "vb": true}
    ]);
    let answer = http
        .post(&ingest.url("/v1/senml"), &headers, pack.to_string())
        .await?;
    ensure!(answer.status == 200, "{answer:?}");
    ensure!(count(&db, schema, "sensor = 'urn:dev:mac:0024befffe804ff1'").await? == 3);

    // 100 items, 3 of them bad: 97 stored, the 3 explained.
    let mut items = batch("via-firenze", 0, 100);
    items[10]["time"] = json!("2026-11-23T10:00:00");
    items[50]["value"] = json!("high");
    items[90]["sensor"] = json!("");
    let answer = http
        .post(&ingest.url("/v1/measurements"), &headers, items.to_string())
        .await?;
    ensure!(answer.status == 207, "{answer:?}");
    let report = answer.json()?;
    ensure!(report["committed"] == 97, "{report}");
    let explained: BTreeSet<(u64, String)> = report["rejected"]
        .as_array()
        .context("rejected")?
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(0),
                r["field"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    ensure!(
        explained
            == BTreeSet::from([
                (10, "time".into()),
                (50, "value".into()),
                (90, "sensor".into())
            ]),
        "{explained:?}"
    );
    ensure!(count(&db, schema, "sensor = 'via-firenze'").await? == 97);

    // Refusals.
    let wrong = http
        .post(
            &ingest.url("/v1/measurements"),
            &[("authorization", "Bearer not-a-key-0123456789")],
            batch("intruder", 0, 1).to_string(),
        )
        .await?;
    ensure!(wrong.status == 401, "{wrong:?}");
    let other_service = [
        ("authorization", auth.as_str()),
        ("fiware-service", "firenze"),
    ];
    let foreign = http
        .post(
            &ingest.url("/v2/notify"),
            &other_service,
            notification.to_string(),
        )
        .await?;
    ensure!(foreign.status == 403, "{foreign:?}");
    let oversize = http
        .post(
            &ingest.url("/v1/measurements"),
            &headers,
            vec![b' '; 9 * 1024 * 1024],
        )
        .await?;
    ensure!(oversize.status == 413, "{oversize:?}");
    ensure!(count(&db, schema, "sensor = 'intruder'").await? == 0);

    // The rate quota (tier small: 500 rows/s, bursts of 1000): a second full burst at once
    // is refused with Retry-After, and nothing of it is stored.
    let mut limited = None;
    for round in 0..3 {
        let answer = http
            .post(
                &ingest.url("/v1/measurements"),
                &headers,
                batch(&format!("burst-{round}"), 0, 999).to_string(),
            )
            .await?;
        if answer.status == 429 {
            limited = Some((round, answer));
            break;
        }
        ensure!(answer.status == 200, "{answer:?}");
    }
    let (round, answer) = limited.context("no 429 after three bursts")?;
    let retry_after: u64 = answer
        .headers
        .get("retry-after")
        .context("429 without Retry-After")?
        .to_str()?
        .parse()?;
    ensure!(retry_after >= 1, "Retry-After {retry_after}");
    ensure!(count(&db, schema, &format!("sensor = 'burst-{round}'")).await? == 0);
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn sigkill_under_load_loses_no_acknowledged_row_and_stores_none_twice() -> Result<()> {
    const WORKERS: usize = 4;
    const BATCHES: usize = 40;
    const ROWS: usize = 100;
    let client = client().await?;
    let shard = unique_name("sigkill");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("sigkill");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["quotas"] = json!({ "ingestRate": 10_000_000 });
    let running = start_ingest(shared(), &client, &tenant).await?;
    let Running {
        mut ingest,
        key,
        schema,
    } = running;
    let url = ingest.url("/v1/measurements");
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));

    // Clients that retry every batch until it is acknowledged, as a gateway should.
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (url, key) = (url.clone(), key.clone());
            let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
            tokio::spawn(async move {
                let http = HttpClient::new();
                let auth = format!("Bearer {key}");
                for number in 0..BATCHES {
                    let body = batch(&format!("load-{worker}"), number * ROWS, ROWS).to_string();
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    loop {
                        match http
                            .post(&url, &[("authorization", auth.as_str())], body.clone())
                            .await
                        {
                            Ok(answer) if answer.status == 200 => break,
                            _ if std::time::Instant::now() > deadline => {
                                anyhow::bail!(
                                    "batch {number} of worker {worker} never acknowledged"
                                )
                            }
                            // Refused or the process is gone: back off a little and retry.
                            _ => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();

    // Kill it once a fair share is in, while the clients keep sending.
    wait::until(
        "a quarter of the batches to be acknowledged",
        Duration::from_secs(60),
        || {
            let acknowledged = acknowledged.clone();
            async move {
                Ok((acknowledged.load(Ordering::Relaxed) >= WORKERS * BATCHES / 4).then_some(()))
            }
        },
    )
    .await?;
    let killed_at = acknowledged.load(Ordering::Relaxed);
    ingest.kill()?;
    ingest.restart()?;
    ingest.wait_ready(Duration::from_secs(30)).await?;
    for worker in workers {
        worker.await??;
    }
    let db = database(&shared().database_url).await?;
    let total = count(&db, &schema, "sensor LIKE 'load-%'").await?;
    let distinct: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT (sensor, metric, time)) FROM \"{schema}\".measurements WHERE sensor LIKE 'load-%'"),
            &[],
        )
        .await?
        .get(0);
    eprintln!(
        "killed after {killed_at} acknowledged batches; {} retries; {total} rows stored",
        refused.load(Ordering::Relaxed)
    );
    ensure!(
        killed_at < WORKERS * BATCHES,
        "the kill happened under load"
    );
    ensure!(
        total == (WORKERS * BATCHES * ROWS) as i64,
        "every acknowledged row is there: {total} of {}",
        WORKERS * BATCHES * ROWS
    );
    ensure!(total == distinct, "no row twice");
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn a_database_outage_gives_503_and_ingest_recovers_without_a_restart() -> Result<()> {
    let client = client().await?;
    let mut postgres = PostgresServer::start_new(shared(), "ingest-outage-postgres").await?;
    let shard = unique_name("ingest-outage");
    let url = format!("--database-url={}", postgres.url());
    let _operator = Operator::start(shared(), &shard, &[&url])?;
    let name = unique_name("outage");
    let running = start_ingest(shared(), &client, &example("prato", &name, &shard)?).await?;
    let Running {
        mut ingest,
        key,
        schema,
    } = running;
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str())];
    let http = HttpClient::new();
    let endpoint = ingest.url("/v1/measurements");
    let before = http
        .post(&endpoint, &headers, batch("before", 0, 10).to_string())
        .await?;
    ensure!(before.status == 200, "{before:?}");

    postgres.stop()?;
    let during = http
        .post(&endpoint, &headers, batch("during", 0, 10).to_string())
        .await?;
    ensure!(
        during.status == 503,
        "no 2xx while the database is down: {during:?}"
    );
    ensure!(during.headers.contains_key("retry-after"));
    wait::until(
        "/readyz to report the outage",
        Duration::from_secs(10),
        || {
            let http = http.clone();
            let url = ingest.url("/readyz");
            async move { Ok((http.get(&url).await?.status == 503).then_some(())) }
        },
    )
    .await?;

    postgres.restart().await?;
    let pid = ingest.pid();
    ingest.wait_ready(Duration::from_secs(30)).await?;
    let after = wait::until("a write to succeed again", Duration::from_secs(30), || {
        let http = http.clone();
        let endpoint = endpoint.clone();
        let auth = auth.clone();
        async move {
            let answer = http
                .post(
                    &endpoint,
                    &[("authorization", auth.as_str())],
                    batch("after", 0, 10).to_string(),
                )
                .await?;
            Ok((answer.status == 200).then_some(answer))
        }
    })
    .await?;
    ensure!(after.json()?["committed"] == 10);
    ensure!(
        ingest.running() && ingest.pid() == pid,
        "no restart of ingest"
    );
    let db = database(&postgres.url()).await?;
    ensure!(count(&db, &schema, "sensor = 'before'").await? == 10);
    ensure!(
        count(&db, &schema, "sensor = 'during'").await? == 0,
        "nothing of the refused batch"
    );
    ensure!(count(&db, &schema, "sensor = 'after'").await? == 10);
    drop(db);
    delete_and_wait(&client, &name).await?;
    Ok(())
}

/// The container limits of the tenant's `ingest` Deployment.
async fn container_limits(client: &kube::Client, namespace: &str) -> Result<cgroup::Limits> {
    let deployment =
        kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), namespace)
            .get("ingest")
            .await?;
    let limits = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.containers.into_iter().next())
        .and_then(|container| container.resources)
        .and_then(|resources| resources.limits)
        .context("the ingest container has limits")?;
    let cpu = &limits.get("cpu").context("a CPU limit")?.0;
    let cpu_millis = match cpu.strip_suffix('m') {
        Some(millis) => millis.parse()?,
        None => cpu.parse::<u64>()? * 1000,
    };
    Ok(cgroup::Limits {
        memory_bytes: smartregion_e2e::workload::memory_bytes(
            &limits.get("memory").context("a memory limit")?.0,
        )?,
        cpu_millis,
    })
}

/// What killed the ingest service under its own pod limits (24 concurrent near-limit
/// bodies, OOM-killed at 256Mi) many times over: every request gets an answer the
/// sender can act on, the process is never OOM-killed, and every acknowledged row is
/// stored.
#[tokio::test]
async fn inside_its_pods_limits_near_limit_bodies_get_answers_and_nothing_is_oom_killed()
-> Result<()> {
    const SENDERS: usize = 96;
    const ENTITIES: usize = 20;
    let client = client().await?;
    let shard = unique_name("memory");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("memory");
    let tenant = example("prato", &name, &shard)?;
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let limits = container_limits(&client, &format!("srt-{name}")).await?;
    let cgroup = Cgroup::create(&name, limits)?;
    let Running {
        mut ingest,
        key,
        schema,
    } = start_ingest_in(shared(), &client, &tenant, Some(&cgroup), &[]).await?;
    let url = ingest.url("/v2/notify");
    let started = std::time::Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move {
                let body = near_limit_notification(&format!("mem-{sender}"), ENTITIES);
                let auth = format!("Bearer {key}");
                let answer = HttpClient::new()
                    .post(&url, &[("authorization", auth.as_str())], body)
                    .await
                    .with_context(|| format!("sender {sender} got no answer"))?;
                anyhow::Ok((
                    sender,
                    answer.status,
                    answer.headers.contains_key("retry-after"),
                ))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for sender in senders {
        answers.push(sender.await??);
    }
    let elapsed = started.elapsed();
    let peak = cgroup.peak_bytes()?;
    let oom_kills = cgroup.oom_kills()?;
    let mut by_status = std::collections::BTreeMap::new();
    for (_, status, _) in &answers {
        *by_status.entry(*status).or_insert(0) += 1;
    }
    eprintln!(
        "{SENDERS} near-limit bodies in {elapsed:?} under {} MiB / {}m: answers {by_status:?}, \
         peak {:.1} MiB, OOM kills {oom_kills}, CPU throttled {} times",
        limits.memory_bytes >> 20,
        limits.cpu_millis,
        peak as f64 / (1 << 20) as f64,
        cgroup.throttled()?,
    );
    ensure!(
        oom_kills == 0,
        "the kernel OOM-killed in the ingest's cgroup"
    );
    ensure!(
        ingest.running(),
        "the ingest process died:\n{}",
        ingest.logs()
    );
    ensure!(
        peak < limits.memory_bytes,
        "peak {peak} reached the limit {}",
        limits.memory_bytes
    );
    for (sender, status, retry_after) in &answers {
        ensure!(
            matches!(status, 200..=299 | 429 | 503),
            "sender {sender}: {status}, not an answer a sender retries or is done with"
        );
        if matches!(status, 429 | 503) {
            ensure!(
                *retry_after,
                "sender {sender}: {status} without Retry-After"
            );
        }
    }
    let acknowledged = answers
        .iter()
        .filter(|(_, status, _)| (200..300).contains(status))
        .count();
    ensure!(
        acknowledged > 0,
        "some bodies were committed: {by_status:?}"
    );
    let db = database(&shared().database_url).await?;
    for (sender, status, _) in &answers {
        let stored = count(&db, &schema, &format!("sensor LIKE 'mem-{sender}-%'")).await?;
        let expected = if (200..300).contains(status) {
            ENTITIES as i64
        } else {
            0
        };
        ensure!(
            stored == expected,
            "sender {sender} ({status}): {stored} rows stored, {expected} expected"
        );
    }
    ingest.kill()?;
    drop(ingest);
    cgroup.remove()?;
    delete_and_wait(&client, &name).await?;
    Ok(())
}

/// `(index, field, reason)` of each rejected item of a write's report.
fn rejected(report: &Value) -> Vec<(u64, String, String)> {
    report["rejected"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    (
                        item["index"].as_u64().unwrap_or(u64::MAX),
                        item["field"].as_str().unwrap_or_default().to_string(),
                        item["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The SenML record: `t: -2.3e11`, about 5300 BC, before anything PostgreSQL
/// can store.
fn ancient_senml(device: &str) -> Value {
    json!([{"bn": format!("{device}:"), "n": "pm10", "v": 1, "t": -2.3e11}])
}

#[tokio::test]
async fn times_outside_the_window_and_data_postgresql_refuses_harm_no_other_request() -> Result<()>
{
    let client = client().await?;
    let shard = unique_name("ingest-window");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("window");
    let tenant = example("prato", &name, &shard)?;
    let running = start_ingest(shared(), &client, &tenant).await?;
    let (ingest, schema) = (&running.ingest, &running.schema);
    let auth = format!("Bearer {}", running.key);
    let headers = [("authorization", auth.as_str())];
    let http = HttpClient::new();
    let db = database(&shared().database_url).await?;
    let now = jiff::Timestamp::now().to_string();

    // The Deployment's window: each item outside it is refused with its index and reason,
    // its neighbours stored.
    let body = json!([
        {"sensor": "window", "metric": "pm10", "value": 1, "time": now},
        {"sensor": "window", "metric": "pm10", "value": 2, "time": "2100-01-01T00:00:00Z"},
        {"sensor": "window", "metric": "pm10", "value": 3, "time": "0001-01-01T00:00:00Z"},
    ]);
    let answer = http
        .post(&ingest.url("/v1/measurements"), &headers, body.to_string())
        .await?;
    ensure!(answer.status == 207, "{answer:?}");
    let report = answer.json()?;
    ensure!(report["committed"] == 1, "{report}");
    let refused = rejected(&report);
    ensure!(
        refused.len() == 2
            && refused[0].0 == 1
            && refused[0].1 == "time"
            && refused[0].2.contains("ahead of the time of receipt")
            && refused[1].0 == 2
            && refused[1].2.contains("retention horizon"),
        "{report}"
    );
    let answer = http
        .post(
            &ingest.url("/v1/senml"),
            &headers,
            ancient_senml("ancient").to_string(),
        )
        .await?;
    ensure!(answer.status == 400, "no item valid: {answer:?}");
    ensure!(rejected(&answer.json()?)[0].1 == "t", "{answer:?}");
    ensure!(count(&db, schema, "sensor = 'window'").await? == 1);
    ensure!(count(&db, schema, "sensor = 'ancient'").await? == 0);

    // Without the retention horizon the same record reaches PostgreSQL, which refuses it
    // (SQLSTATE 22008): only its own request fails, whatever commit it shares. 50 senders
    // each send 6 valid single-row requests and 2 such records, all at once.
    let unbounded = start_ingest_in(
        shared(),
        &client,
        &tenant,
        None,
        &[(smartregion_contract::env::RETENTION_DAYS, None)],
    )
    .await?;
    let measurements = unbounded.ingest.url("/v1/measurements");
    let senml = unbounded.ingest.url("/v1/senml");
    let mut senders = Vec::new();
    for sender in 0..50 {
        let (http, auth, now) = (http.clone(), auth.clone(), now.clone());
        let (measurements, senml) = (measurements.clone(), senml.clone());
        senders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for request in 0..8 {
                let headers = [("authorization", auth.as_str())];
                let answer = if request % 4 == 3 {
                    let body = ancient_senml(&format!("bad-{sender}-{request}"));
                    http.post(&senml, &headers, body.to_string()).await?
                } else {
                    let body = json!([{"sensor": format!("valid-{sender}-{request}"),
                        "metric": "pm10", "value": request, "time": now}]);
                    http.post(&measurements, &headers, body.to_string()).await?
                };
                answers.push((request % 4 == 3, answer));
            }
            anyhow::Ok(answers)
        }));
    }
    let mut refused_ids = Vec::new();
    for sender in senders {
        for (bad, answer) in sender.await?? {
            if !bad {
                ensure!(answer.status == 200, "a valid request failed: {answer:?}");
                continue;
            }
            ensure!(answer.status == 422, "{answer:?}");
            let body = answer.json()?;
            let message = body["error"].as_str().unwrap_or_default();
            ensure!(
                message.starts_with("the database refused the data of this request")
                    && !message.contains("out of range"),
                "a stable message, PostgreSQL's words only in the log: {body}"
            );
            let id = body["id"].as_str().unwrap_or_default().to_string();
            ensure!(
                answer
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    == Some(&id),
                "{answer:?}"
            );
            refused_ids.push(id);
        }
    }
    ensure!(refused_ids.len() == 100);
    ensure!(count(&db, schema, "sensor LIKE 'valid-%'").await? == 300);
    ensure!(count(&db, schema, "sensor LIKE 'bad-%'").await? == 0);
    let logs = unbounded.ingest.logs();
    let logged = logs
        .lines()
        .find(|line| line.contains(&refused_ids[0]))
        .with_context(|| format!("no log line names {}", refused_ids[0]))?;
    ensure!(
        logged.contains("out of range"),
        "the log has PostgreSQL's reason: {logged}"
    );
    drop(unbounded);
    drop(running);
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn a_privilege_error_is_403_only_when_the_writer_is_seen_to_lack_insert() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest-refusal");
    let operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("refusal");
    let running = start_ingest(shared(), &client, &example("prato", &name, &shard)?).await?;
    // The operator would put the privileges back; this test takes them away by hand.
    drop(operator);
    let (ingest, schema) = (&running.ingest, &running.schema);
    let writer = format!("\"{schema}_writer\"");
    let auth = format!("Bearer {}", running.key);
    let http = HttpClient::new();
    let db = database(&shared().database_url).await?;
    let post = |sensor: &'static str| {
        let (http, auth, url) = (http.clone(), auth.clone(), ingest.url("/v1/measurements"));
        async move {
            http.post(
                &url,
                &[("authorization", auth.as_str())],
                batch(sensor, 0, 5).to_string(),
            )
            .await
        }
    };

    // "permission denied for schema": not how a suspension or the quota is enforced, so
    // transient: 503 with Retry-After, and PostgreSQL's words only in the log.
    db.batch_execute(&format!(
        "REVOKE USAGE ON SCHEMA \"{schema}\" FROM {writer}"
    ))
    .await?;
    let answer = post("no-usage").await?;
    ensure!(answer.status == 503, "{answer:?}");
    ensure!(answer.headers.contains_key("retry-after"), "{answer:?}");
    let body = answer.json()?;
    ensure!(
        !body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("permission"),
        "{body}"
    );
    let id = body["id"].as_str().context("a correlation id")?;
    ensure!(
        ingest
            .logs()
            .lines()
            .any(|line| line.contains(id) && line.contains("permission denied for schema")),
        "the log has the detail under {id}"
    );
    db.batch_execute(&format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {writer}"))
        .await?;

    // INSERT revoked, as the operator does for a suspension or the storage quota: 403.
    db.batch_execute(&format!(
        "REVOKE INSERT ON \"{schema}\".measurements, \"{schema}\".sensors FROM {writer}"
    ))
    .await?;
    let answer = post("no-insert").await?;
    ensure!(answer.status == 403, "{answer:?}");
    ensure!(
        answer.json()?["error"]
            .as_str()
            .unwrap_or_default()
            .contains("over its database storage quota or suspended"),
        "{answer:?}"
    );
    db.batch_execute(&format!(
        "GRANT INSERT ON \"{schema}\".measurements, \"{schema}\".sensors TO {writer}"
    ))
    .await?;
    let answer = post("granted").await?;
    ensure!(answer.status == 200, "{answer:?}");
    ensure!(count(&db, schema, "sensor IN ('no-usage', 'no-insert')").await? == 0);
    ensure!(count(&db, schema, "sensor = 'granted'").await? == 5);
    drop(running);
    let _operator = Operator::start(shared(), &shard, &[])?;
    delete_and_wait(&client, &name).await?;
    Ok(())
}

/// Opens a connection to `port` and sends `head`, a request's first bytes.
async fn connect_and_send(port: u16, head: &str) -> Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(head.as_bytes()).await?;
    Ok(stream)
}

/// What the server sent on `stream` until it closed it (within `deadline`).
async fn read_until_closed(
    mut stream: tokio::net::TcpStream,
    deadline: Duration,
) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(deadline, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
    .context("the server kept a slow connection open past its deadline")?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn slow_senders_are_cut_off_and_other_senders_are_still_served() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest-slow");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("slow");
    // Short deadlines and a small cap and budget, so the test runs in seconds: 20
    // declared 8 MB bodies would need 160 MB if reserved on their word.
    let running = start_ingest_in(
        shared(),
        &client,
        &example("prato", &name, &shard)?,
        None,
        &[
            ("SMARTREGION_INGEST_MAX_CONNECTIONS", Some("16")),
            ("SMARTREGION_INGEST_HEADER_TIMEOUT_SECONDS", Some("2")),
            ("SMARTREGION_INGEST_BODY_GRACE_SECONDS", Some("2")),
            ("SMARTREGION_INGEST_MEMORY_BUDGET", Some("25165824")),
        ],
    )
    .await?;
    let (ingest, schema) = (&running.ingest, &running.schema);
    let auth = format!("Bearer {}", running.key);

    // 20 senders declare 8 MB and send one byte; 20 unauthenticated ones trickle their
    // headers a byte at a time.
    let mut slow_bodies = Vec::new();
    for _ in 0..20 {
        let head = format!(
            "POST /v1/measurements HTTP/1.1\r\nhost: ingest\r\nauthorization: {auth}\r\n\
             content-type: application/json\r\ncontent-length: 8000000\r\n\r\n["
        );
        slow_bodies.push(connect_and_send(ingest.port, &head).await?);
    }
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        let stream = connect_and_send(ingest.port, "POST /v1/measurements HTTP/1.1\r\n").await?;
        tricklers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream;
            // A header line that never ends, at one byte every half second.
            for byte in "x-slow: ".bytes().cycle().take(120) {
                if stream.write_all(&[byte]).await.is_err() {
                    return anyhow::Ok(true);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(false)
        }));
    }

    // Meanwhile a sensor gets every request through.
    let http = HttpClient::new();
    for request in 0..20 {
        let answer = http
            .post(
                &ingest.url("/v1/measurements"),
                &[("authorization", auth.as_str())],
                batch("steady", request * 10, 10).to_string(),
            )
            .await?;
        ensure!(answer.status == 200, "request {request}: {answer:?}");
    }
    let db = database(&shared().database_url).await?;
    ensure!(count(&db, schema, "sensor = 'steady'").await? == 200);

    // Each slow body was answered 408 and its connection closed; each trickler was cut
    // off long before its header could end (a minute).
    for stream in slow_bodies {
        let answer = read_until_closed(stream, Duration::from_secs(30)).await?;
        ensure!(
            answer.starts_with("HTTP/1.1 408"),
            "a stalled body gets 408: {answer:?}"
        );
    }
    for trickler in tricklers {
        ensure!(
            tokio::time::timeout(Duration::from_secs(30), trickler)
                .await
                .context("a trickler was never cut off")???,
            "a trickler sent its whole header line"
        );
    }
    drop(running);
    delete_and_wait(&client, &name).await?;
    Ok(())
}
