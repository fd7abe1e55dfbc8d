//! The real node: what the operator creates runs as containers, and the kernel and the
//! network say what the object shapes promised. Ingest pods start from the locally built
//! image, pass their probes, take data from a client pod through the Service name in
//! `status.ingestEndpoint` and store it; inside, they run as 65532 on a read-only root
//! filesystem under the cgroup limits the Deployment names; rotation and suspension act on
//! real pods; NetworkPolicies hold by traffic; and no pod packet leaves for an address
//! outside the node's allowed set.

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use smartregion_e2e::node::{CANARY_ADDRESS, CANARY_NETNS, HOST_ADDRESS, NETNS, NODE_NAME};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::pods::{self, CLIENT_PORT, ClientPod, Outcome};
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::SmartRegionTenant;

const INGEST_PODS: &str = "app.kubernetes.io/name=ingest";

fn namespace_of(tenant: &str) -> String {
    format!("srt-{tenant}")
}

fn database_port() -> Result<u16> {
    let url = &shared().database_url;
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .context("no port in the database URL")?;
    Ok(port.parse()?)
}

/// An operator for `shard` whose tenants' ingest pods run on the real node.
fn real_node_operator(shard: &str) -> Result<Operator> {
    let flags = pods::real_node_operator_flags(database_port()?);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Operator::start(shared(), shard, &flags)
}

/// A tenant of `shard` made from examples/prato.yaml, Ready with real pods.
async fn real_tenant(client: &Client, shard: &str, prefix: &str) -> Result<String> {
    let name = unique_name(prefix);
    apply_tenant(client, &example("prato", &name, shard)?).await?;
    wait_ready(client, &name)
        .await
        .with_context(|| format!("tenant {name} with real ingest pods"))?;
    Ok(name)
}

async fn ingest_pods(client: &Client, tenant: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_of(tenant));
    Ok(pods
        .list(&ListParams::default().labels(INGEST_PODS))
        .await?
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect())
}

fn secret_text(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .with_context(|| format!("Secret {:?} has no key {key}", secret.metadata.name))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

async fn api_key(client: &Client, tenant: &str) -> Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace_of(tenant));
    let keys = secret_text(&secrets.get("ingest-keys").await?, "keys")?;
    keys.lines()
        .next()
        .map(str::to_string)
        .context("ingest-keys holds no key")
}

async fn admin() -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&shared().database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn rows_of(tenant: &str, sensor: &str) -> Result<i64> {
    Ok(admin()
        .await?
        .query_one(
            &format!(
                "SELECT count(*) FROM \"t_{}\".measurements WHERE sensor = $1",
                tenant.replace('-', "_")
            ),
            &[&sensor],
        )
        .await?
        .get(0))
}

/// Posts one measurement of `sensor` from a probe pod in the tenant's namespace to the
/// endpoint in its status.
async fn post_from_pod(
    client: &Client,
    tenant: &SmartRegionTenant,
    sensor: &str,
) -> Result<Outcome> {
    let endpoint = tenant
        .status
        .as_ref()
        .and_then(|status| status.ingest_endpoint.clone())
        .context("no status.ingestEndpoint")?;
    post_to(client, tenant, &endpoint, sensor).await
}

/// Posts one measurement of `sensor` to `endpoint` from a probe pod in the tenant's
/// namespace, with the tenant's API key.
async fn post_to(
    client: &Client,
    tenant: &SmartRegionTenant,
    endpoint: &str,
    sensor: &str,
) -> Result<Outcome> {
    let name = name_of(tenant);
    let key = api_key(client, &name).await?;
    let body = json!([{ "sensor": sensor, "metric": "pm10", "time": "2026-12-01T10:00:00Z", "value": 17.5 }])
        .to_string();
    let url = format!("{endpoint}/v1/measurements");
    let auth = format!("Authorization: Bearer {key}");
    pods::run_probe(
        client,
        &namespace_of(&name),
        &[
            "post",
            &url,
            "--header",
            &auth,
            "--body",
            &body,
            "--attempts",
            "20",
        ],
    )
    .await
}

