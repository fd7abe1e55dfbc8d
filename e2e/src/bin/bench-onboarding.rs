//! Benchmark: onboarding 200 tenants with the operator, against a reference measured in
//! the same run on the same cluster, and the operator's idle cost and memory.
//!
//! References: the same child objects applied directly by this program (server-side
//! apply, same concurrency as the operator), i.e. what the API server itself allows; and
//! the same database schemas, roles and partitions provisioned directly through the
//! operator's own database functions, i.e. what PostgreSQL itself allows.
//! Then every tenant shares with five others (1 000 shares): the time until they are all
//! Ready and the idle cost, next to the same figures without shares measured before; and
//! reading a shared view against reading one's own table, for the same rows, in one run.
//! Prints the figures and writes them to docs/benchmarks.md. Run with `e2e/bench`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use smartregion_e2e::apiserver::{delta, operator_events_since, operator_writes, reconciles};
use smartregion_e2e::operator::{Operator, SHARD_LABEL};
use smartregion_e2e::{Cluster, apply, paths, unique_name, wait};
use smartregion_operator::crd::{SmartRegionShare, SmartRegionTenant};
use smartregion_operator::surface::Config;
use smartregion_operator::surface::TenantName;
use smartregion_operator::surface::children as build;

const TENANTS: usize = 200;
const CONCURRENCY: usize = 8;
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// The operator's periodic requeue: every tenant is re-checked about twice in the idle
/// window. Shorter (10 s) asks 20 reconciles a second of 200 tenants, more than the
/// operator does on this machine (about 12 at concurrency 8): the queue never empties,
/// and kube-runtime's scheduler then serves the same tenants first, so some wait for
/// minutes (seen with the shares, whose status writes trigger more reconciles).
const REQUEUE_SECONDS: u64 = 30;
/// Shares per tenant, each with the next tenants in the list.
const SHARES_PER_TENANT: usize = 5;
/// Rows of the shared metric, and as many of another, written for the read comparison.
const READ_ROWS: i64 = 200_000;
/// Alternating runs of each read; the median is reported.
const READ_RUNS: usize = 15;

fn tenant(name: &str, shard: &str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(paths::workspace_root().join("examples/prato.yaml"))?;
    let mut tenant: serde_json::Value = serde_yaml::from_str(&text)?;
    tenant["metadata"]["name"] = serde_json::json!(name);
    tenant["metadata"]["labels"] = serde_json::json!({ SHARD_LABEL: shard });
    Ok(tenant)
}

