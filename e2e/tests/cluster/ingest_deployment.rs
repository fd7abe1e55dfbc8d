//! The tenants' ingest pods on the real control plane: the operator's Deployment, Service,
//! PodDisruptionBudget and `ingest-keys` Secret, pods made Running and Ready by kwok, the
//! rollout on new credentials or keys, suspension, and drift.
//!
//! Pods never really run here, so one test starts the ingest binary as a host process
//! with exactly the environment the Deployment gives its container (Secret references
//! resolved from the Secrets) and sends it data: the Deployment is runnable as written.

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::{Phase, SmartRegionTenant};

/// A deleted child must be back this fast (the drift bound of the operator tests).
const DRIFT_DEADLINE: Duration = Duration::from_secs(10);
const CHECKSUM: &str = "smartregion.toscana.it/secrets-checksum";
const INGEST_PODS: &str = "app.kubernetes.io/name=ingest";

fn namespace_of(tenant: &str) -> String {
    format!("srt-{tenant}")
}

fn deployments(client: &Client, tenant: &str) -> Api<Deployment> {
    Api::namespaced(client.clone(), &namespace_of(tenant))
}

fn secrets(client: &Client, tenant: &str) -> Api<Secret> {
    Api::namespaced(client.clone(), &namespace_of(tenant))
}

/// The pod template's checksum of the Secrets.
fn checksum(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CHECKSUM)
        .cloned()
}

fn replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(-1)
}

/// The Deployment finished rolling out its current spec: every wanted pod updated and
/// available, nothing older left.
fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = replicas(deployment);
    let status = deployment.status.clone().unwrap_or_default();
    status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.available_replicas.unwrap_or(0) == wanted
        && status.replicas.unwrap_or(0) == wanted
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.clone().unwrap_or_default();
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The ingest pods that are Running and Ready and not being deleted.
async fn ready_pods(client: &Client, tenant: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_of(tenant));
    Ok(pods
        .list(&ListParams::default().labels(INGEST_PODS))
        .await?
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && pod_ready(pod))
        .collect())
}

async fn pod_count(client: &Client, tenant: &str) -> Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_of(tenant));
    Ok(pods
        .list(&ListParams::default().labels(INGEST_PODS))
        .await?
        .items
        .len())
}

/// Waits until the Deployment carries a checksum other than `before`, and returns it.
async fn wait_checksum_change(client: &Client, tenant: &str, before: &str) -> Result<String> {
    let api = deployments(client, tenant);
    wait::until(
        "the pod template's checksum to change",
        READY_TIMEOUT,
        || {
            let api = api.clone();
            async move {
                Ok(checksum(&api.get("ingest").await?).filter(|now| now.as_str() != before))
            }
        },
    )
    .await
}

/// Waits until every ingest pod is Ready and carries `checksum`, and the tenant is Ready.
async fn wait_rolled_out_to(
    client: &Client,
    tenant: &str,
    checksum: &str,
) -> Result<SmartRegionTenant> {
    let api = deployments(client, tenant);
    wait::until(
        "the ingest pods to roll onto the new checksum",
        READY_TIMEOUT,
        || {
            let api = api.clone();
            let client = client.clone();
            async move {
                let deployment = api.get("ingest").await?;
                if !rolled_out(&deployment) {
                    return Ok(None);
                }
                let pods = ready_pods(&client, tenant).await?;
                let all_new = pods.len() == replicas(&deployment) as usize
                    && pods.iter().all(|pod| {
                        pod.annotations().get(CHECKSUM).map(String::as_str) == Some(checksum)
                    });
                Ok(all_new.then_some(()))
            }
        },
    )
    .await?;
    wait_ready(client, tenant).await
}