#[tokio::test]
async fn ingest_pods_run_for_real_and_a_client_pod_writes_through_the_service_name() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("real-ingest");
    let _operator = real_node_operator(&shard)?;
    let name = real_tenant(&client, &shard, "real-ingest").await?;
    let tenant = tenants(&client).get(&name).await?;

    let running = ingest_pods(&client, &name).await?;
    ensure!(!running.is_empty(), "no ingest pod");
    for pod in &running {
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
        assert_eq!(
            node.as_deref(),
            Some(NODE_NAME),
            "{} runs on the real node",
            pod.name_any()
        );
    }

    let outcome = post_from_pod(&client, &tenant, "real-node-aq-001").await?;
    ensure!(
        outcome.succeeded,
        "the client pod's POST: {}",
        outcome.message
    );
    assert_eq!(
        rows_of(&name, "real-node-aq-001").await?,
        1,
        "the row is in the tenant's schema"
    );

    // The read pod runs for real beside them, Ready: its readiness check is a query of
    // the database with the reader's login, through the namespace's egress policy.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_of(&name));
    let read = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=read"))
        .await?
        .items;
    ensure!(read.len() == 1, "{} read pods", read.len());
    let read = &read[0];
    ensure!(
        read.spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            == Some(NODE_NAME),
        "the read pod runs on the real node"
    );
    let read_ready = read
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|ready| ready.status == "True");
    ensure!(read_ready, "the read pod is Ready");
    let read_pid = pods::container_pid(&pods::container_id(read, "read")?)?;
    ensure!(
        pods::process_uid(read_pid)? == 65532,
        "the read process is not root"
    );
    ensure!(
        pods::write_into_root(read_pid).is_err(),
        "the read pod's root filesystem took a write"
    );

    // The kernel's view of the running container.
    let pod = &running[0];
    let id = pods::container_id(pod, "ingest")?;
    let pid = pods::container_pid(&id)?;
    assert_eq!(
        pods::process_uid(pid)?,
        65532,
        "the ingest process is not root"
    );
    let refused = pods::write_into_root(pid).expect_err("the root filesystem took a write");
    assert_eq!(
        refused.raw_os_error(),
        Some(nix::libc::EROFS),
        "the root filesystem is mounted read-only: {refused}"
    );
    let container = pod
        .spec
        .as_ref()
        .map(|spec| spec.containers[0].clone())
        .context("no container")?;
    let limits = container
        .resources
        .and_then(|resources| resources.limits)
        .context("no limits")?;
    let memory = smartregion_operator::surface::whole_units(&limits["memory"].0)
        .context("a memory limit that is not a quantity")?;
    let cgroup_memory: u64 = std::fs::read_to_string(
        pods::container_cgroup("memory", &id)?.join("memory.limit_in_bytes"),
    )?
    .trim()
    .parse()?;
    assert_eq!(
        cgroup_memory as i128, memory,
        "the memory limit is the kernel's"
    );
    // In thousandths of a CPU: millicores.
    let cpu = smartregion_operator::surface::parse_quantity(&limits["cpu"].0)
        .context("a CPU limit that is not a quantity")?;
    let cpu_dir = pods::container_cgroup("cpu", &id)?;
    let quota: i64 = std::fs::read_to_string(cpu_dir.join("cpu.cfs_quota_us"))?
        .trim()
        .parse()?;
    let period: i64 = std::fs::read_to_string(cpu_dir.join("cpu.cfs_period_us"))?
        .trim()
        .parse()?;
    assert_eq!(
        quota * 1000 / period,
        cpu as i64,
        "the CPU limit is the kernel's"
    );

    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn rotation_replaces_real_pods_that_write_with_the_new_password_and_suspension_stops_them()