/// Applies the children the operator would build for `count` tenants, directly.
async fn reference(client: &Client, count: usize) -> Result<(Duration, Vec<String>)> {
    let config = Config {
        namespace_prefix: "ref-".into(),
        ..Config::default()
    };
    let mut namespaces = Vec::new();
    let mut work = Vec::new();
    for _ in 0..count {
        let name = unique_name("ref");
        let mut object: SmartRegionTenant = serde_json::from_value(tenant(&name, "reference")?)?;
        object.metadata.uid = Some(format!("00000000-0000-0000-0000-{:012}", namespaces.len()));
        let validated = build::validate(&object, &config)?;
        let facts = build::Facts {
            inputs: None,
            credentials: None,
        };
        // Every child as the operator builds it, then the ingest part it writes once the
        // database part is done (its database Secrets are in the database reference).
        let mut objects: Vec<serde_json::Value> = build::children(&validated, &config, &facts)
            .desired
            .iter()
            .map(|desired| desired.child.to_value())
            .collect();
        objects.push(serde_json::to_value(build::ingest_keys_secret(
            &validated,
            "reference-key",
        ))?);
        objects.push(serde_json::to_value(build::ingest_deployment(
            &validated,
            &config,
            "reference",
        ))?);
        namespaces.push(validated.namespace.clone());
        work.push(objects);
    }
    let started = Instant::now();
    futures::stream::iter(work)
        .map(|objects| {
            let client = client.clone();
            async move {
                for mut object in objects {
                    // No owner: the fake tenant does not exist, and the GC would remove
                    // the children.
                    object["metadata"]
                        .as_object_mut()
                        .context("metadata")?
                        .remove("ownerReferences");
                    let object: kube::api::DynamicObject = serde_json::from_value(object)?;
                    smartregion_e2e::apply::apply(&client, &object).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    // Like the operator's Ready, which waits for the ingest rollout (kwok's pods).
    let deployments: Api<Deployment> = Api::all(client.clone());
    wait::until(
        "the reference Deployments to be available",
        Duration::from_secs(600),
        || {
            let deployments = deployments.clone();
            async move {
                let list = deployments.list(&Default::default()).await?;
                let available = list
                    .items
                    .iter()
                    .filter(|d| {
                        d.metadata
                            .namespace
                            .as_deref()
                            .is_some_and(|ns| ns.starts_with("ref-"))
                    })
                    .filter(|d| {
                        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        d.status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0)
                            >= wanted
                    })
                    .count();
                Ok((available == count).then_some(()))
            }
        },
    )
    .await?;
    Ok((started.elapsed(), namespaces))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Provisions the database part of `count` tenants directly, `CONCURRENCY` at a time,
/// then drops it again. Returns the time the provisioning took.
async fn database_reference(cluster: &Cluster, count: usize) -> Result<Duration> {
    use smartregion_operator::surface::provisioning as provision;
    use smartregion_operator::surface::provisioning::TenantDb;
    let config = Config::default();
    let mut work = Vec::new();
    for index in 0..count {
        let name = unique_name("dbref");
        let mut object: SmartRegionTenant = serde_json::from_value(tenant(&name, "reference")?)?;
        object.metadata.uid = Some(format!("00000000-0000-0000-0000-{index:012}"));
        let validated = build::validate(&object, &config)?;
        work.push((
            TenantDb::for_tenant(&TenantName::parse(&name)?),
            smartregion_operator::surface::provisioning::desired(
                &validated,
                smartregion_operator::surface::provisioning::Layout::Partitions,
                None,
            ),
            validated.limits,
        ));
    }
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        clients.push(connect(&cluster.operator_database_url).await?);
    }
    let (password_writer, password_reader) = (
        smartregion_operator::surface::provisioning::new_password(),
        smartregion_operator::surface::provisioning::new_password(),
    );
    let started = Instant::now();
    let chunks: Vec<Vec<_>> = work
        .chunks(count.div_ceil(CONCURRENCY))
        .map(<[_]>::to_vec)
        .collect();
    let provisioned = futures::future::try_join_all(clients.iter_mut().zip(chunks.clone()).map(
        |(client, chunk)| {
            let passwords = provision::Passwords {
                writer: &password_writer,
                reader: &password_reader,
            };
            async move {
                for (db, desired, limits) in &chunk {
                    provision::ensure_schema_exists(
                        client,
                        db,
                        &provision::Provisioning {
                            desired,
                            table: None,
                            logins: &provision::WriterLogins::first(db),
                            passwords: provision::Passwords {
                                writer: passwords.writer,
                                reader: passwords.reader,
                            },
                            credentials: provision::Credentials::Keep,
                            writes: provision::Writes::Allowed,
                        },
                    )
                    .await?;
                    provision::ensure_partitions(
                        client,
                        db,
                        k8s_openapi::jiff::Timestamp::now(),
                        limits.chunk_interval_hours,
                        limits.retention_days,
                    )
                    .await?;
                }
                anyhow::Ok(())
            }
        },
    ))
    .await;
    let elapsed = started.elapsed();
    provisioned?;
    for (client, chunk) in clients.iter_mut().zip(chunks) {
        for (db, _, _) in &chunk {
            provision::ensure_schema_absent(client, db, None).await?;
        }
    }
    Ok(elapsed)
}

/// Rows inserted, updated or deleted in tenant schemas so far, and committed
/// transactions in the database (reads included: every statement outside a transaction
/// block counts as one). Catalog changes are left out: autovacuum's analyze of the
/// catalogs after 200 new schemas is PostgreSQL's own work, not the operator's.
async fn database_activity(client: &tokio_postgres::Client) -> Result<(i64, i64)> {
    // Statistics are a snapshot per transaction; start from a fresh one.
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let rows: i64 = client
        .query_one(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint \
             FROM pg_stat_user_tables WHERE schemaname LIKE 't\\_%'",
            &[],
        )
        .await?
        .get(0);
    let commits: i64 = client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?
        .get(0);
    Ok((rows, commits))
}

#[tokio::main]
async fn main() -> Result<()> {
    smartregion_e2e::bench::on_fresh_cluster("e2e-bench-cluster", |cluster| async move {
        run(&cluster).await
    })
    .await
}

async fn run(cluster: &Cluster) -> Result<()> {
    let client = cluster.client().await?;
    apply::install_crds(&client).await?;

    eprintln!("bench: reference: applying the children of {TENANTS} tenants directly");
    let (reference_time, reference_namespaces) = reference(&client, TENANTS).await?;
    eprintln!(
        "bench: reference took {:.1}s; cleaning up",
        reference_time.as_secs_f64()
    );
    eprintln!("bench: reference: provisioning the database part of {TENANTS} tenants directly");
    let database_reference_time = database_reference(cluster, TENANTS).await?;
    eprintln!(
        "bench: database reference took {:.1}s",
        database_reference_time.as_secs_f64()
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for namespace in &reference_namespaces {
        namespaces
            .delete(namespace, &DeleteParams::background())
            .await?;
    }
    // The controller-manager's namespace deletions write to the same kinds the operator
    // does; they must be over before anything is measured.
    wait::until(
        "the reference namespaces to be gone",
        Duration::from_secs(600),
        || {
            let namespaces = namespaces.clone();
            async move {
                let list = namespaces.list_metadata(&Default::default()).await?;
                let left = list
                    .items
                    .iter()
                    .filter(|ns| {
                        ns.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("ref-"))
                    })
                    .count();
                Ok((left == 0).then_some(()))
            }
        },
    )
    .await?;

    let shard = "bench";
    let operator = Operator::start(
        cluster,
        shard,
        &[
            &format!("--concurrency={CONCURRENCY}"),
            &format!("--requeue-seconds={REQUEUE_SECONDS}"),
        ],
    )?;
    let tenants: Api<SmartRegionTenant> = Api::all(client.clone());
    let names: Vec<String> = (0..TENANTS).map(|_| unique_name("bench")).collect();
    eprintln!("bench: operator: onboarding {TENANTS} tenants");
    let started = Instant::now();
    for name in &names {
        tenants
            .patch(
                name,
                &PatchParams::apply("bench"),
                &Patch::Apply(tenant(name, shard)?),
            )
            .await?;
    }
    wait::until(
        &format!("{TENANTS} tenants to be Ready"),
        Duration::from_secs(900),
        || {
            let tenants = tenants.clone();
            async move {
                let list = tenants.list(&Default::default()).await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|t| {
                        t.status
                            .as_ref()
                            .and_then(|s| s.phase)
                            .is_some_and(|p| p == smartregion_operator::crd::Phase::Ready)
                    })
                    .count();
                Ok((ready >= TENANTS).then_some(()))
            }
        },
    )
    .await?;
    let operator_time = started.elapsed();
    eprintln!("bench: operator took {:.1}s", operator_time.as_secs_f64());

    let idle = idle_cost(cluster, &client, &operator).await?;

    eprintln!("bench: {SHARES_PER_TENANT} shares per tenant");
    let started = Instant::now();
    let shares = share_all(&client, &names).await?;
    let shares_time = started.elapsed();
    eprintln!(
        "bench: {shares} shares Ready in {:.1}s",
        shares_time.as_secs_f64()
    );
    let idle_shared = idle_cost(cluster, &client, &operator).await?;
    let reads = read_comparison(cluster, &names[0], &names[1]).await?;
    let rss = smartregion_e2e::bench::peak_rss_mib(operator.pid())?;

    let report = format!(
        "## Operator: onboarding {TENANTS} tenants\n\n\
         Measured by `e2e/bench` (`cargo run --release -p smartregion-e2e --bin bench-onboarding`) \
         on a fresh local control plane, release build, concurrency {CONCURRENCY}.\n\n\
         | measurement | value |\n|---|---|\n\
         | reference: the same children applied directly (server-side apply, {CONCURRENCY} at a time), until the ingest Deployments are available | {:.1} s |\n\
         | reference: the same schemas, roles, tables and partitions provisioned directly ({CONCURRENCY} connections) | {:.1} s |\n\
         | reference: both, one after the other | {:.1} s |\n\
         | operator: {TENANTS} tenants from created to Ready (namespace, children, database, Secrets, ingest rollout) | {:.1} s |\n\
         | ratio operator / both references | {:.2} |\n\
         | Kubernetes write requests in a {}s idle window afterwards ({} reconciles) | {} |\n\
         | rows changed in tenant schemas in that window ({} database transactions, reads included) | {} |\n\
         | then {} shares ({SHARES_PER_TENANT} per tenant, each with other tenants), from created to all Ready and listed in their consumers' status | {:.1} s |\n\
         | with the shares: Kubernetes write requests in a {}s idle window ({} reconciles) | {} |\n\
         | with the shares: rows changed in tenant schemas, share views or grants rewritten in that window ({} database transactions, reads included) | {} |\n\
         | operator peak RSS (VmHWM) | {:.1} MiB |\n\n\
         Reading the same {} rows (one metric of a provider that has as many of another), \
         median of {READ_RUNS} alternating runs of `SELECT count(*), avg(value)`, each reader's role \
         taken with `SET ROLE` on a session of the platform's superuser (the same privilege \
         checks and plan as its login, without TLS in the timing):\n\n\
         | read | median |\n|---|---|\n\
         | the provider's reader, its own table, `WHERE metric = ...` | {:.1} ms |\n\
         | a consumer's reader, the share's view (the same rows) | {:.1} ms |\n\
         | ratio view / own table | {:.2} |\n",
        reference_time.as_secs_f64(),
        database_reference_time.as_secs_f64(),
        (reference_time + database_reference_time).as_secs_f64(),
        operator_time.as_secs_f64(),
        operator_time.as_secs_f64() / (reference_time + database_reference_time).as_secs_f64(),
        IDLE_WINDOW.as_secs(),
        idle.reconciles,
        idle.writes,
        idle.commits,
        idle.rows,
        shares,
        shares_time.as_secs_f64(),
        IDLE_WINDOW.as_secs(),
        idle_shared.reconciles,
        idle_shared.writes,
        idle_shared.commits,
        idle_shared.rows + idle_shared.catalog_rewrites,
        rss,
        READ_ROWS,
        reads.own.as_secs_f64() * 1000.0,
        reads.shared.as_secs_f64() * 1000.0,
        reads.shared.as_secs_f64() / reads.own.as_secs_f64(),
    );
    println!("{report}");
    smartregion_e2e::bench::write_section(
        &format!("## Operator: onboarding {TENANTS} tenants"),
        &report,
    )?;
    Ok(())
}

/// What an idle window costs.
struct Idle {
    reconciles: f64,
    /// Kubernetes write requests and Events.
    writes: f64,
    /// Database transactions, reads included.
    commits: i64,
    /// Rows changed in tenant schemas.
    rows: i64,
    /// Share schemas, views or grants whose catalog rows were rewritten.
    catalog_rewrites: i64,
}

/// Nothing changes, but with a 30 s requeue every tenant is re-checked about twice in the
/// window; the API server counts what those re-checks write, PostgreSQL what they
/// change.
async fn idle_cost(cluster: &Cluster, client: &Client, operator: &Operator) -> Result<Idle> {
    // PostgreSQL 15 sessions report their statistics up to 10 s after their last
    // transaction: let the last changes arrive before the window opens.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let window_start = k8s_openapi::jiff::Timestamp::now();
    let before = operator_writes(client).await?;
    let reconciles_before = reconciles(&operator.metrics().await?);
    let admin = connect(&cluster.database_url).await?;
    let catalog_before = share_catalog(&admin).await?;
    let (rows_before, commits_before) = database_activity(&admin).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let (rows_after, commits_after) = database_activity(&admin).await?;
    let catalog_after = share_catalog(&admin).await?;
    let idle_delta = delta(&before, &operator_writes(client).await?);
    let idle_events = operator_events_since(client, window_start).await?;
    eprintln!("bench: idle writes {idle_delta:?}, Events {idle_events:?}");
    let catalog_rewrites = catalog_after
        .iter()
        .filter(|row| !catalog_before.contains(row))
        .count();
    Ok(Idle {
        reconciles: reconciles(&operator.metrics().await?) - reconciles_before,
        writes: idle_delta.values().sum::<f64>() + idle_events.len() as f64,
        commits: commits_after - commits_before,
        rows: rows_after - rows_before,
        catalog_rewrites: catalog_rewrites as i64,
    })
}

/// The catalog rows of every share schema and what is in it, with the transaction that
/// last wrote each (`xmin`) and its grants: a rewrite, even to the same content, shows.
async fn share_catalog(admin: &tokio_postgres::Client) -> Result<Vec<String>> {
    Ok(admin
        .query(
            "SELECT n.nspname || ' ' || n.xmin::text || ' ' || coalesce(n.nspacl::text, '') \
             FROM pg_namespace n WHERE n.nspname LIKE 's\\_%' \
             UNION ALL \
             SELECT c.oid::text || ' ' || c.xmin::text || ' ' || coalesce(c.relacl::text, '') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname LIKE 's\\_%'",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Each tenant shares one metric with each of the next `SHARES_PER_TENANT` tenants, as
/// its admins would; returns how many shares, once all are Ready.
async fn share_all(client: &Client, names: &[String]) -> Result<usize> {
    let mut count = 0;
    for (index, provider) in names.iter().enumerate() {
        let shares: Api<SmartRegionShare> =
            Api::namespaced(client.clone(), &format!("srt-{provider}"));
        for k in 1..=SHARES_PER_TENANT {
            let name = format!("to-{k}");
            let share = serde_json::json!({
                "apiVersion": "smartregion.toscana.it/v1alpha1",
                "kind": "SmartRegionShare",
                "metadata": { "name": name },
                "spec": {
                    "consumers": [names[(index + k) % names.len()]],
                    "metrics": [format!("m{k}")],
                },
            });
            shares
                .patch(&name, &PatchParams::apply("bench"), &Patch::Apply(share))
                .await?;
            count += 1;
        }
    }
    let all: Api<SmartRegionShare> = Api::all(client.clone());
    let tenants: Api<SmartRegionTenant> = Api::all(client.clone());
    // Both sides: every share Ready (the provider's), and every consumer's status listing
    // the shares it reads (the consumer's own reconcile), so the idle window after it
    // measures a settled platform, not the last consumers catching up.
    wait::until(
        &format!("{count} shares to be Ready, and listed by their consumers"),
        Duration::from_secs(900),
        || {
            let (all, tenants) = (all.clone(), tenants.clone());
            async move {
                let ready = all
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .filter(|share| {
                        share.status.as_ref().is_some_and(|status| {
                            status
                                .conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                    })
                    .count();
                let listed: usize = tenants
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .filter(|tenant| names.contains(&tenant.name_any()))
                    .map(|tenant| {
                        tenant
                            .status
                            .as_ref()
                            .map_or(0, |status| status.shared_with_me.len())
                    })
                    .sum();
                Ok((ready >= count && listed >= count).then_some(()))
            }
        },
    )
    .await?;
    Ok(count)
}

/// Medians of reading the same rows as the provider's reader from its own table and as
/// a consumer's reader through the share's view.
struct Reads {
    own: Duration,
    shared: Duration,
}

/// `provider` shares metric `m1` with `consumer` (`to-1`, from [`share_all`]).
async fn read_comparison(cluster: &Cluster, provider: &str, consumer: &str) -> Result<Reads> {
    use smartregion_operator::surface::provisioning::{TenantDb, quote};
    let (provider_db, consumer_db) = (
        TenantDb::for_tenant(&TenantName::parse(provider)?),
        TenantDb::for_tenant(&TenantName::parse(consumer)?),
    );
    let admin = connect(&cluster.database_url).await?;
    let table = format!("{}.measurements", quote(&provider_db.schema));
    admin
        .execute(
            &format!(
                "INSERT INTO {table} (sensor, metric, time, value) \
                 SELECT 'sensor-' || (i % 50), m, now() - make_interval(secs => i), i \
                 FROM generate_series(1, $1::bigint) AS i, unnest(ARRAY['m1', 'other']) AS m"
            ),
            &[&READ_ROWS],
        )
        .await?;
    admin.batch_execute(&format!("ANALYZE {table}")).await?;
    let own_query = format!("SELECT count(*), avg(value) FROM {table} WHERE metric = 'm1'");
    let view = format!("s_{}.to_1", &provider_db.schema[2..]);
    let shared_query = format!("SELECT count(*), avg(value) FROM {view}");
    let (own_reader, consumer_reader) = (
        connect(&cluster.database_url).await?,
        connect(&cluster.database_url).await?,
    );
    own_reader
        .batch_execute(&format!("SET ROLE {}", quote(&provider_db.reader)))
        .await?;
    consumer_reader
        .batch_execute(&format!("SET ROLE {}", quote(&consumer_db.reader)))
        .await?;
    let (mut own, mut shared) = (Vec::new(), Vec::new());
    for _ in 0..READ_RUNS {
        for (reader, query, times) in [
            (&own_reader, &own_query, &mut own),
            (&consumer_reader, &shared_query, &mut shared),
        ] {
            let started = Instant::now();
            let row = reader.query_one(query.as_str(), &[]).await?;
            times.push(started.elapsed());
            let rows: i64 = row.get(0);
            anyhow::ensure!(
                rows == READ_ROWS,
                "{query} read {rows} rows, not {READ_ROWS}"
            );
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    Ok(Reads {
        own: median(&mut own),
        shared: median(&mut shared),
    })
}