fn ingest_ready(tenant: &SmartRegionTenant) -> Option<(String, String)> {
    condition(tenant, "IngestReady").map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn an_example_tenant_gets_ready_ingest_pods_a_service_and_its_keys() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("ingest");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    let tenant = wait_ready(&client, &name).await?;
    let namespace = namespace_of(&name);

    assert_eq!(
        ingest_ready(&tenant),
        Some(("True".into(), "Available".into()))
    );
    let status = tenant.status.clone().unwrap();
    assert_eq!(
        status.ingest_endpoint,
        Some(format!("http://ingest.{namespace}.svc:8080"))
    );

    let deployment = deployments(&client, &name).get("ingest").await?;
    assert_eq!(replicas(&deployment), 1, "the small tier runs one pod");
    assert!(rolled_out(&deployment), "IngestReady means rolled out");
    let sum = checksum(&deployment).context("no checksum annotation")?;
    ensure!(
        sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()),
        "checksum {sum:?}"
    );
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (tenant.uid().unwrap().as_str(), Some(true))
    );

    // kwok made the pod Running and Ready, after Pod Security `restricted` admitted it.
    let pods = ready_pods(&client, &name).await?;
    assert_eq!(pods.len(), 1);
    let node = pods[0].spec.as_ref().and_then(|s| s.node_name.clone());
    assert!(node.is_some_and(|n| n.starts_with("kwok-node-")));

    // The Service selects exactly those pods: its EndpointSlice lists the ready pod.
    let service = Api::<Service>::namespaced(client.clone(), &namespace)
        .get("ingest")
        .await?;
    let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 8080);
    assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let pod_ip = pods[0].status.as_ref().and_then(|s| s.pod_ip.clone());
    wait::until("the Service to list the ingest pod", READY_TIMEOUT, || {
        let slices = slices.clone();
        let pod_ip = pod_ip.clone();
        async move {
            let listed = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=ingest"))
                .await?
                .items
                .into_iter()
                .flat_map(|slice| slice.endpoints)
                .any(|endpoint| {
                    endpoint.conditions.and_then(|c| c.ready) == Some(true)
                        && pod_ip
                            .as_ref()
                            .is_some_and(|ip| endpoint.addresses.contains(ip))
                });
            Ok(listed.then_some(()))
        }
    })
    .await?;

    let keys = secret_text(&secrets(&client, &name).get("ingest-keys").await?, "keys")?;
    ensure!(
        keys.len() == 40 && keys.chars().all(|c| c.is_ascii_alphanumeric()),
        "one 40-character alphanumeric key, got {} characters",
        keys.len()
    );
    assert!(
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace)
            .get_opt("ingest")
            .await?
            .is_none(),
        "no budget for a single pod"
    );

    // The container as specified runs and stores data.
    let ingest = start_as_deployed(&client, &name, &deployment).await?;
    let http = smartregion_e2e::http::HttpClient::new();
    let post = |key: String, body: &'static str| {
        let (http, url) = (http.clone(), ingest.url("/v1/measurements"));
        async move {
            let answer = http
                .post(&url, &[("authorization", &format!("Bearer {key}"))], body)
                .await?;
            anyhow::Ok((
                answer.status,
                String::from_utf8_lossy(&answer.body).to_string(),
            ))
        }
    };
    let body = r#"[{"sensor":"prato-aq-001","metric":"no2","time":"2026-11-23T11:00:00+01:00","value":41.5}]"#;
    let (code, answer) = post(keys.clone(), body).await?;
    ensure!(
        code == 200,
        "POST with the key from ingest-keys: {code} {answer}"
    );
    let (code, _) = post("not-a-key".into(), body).await?;
    assert_eq!(code, 401, "a wrong key is refused");
    let admin = admin().await?;
    let stored: i64 = admin
        .query_one(
            &format!(
                "SELECT count(*) FROM \"t_{}\".measurements WHERE sensor = 'prato-aq-001'",
                name.replace('-', "_")
            ),
            &[],
        )
        .await?
        .get(0);
    assert_eq!(stored, 1, "the row is in the tenant's schema");
    drop(ingest);

    // An admin adds a second key to rotate: it is kept, and the pods roll to read it.
    let with_second = format!("{keys}\nsecond-key-for-rotation-0123456789abcdef");
    secrets(&client, &name)
        .patch(
            "ingest-keys",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "keys": with_second } })),
        )
        .await?;
    let rolled = wait_checksum_change(&client, &name, &sum).await?;
    wait_rolled_out_to(&client, &name, &rolled).await?;
    assert_eq!(
        secret_text(&secrets(&client, &name).get("ingest-keys").await?, "keys")?,
        with_second,
        "the operator never overwrites ingest-keys"
    );

    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn a_medium_tenant_gets_a_budget_and_suspension_scales_ingest_to_zero() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest-pdb");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("ingest-pdb");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["tier"] = json!("medium");
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let namespace = namespace_of(&name);

    assert_eq!(
        replicas(&deployments(&client, &name).get("ingest").await?),
        2
    );
    assert_eq!(ready_pods(&client, &name).await?.len(), 2);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let budget = budgets.get("ingest").await?;
    assert_eq!(
        budget.spec.as_ref().unwrap().min_available,
        Some(IntOrString::Int(1))
    );
    // The disruption controller counts the pods the budget selects: the ingest pods.
    wait::until("the budget to cover both pods", READY_TIMEOUT, || {
        let budgets = budgets.clone();
        async move {
            let status = budgets.get("ingest").await?.status.unwrap_or_default();
            Ok((status.expected_pods == 2 && status.current_healthy == 2).then_some(()))
        }
    })
    .await?;

    tenant["spec"]["suspended"] = json!(true);
    apply_tenant(&client, &tenant).await?;
    let api = tenants(&client);
    let suspended = wait::until("the tenant to be Suspended", READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let tenant = api.get(&name).await?;
            let phase = tenant.status.as_ref().and_then(|s| s.phase);
            Ok((phase == Some(Phase::Suspended)
                && tenant.status.as_ref().unwrap().observed_generation
                    == tenant.metadata.generation)
                .then_some(tenant))
        }
    })
    .await?;
    assert_eq!(
        ingest_ready(&suspended),
        Some(("True".into(), "ScaledToZero".into()))
    );
    assert_eq!(
        replicas(&deployments(&client, &name).get("ingest").await?),
        0
    );
    wait::until(
        "the ingest pods and the budget to go",
        READY_TIMEOUT,
        || {
            let client = client.clone();
            let budgets = budgets.clone();
            let name = name.clone();
            async move {
                let gone = pod_count(&client, &name).await? == 0
                    && budgets.get_opt("ingest").await?.is_none();
                Ok(gone.then_some(()))
            }
        },
    )
    .await?;

    tenant["spec"]["suspended"] = json!(false);
    apply_tenant(&client, &tenant).await?;
    wait::until("the tenant to resume with two pods", READY_TIMEOUT, || {
        let client = client.clone();
        let name = name.clone();
        async move {
            let tenant = tenants(&client).get(&name).await?;
            Ok((is_ready(&tenant) && ready_pods(&client, &name).await?.len() == 2).then_some(()))
        }
    })
    .await?;
    ensure!(
        budgets.get_opt("ingest").await?.is_some(),
        "the budget is back"
    );

    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn rotating_credentials_rolls_the_ingest_pods() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest-rotate");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("ingest-rotate");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    wait_ready(&client, &name).await?;
    let deployment = deployments(&client, &name).get("ingest").await?;
    let before = checksum(&deployment).context("no checksum")?;
    let old_pods: Vec<String> = ready_pods(&client, &name)
        .await?
        .iter()
        .map(|pod| pod.name_any())
        .collect();
    let old_password = secret_text(&secrets(&client, &name).get("db-writer").await?, "password")?;

    tenants(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                "smartregion.toscana.it/rotate-credentials": "2026-11-23" } } })),
        )
        .await?;
    let after = wait_checksum_change(&client, &name, &before).await?;
    let tenant = wait_rolled_out_to(&client, &name, &after).await?;
    let new_password = secret_text(&secrets(&client, &name).get("db-writer").await?, "password")?;
    assert_ne!(old_password, new_password, "the credentials were rotated");
    let pods = ready_pods(&client, &name).await?;
    ensure!(
        pods.iter().all(|pod| !old_pods.contains(&pod.name_any())),
        "pods from before the rotation are left: {old_pods:?}"
    );
    assert_eq!(
        ingest_ready(&tenant),
        Some(("True".into(), "Available".into()))
    );
    assert!(
        !after.contains(&new_password) && !before.contains(&old_password),
        "the checksum shows no password"
    );

    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn deleted_ingest_children_and_secrets_come_back() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("ingest-drift");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("ingest-drift");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    wait_ready(&client, &name).await?;
    let namespace = namespace_of(&name);

    let deployment_api = deployments(&client, &name);
    delete_and_wait_replaced(&deployment_api, "ingest", DRIFT_DEADLINE).await?;
    wait::until("a ready ingest pod again", READY_TIMEOUT, || {
        let client = client.clone();
        let name = name.clone();
        async move { Ok((ready_pods(&client, &name).await?.len() == 1).then_some(())) }
    })
    .await?;

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    delete_and_wait_replaced(&services, "ingest", DRIFT_DEADLINE).await?;

    // A deleted Secret is issued again, with new values, and the pods roll onto it.
    for (secret, key) in [("ingest-keys", "keys"), ("db-writer", "password")] {
        let api = secrets(&client, &name);
        let sum = checksum(&deployment_api.get("ingest").await?).context("no checksum")?;
        let old_value = secret_text(&api.get(secret).await?, key)?;
        api.delete(secret, &Default::default()).await?;
        let new_value = wait::until(
            &format!("Secret {secret} to be issued again"),
            DRIFT_DEADLINE,
            || {
                let api = api.clone();
                async move {
                    match api.get_opt(secret).await? {
                        Some(present) => Ok(Some(secret_text(&present, key)?)),
                        None => Ok(None),
                    }
                }
            },
        )
        .await?;
        assert_ne!(
            old_value, new_value,
            "{secret}: a new value, not the old one"
        );
        let rolled = wait_checksum_change(&client, &name, &sum).await?;
        wait_rolled_out_to(&client, &name, &rolled).await?;
    }

    delete_and_wait(&client, &name).await?;
    Ok(())
}

fn secret_text(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .with_context(|| format!("Secret {:?} has no key {key}", secret.metadata.name))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

async fn admin() -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&shared().database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Starts `smartregion-ingest` as a host process with the Deployment's container env,
/// Secret references resolved as the kubelet would; the harness moves only the listen
/// address to a free loopback port. Waits until /readyz answers 200 (the database is
/// reachable).
async fn start_as_deployed(
    client: &Client,
    tenant: &str,
    deployment: &Deployment,
) -> Result<smartregion_e2e::ingest::Ingest> {
    let namespace = deployment
        .metadata
        .namespace
        .clone()
        .with_context(|| format!("the ingest Deployment of {tenant} has no namespace"))?;
    // As the kubelet resolves it: Secret references, the namespace, the memory limit.
    let env = smartregion_e2e::ingest::deployment_env(client, &namespace).await?;
    ensure!(
        env.iter()
            .any(|(name, _)| name == smartregion_contract::env::LISTEN),
        "the Deployment sets the listen address"
    );
    let mut ingest = smartregion_e2e::ingest::Ingest::start(shared(), env)?;
    ingest.wait_ready(READY_TIMEOUT).await?;
    Ok(ingest)
}