-> Result<()> {
    let client = client().await?;
    let shard = unique_name("real-rotate");
    let _operator = real_node_operator(&shard)?;
    let name = real_tenant(&client, &shard, "real-rotate").await?;
    let before: Vec<String> = ingest_pods(&client, &name)
        .await?
        .iter()
        .map(|pod| pod.uid().unwrap_or_default())
        .collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace_of(&name));
    let old_password = secret_text(&secrets.get("db-writer").await?, "password")?;

    tenants(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                "smartregion.toscana.it/rotate-credentials": "2026-12-01" } } })),
        )
        .await?;
    // Only new pods, all Ready (their readiness probe checks the database); that they
    // write with the new credentials is checked below, and that the old login stops
    // working once the roll-out is over in
    // `a_rotation_under_continuous_load_through_the_service_fails_no_write`.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace_of(&name));
    wait::until(
        "the rotation to replace every ingest pod with a Ready one",
        Duration::from_secs(120),
        || {
            let (client, name, before, deployments) = (
                client.clone(),
                name.clone(),
                before.clone(),
                deployments.clone(),
            );
            async move {
                let pods = ingest_pods(&client, &name).await?;
                let deployment = deployments.get("ingest").await?;
                let wanted = deployment.spec.and_then(|spec| spec.replicas).unwrap_or(1);
                let fresh = pods.len() == wanted as usize
                    && pods.iter().all(|pod| {
                        !before.contains(&pod.uid().unwrap_or_default()) && is_pod_ready(pod)
                    });
                Ok(fresh.then_some(()))
            }
        },
    )
    .await?;
    let new_password = secret_text(&secrets.get("db-writer").await?, "password")?;
    ensure!(old_password != new_password, "the password was rotated");
    // Each new pod, addressed directly (while the Service's endpoints catch up, a request
    // may still reach a pod on its way out, which is a matter for the rollout itself),
    // writes with the new password.
    let tenant = tenants(&client).get(&name).await?;
    for (index, pod) in ingest_pods(&client, &name).await?.iter().enumerate() {
        let ip = pod
            .status
            .as_ref()
            .and_then(|status| status.pod_ip.clone())
            .context("a new pod without an IP")?;
        let sensor = format!("rotated-aq-{index}");
        let outcome = post_to(&client, &tenant, &format!("http://{ip}:8080"), &sensor).await?;
        ensure!(
            outcome.succeeded,
            "a write to new pod {ip}: {}",
            outcome.message
        );
        assert_eq!(rows_of(&name, &sensor).await?, 1);
    }

    // Suspended: no container runs; resumed: they run and take data again.
    tenants(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "suspended": true } })),
        )
        .await?;
    wait::until(
        "suspension to stop every ingest pod",
        Duration::from_secs(60),
        || {
            let (client, name) = (client.clone(), name.clone());
            async move { Ok(ingest_pods(&client, &name).await?.is_empty().then_some(())) }
        },
    )
    .await?;
    tenants(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "suspended": false } })),
        )
        .await?;
    let tenant = wait_ready(&client, &name).await?;
    let outcome = post_from_pod(&client, &tenant, "resumed-aq-001").await?;
    ensure!(
        outcome.succeeded,
        "a write after resuming: {}",
        outcome.message
    );
    assert_eq!(rows_of(&name, "resumed-aq-001").await?, 1);

    delete_and_wait(&client, &name).await?;
    Ok(())
}

/// Logs in to the tenants' database as `user` with `password`, from the host.
async fn login_as(
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = shared()
        .database_url
        .parse()
        .expect("the harness's database URL parses");
    config.user(user).password(password);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The number after `key=` in the probe's load report.
fn reported(line: &str, key: &str) -> Result<u64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .with_context(|| format!("no {key} in {line:?}"))?
        .parse()
        .with_context(|| format!("{key} in {line:?}"))
}

/// Issue #15: senders keep posting through the tenant's Service, from a client pod, while
/// the credentials rotate and every ingest pod is replaced. No request fails (no non-2xx,
/// no transport error), every acknowledged row is stored, and the login the old pods used
/// can no longer log in afterwards.
#[tokio::test]
async fn a_rotation_under_continuous_load_through_the_service_fails_no_write() -> Result<()> {
    const LOAD_SECONDS: u64 = 60;
    let client = client().await?;
    let shard = unique_name("real-rotate-load");
    let _operator = real_node_operator(&shard)?;
    let name = unique_name("real-rotate-load");
    let mut manifest = example("prato", &name, &shard)?;
    // Two pods, so the roll-out replaces one while the other serves.
    manifest["spec"]["ingest"] = json!({ "replicas": 2 });
    // Only the rotation may fail a request here, not the tier's rate quota (429).
    manifest["spec"]["quotas"] = json!({ "ingestRate": 1_000_000 });
    apply_tenant(&client, &manifest).await?;
    let tenant = wait_ready(&client, &name)
        .await
        .with_context(|| format!("tenant {name} with two real ingest pods"))?;
    let namespace = namespace_of(&name);
    let endpoint = tenant
        .status
        .as_ref()
        .and_then(|status| status.ingest_endpoint.clone())
        .context("no status.ingestEndpoint")?;
    let url = format!("{endpoint}/v1/measurements");
    let auth = format!("Authorization: Bearer {}", api_key(&client, &name).await?);
    let sender = ClientPod::start(
        &client,
        &namespace,
        "sender",
        json!({ "app.kubernetes.io/name": "probe" }),
        true,
    )
    .await?;
    // The Service's name resolves and reaches a pod before the load starts.
    let body = json!([{ "sensor": "warm-up", "metric": "pm10", "time": "2026-12-01T10:00:00Z", "value": 1.0 }])
        .to_string();
    let warm = sender
        .probe(&[
            "post",
            &url,
            "--header",
            &auth,
            "--body",
            &body,
            "--attempts",
            "30",
        ])
        .await?;
    ensure!(warm.succeeded, "the warm-up POST: {}", warm.message);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let before = secrets.get("db-writer").await?;
    let (old_user, old_password) = (
        secret_text(&before, "user")?,
        secret_text(&before, "password")?,
    );
    let old_pods: Vec<String> = ingest_pods(&client, &name)
        .await?
        .iter()
        .map(|pod| pod.uid().unwrap_or_default())
        .collect();
    ensure!(old_pods.len() == 2, "two ingest pods before: {old_pods:?}");
    for pod in ingest_pods(&client, &name).await? {
        let spec = pod.spec.context("a pod without a spec")?;
        let sleep = spec.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
            .and_then(|pre_stop| pre_stop.sleep.as_ref())
            .map(|sleep| sleep.seconds);
        ensure!(
            sleep == Some(5) && spec.termination_grace_period_seconds == Some(35),
            "the API server kept the preStop sleep and the grace period: {sleep:?}, {:?}",
            spec.termination_grace_period_seconds
        );
    }

    let sensor = "rotation-load-001";
    let seconds = LOAD_SECONDS.to_string();
    let load = {
        let (sender, url, auth, seconds) = (&sender, url.clone(), auth.clone(), seconds.clone());
        async move {
            sender
                .probe(&[
                    "load",
                    &url,
                    "--header",
                    &auth,
                    "--sensor",
                    sensor,
                    "--for",
                    &seconds,
                    "--concurrency",
                    "4",
                ])
                .await
        }
    };
    let roll_out = async {
        let name = &name;
        let load_started = std::time::Instant::now();
        // The old pods are busy when the rotation starts.
        wait::until(
            "the load to store its first rows",
            Duration::from_secs(30),
            || {
                let name = name.clone();
                async move { Ok((rows_of(&name, sensor).await? >= 50).then_some(())) }
            },
        )
        .await?;
        tenants(&client)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": {
                    "smartregion.toscana.it/rotate-credentials": "2026-12-01-load" } } })),
            )
            .await?;
        let rotated = std::time::Instant::now();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        // The roll-out's timeline, printed as it changes.
        let seen = std::sync::Mutex::new(String::new());
        let seen = &seen;
        wait::until(
            "every old ingest pod gone (terminating ones too), the new ones Ready, and the old login retired",
            Duration::from_secs(LOAD_SECONDS - 10),
            || {
                let (pods, deployments, secrets, old_pods, old_user) = (
                    pods.clone(),
                    deployments.clone(),
                    secrets.clone(),
                    old_pods.clone(),
                    old_user.clone(),
                );
                async move {
                    let all = pods.list(&ListParams::default().labels(INGEST_PODS)).await?.items;
                    let now: Vec<String> = all
                        .iter()
                        .map(|pod| {
                            format!(
                                "{}{}{}{}",
                                pod.name_any(),
                                if old_pods.contains(&pod.uid().unwrap_or_default()) { "(old)" } else { "" },
                                if pod.metadata.deletion_timestamp.is_some() { " terminating" } else { "" },
                                if is_pod_ready(pod) { " ready" } else { "" },
                            )
                        })
                        .collect();
                    let now = now.join(", ");
                    {
                        let mut last = seen.lock().expect("not poisoned");
                        if *last != now {
                            eprintln!("{:>6.1?} pods: {now}", rotated.elapsed());
                            *last = now;
                        }
                    }
                    let wanted = deployments
                        .get("ingest")
                        .await?
                        .spec
                        .and_then(|spec| spec.replicas)
                        .unwrap_or(0);
                    let replaced = all.len() == wanted as usize
                        && all.iter().all(|pod| {
                            !old_pods.contains(&pod.uid().unwrap_or_default())
                                && pod.metadata.deletion_timestamp.is_none()
                                && is_pod_ready(pod)
                        });
                    let writer = secrets.get("db-writer").await?;
                    let retired = secret_text(&writer, "user")? != old_user
                        && writer
                            .annotations()
                            .get("smartregion.toscana.it/retiring-logins")
                            .is_some_and(|value| value.is_empty());
                    let can_login: bool = admin()
                        .await?
                        .query_one("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", &[&old_user])
                        .await?
                        .get(0);
                    Ok((replaced && retired && !can_login).then_some(()))
                }
            },
        )
        .await?;
        let done = std::time::Instant::now();
        ensure!(
            done.duration_since(load_started) < Duration::from_secs(LOAD_SECONDS),
            "the roll-out ended after the load did"
        );
        anyhow::Ok((
            done.duration_since(rotated),
            done.duration_since(load_started),
        ))
    };
    let (load, roll_out) = tokio::join!(load, roll_out);
    let (roll_out_time, into_load) = roll_out?;
    let load = load?;
    eprintln!(
        "rotation under load: roll-out and retirement took {roll_out_time:?} (done {into_load:?} into a {LOAD_SECONDS} s load); {}",
        load.message
    );
    ensure!(
        load.succeeded,
        "every request during the rotation was answered 2xx: {}",
        load.message
    );
    let sent = reported(&load.message, "sent")?;
    let acknowledged = reported(&load.message, "acknowledged")?;
    assert_eq!(reported(&load.message, "transport_errors")?, 0);
    assert_eq!(acknowledged, sent, "{}", load.message);
    ensure!(sent > 100, "a continuous load: {}", load.message);
    assert_eq!(
        rows_of(&name, sensor).await? as u64,
        acknowledged,
        "every acknowledged row is in the database"
    );

    // The old login is gone for good; the new one works.
    let after = secrets.get("db-writer").await?;
    let (new_user, new_password) = (
        secret_text(&after, "user")?,
        secret_text(&after, "password")?,
    );
    ensure!(
        new_user != old_user && new_password != old_password,
        "a new login"
    );
    let refused = login_as(&old_user, &old_password)
        .await
        .err()
        .context("the old login still logs in")?;
    // No password (28P01), and no LOGIN behind it (28000) either.
    ensure!(
        [
            tokio_postgres::error::SqlState::INVALID_PASSWORD,
            tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        ]
        .iter()
        .any(|code| refused.code() == Some(code)),
        "the old login is refused for its credentials: {refused}"
    );
    login_as(&new_user, &new_password)
        .await
        .context("the new login logs in")?;
    // Role names only: no credential reached the tenant's status.
    let status = serde_json::to_string(&tenants(&client).get(&name).await?.status)?;
    for secret in [&old_password, &new_password] {
        ensure!(
            !status.contains(secret.as_str()),
            "a password in the status"
        );
    }

    sender.delete().await?;
    delete_and_wait(&client, &name).await?;
    Ok(())
}

fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

async fn connect(client: &Client, namespace: &str, target: &str) -> Result<Outcome> {
    pods::run_probe(
        client,
        namespace,
        &["connect", target, "--timeout-ms", "2000"],
    )
    .await
}

#[tokio::test]
async fn network_policies_hold_by_traffic() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("real-netpol");
    let _operator = real_node_operator(&shard)?;
    let (first, second) = futures::try_join!(
        real_tenant(&client, &shard, "real-netpol-a"),
        real_tenant(&client, &shard, "real-netpol-b"),
    )?;
    let (a, b) = (namespace_of(&first), namespace_of(&second));
    // A platform namespace without policies, as a gateway's would be.
    let platform = unique_name("platform");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": platform, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted" } } }))?,
        )
        .await?;

    // One long-running probe pod per namespace (each also listens on its port), and
    // a second one in B.
    let (in_a, in_b, other_in_b, in_platform) = futures::try_join!(
        ClientPod::start(&client, &a, "client", json!({ "app": "client" }), true),
        ClientPod::start(&client, &b, "client", json!({ "app": "client" }), true),
        ClientPod::start(&client, &b, "listener", json!({ "app": "listener" }), true),
        ClientPod::start(
            &client,
            &platform,
            "client",
            json!({ "app": "client" }),
            false
        ),
    )?;
    let ingest_ip = ingest_pods(&client, &second)
        .await?
        .first()
        .and_then(|pod| pod.status.as_ref()?.pod_ip.clone())
        .context("tenant B's ingest pod has no IP")?;
    let ingest = format!("{ingest_ip}:8080");
    let listener = format!("{}:{CLIENT_PORT}", other_in_b.ip);
    let database = format!("{HOST_ADDRESS}:{}", database_port()?);
    let apiserver = format!("{HOST_ADDRESS}:{}", shared().apiserver_port);

    let checks: Vec<(&str, &ClientPod, String, bool)> = vec![
        // Inside a tenant: its own pods, its ingest port.
        ("B to its own listener", &in_b, listener.clone(), true),
        ("B to its own ingest port", &in_b, ingest.clone(), true),
        // Another tenant: nothing at all (its egress stays in its namespace, B's ingress too).
        ("A to B's listener", &in_a, listener.clone(), false),
        ("A to B's ingest port", &in_a, ingest.clone(), false),
        // The platform: B's ingest port only.
        (
            "platform to B's ingest port",
            &in_platform,
            ingest.clone(),
            true,
        ),
        (
            "platform to B's listener",
            &in_platform,
            listener.clone(),
            false,
        ),
        // Egress: the database, and not the API server (neither directly nor by Service).
        ("A to the database", &in_a, database.clone(), true),
        ("A to the API server", &in_a, apiserver.clone(), false),
        (
            "A to the kubernetes Service",
            &in_a,
            "10.96.0.1:443".into(),
            false,
        ),
        (
            "platform to the API server",
            &in_platform,
            apiserver.clone(),
            true,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, from, target, open) in &checks {
        let outcome = from.connect(target).await?;
        if outcome.succeeded != *open {
            wrong.push(format!(
                "{what} ({target}): expected {}, {}",
                if *open { "open" } else { "refused" },
                outcome.message
            ));
        }
    }
    // DNS is allowed: Service names resolve from a tenant's pods.
    let resolved = in_a
        .probe(&["resolve", &format!("ingest.{b}.svc.cluster.local")])
        .await?;
    if !resolved.succeeded {
        wrong.push(format!("DNS from A: {}", resolved.message));
    }
    ensure!(
        wrong.is_empty(),
        "NetworkPolicies did not hold:\n  {}",
        wrong.join("\n  ")
    );

    let _ = namespaces.delete(&platform, &DeleteParams::default()).await;
    delete_all_and_wait(&client, &[first, second]).await?;
    Ok(())
}

/// The node's drop rule's packet count.
fn dropped_packets() -> Result<u64> {
    let output = std::process::Command::new("ip")
        .args([
            "netns", "exec", NETNS, "iptables", "-w", "-t", "mangle", "-L",
        ])
        .arg(smartregion_e2e::node::POD_EGRESS_CHAIN)
        .args(["-v", "-x", "-n"])
        .output()?;
    ensure!(output.status.success(), "iptables -L failed");
    let text = String::from_utf8(output.stdout)?;
    text.lines()
        .find(|line| line.contains("DROP"))
        .and_then(|line| line.split_whitespace().next())
        .context("no DROP rule in the chain")?
        .parse()
        .context("a packet count that is not a number")
}

#[tokio::test]
async fn no_pod_packet_reaches_an_address_outside_the_allowed_set() -> Result<()> {
    let client = client().await?;
    // The canary listens in its own namespace, which the node routes to.
    let probe = smartregion_e2e::paths::workspace_root()
        .join(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("release/smartregion-probe");
    ensure!(
        probe.is_file(),
        "{} not built (e2e/images builds it)",
        probe.display()
    );
    let log = shared().state_dir.join("canary.log");
    let mut canary = std::process::Command::new("ip")
        .args(["netns", "exec", CANARY_NETNS])
        .arg(&probe)
        .args(["serve", "--port", "9999", "--message-file", "/dev/null"])
        .stdout(std::fs::File::create(&log)?)
        .spawn()?;
    let target = format!("{CANARY_ADDRESS}:9999");
    // Control: the node itself reaches the canary, so the route is there and only the rule
    // can stop a pod.
    let reached = wait::until(
        "the node to reach the canary",
        Duration::from_secs(10),
        || {
            let (probe, target) = (probe.clone(), target.clone());
            async move {
                let output = std::process::Command::new("ip")
                    .args(["netns", "exec", NETNS])
                    .arg(&probe)
                    .args(["connect", &target, "--message-file", "/dev/null"])
                    .output()?;
                Ok(output.status.success().then_some(()))
            }
        },
    )
    .await;

    // A namespace without NetworkPolicies: only the node's rule stands in the way.
    let namespace = unique_name("egress");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted" } } }))?,
        )
        .await?;
    let dropped_before = dropped_packets()?;
    let outcome = connect(&client, &namespace, &target).await;
    let dropped_after = dropped_packets()?;
    let _ = canary.kill();
    let _ = canary.wait();
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;

    reached?;
    let outcome = outcome?;
    ensure!(
        !outcome.succeeded,
        "a pod reached the canary: {}",
        outcome.message
    );
    let heard = std::fs::read_to_string(&log)?;
    ensure!(
        !heard.contains("connection from 10.244."),
        "the canary heard from a pod:\n{heard}"
    );
    ensure!(
        dropped_after > dropped_before,
        "the node's rule dropped nothing ({dropped_before} -> {dropped_after}): something else refused"
    );
    Ok(())
}

/// The chart's values for an operator release on the real node with the locally built
/// images, for the tenants of `shard`.
fn chart_values(shard: &str, port: u16) -> serde_json::Value {
    let real_node = smartregion_e2e::node::REAL_NODE_KEY;
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "image": {
            "repository": "smartregion.local/smartregion-operator",
            "tag": version,
            "pullPolicy": "Never",
        },
        "replicaCount": 2,
        "nodeSelector": { real_node: "true" },
        "tolerations": [{ "key": real_node, "operator": "Exists", "effect": "NoSchedule" }],
        "tenantSelector": format!("{}={shard}", smartregion_e2e::operator::SHARD_LABEL),
        "database": {
            "existingSecret": "smartregion-db",
            "sslmode": "verify-full",
            "caSecret": "smartregion-db-ca",
            "publicHost": HOST_ADDRESS.to_string(),
            "address": HOST_ADDRESS.to_string(),
            "port": port,
        },
        "ingest": {
            "image": {
                "repository": "smartregion.local/smartregion-ingest",
                "tag": version,
                "pullPolicy": "Never",
            },
            "nodeSelector": { real_node: "true" },
            "tolerations": [format!("{real_node}:NoSchedule")],
        },
    })
}

fn lease_holder(lease: &k8s_openapi::api::coordination::v1::Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test]
async fn the_chart_runs_two_operator_pods_on_the_real_node_and_a_killed_leader_hands_over()
-> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = shared();
    let client = client().await?;
    let namespace = unique_name("sr-chart");
    let shard = unique_name("real-chart");
    let port = database_port()?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } }))?,
        )
        .await?;
    // As a cluster operator would: the admin login (to the database's address on the
    // node's link) and its CA as Secrets.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let url = cluster
        .operator_database_url
        .replace("@127.0.0.1:", &format!("@{HOST_ADDRESS}:"));
    for (name, key, value) in [
        ("smartregion-db", "url", url),
        (
            "smartregion-db-ca",
            "ca.crt",
            std::fs::read_to_string(&cluster.ca_cert)?,
        ),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": { "name": name }, "stringData": { key: value } }))?,
            )
            .await?;
    }
    let values = cluster.state_dir.join(format!("{namespace}-values.json"));
    std::fs::write(&values, serde_json::to_vec(&chart_values(&shard, port))?)?;
    let chart = smartregion_e2e::helm::chart();
    let kubeconfig = cluster.kubeconfig.display().to_string();
    // A release of its own: its cluster-wide objects are named after it.
    let release = namespace.clone();
    let fullname = format!("{release}-smartregion-operator");
    smartregion_e2e::helm::run(&[
        "install",
        &release,
        chart.to_str().context("non-UTF-8 path")?,
        "--namespace",
        &namespace,
        "--kubeconfig",
        &kubeconfig,
        "--values",
        values.to_str().context("non-UTF-8 path")?,
        "--wait",
        "--timeout",
        "3m",
    ])?;

    // Two real pods with the chart's ServiceAccount, one of them the leader.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let running = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=smartregion-operator"))
        .await?
        .items;
    ensure!(running.len() == 2, "{} operator pods, not 2", running.len());
    for pod in &running {
        let spec = pod.spec.as_ref().context("a pod without spec")?;
        assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some(fullname.as_str())
        );
        ensure!(
            is_pod_ready(pod),
            "operator pod {} is not Ready",
            pod.name_any()
        );
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let leader = wait::until(
        "a leader Lease held by one of the pods",
        Duration::from_secs(60),
        || {
            let (leases, running, fullname) = (leases.clone(), running.clone(), fullname.clone());
            async move {
                let holder = leases
                    .get_opt(&fullname)
                    .await?
                    .as_ref()
                    .and_then(lease_holder);
                Ok(holder.and_then(|holder| {
                    running
                        .iter()
                        .find(|pod| holder.starts_with(&format!("{}-", pod.name_any())))
                        .cloned()
                }))
            }
        },
    )
    .await?;

    // The chart's operator onboards a tenant, with real ingest pods.
    let first = real_tenant(&client, &shard, "real-chart").await?;

    // The leader pod killed (deleted without grace): the other pod, or the replacement,
    // holds the Lease within the lease time (15 s) and a retry period.
    pods.delete(&leader.name_any(), &DeleteParams::default().grace_period(0))
        .await?;
    let killed = leader.name_any();
    let new_leader = wait::until(
        "the other operator pod to take the Lease",
        Duration::from_secs(15 + 2 * 5 + 5),
        || {
            let (leases, killed, fullname) = (leases.clone(), killed.clone(), fullname.clone());
            async move {
                let holder = leases
                    .get(&fullname)
                    .await?
                    .spec
                    .and_then(|s| s.holder_identity);
                Ok(holder.filter(|holder| !holder.starts_with(&format!("{killed}-"))))
            }
        },
    )
    .await?;
    // The other pod, or the Deployment's replacement for the killed one.
    let live: Vec<String> = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=smartregion-operator"))
        .await?
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| pod.name_any())
        .collect();
    ensure!(
        live.iter()
            .any(|pod| pod != &killed && new_leader.starts_with(&format!("{pod}-"))),
        "the Lease went to {new_leader}, not to a live operator pod ({live:?})"
    );
    // The new leader reconciles: a second tenant gets Ready.
    let second = real_tenant(&client, &shard, "real-chart").await?;

    delete_all_and_wait(&client, &[first, second]).await?;
    smartregion_e2e::helm::run(&[
        "uninstall",
        &release,
        "--namespace",
        &namespace,
        "--kubeconfig",
        &kubeconfig,
        "--wait",
    ])?;
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    Ok(())
}
