//! The local control plane is a real one: CRD validation by the API server, scheduling by
//! kube-scheduler onto kwok Nodes, namespace deletion and garbage collection by
//! kube-controller-manager.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, ObjectMeta};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use smartregion_e2e::{Cluster, apply, paths, shared, unique_name, wait};
use smartregion_operator::crd::SmartRegionTenant;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn client() -> Result<Client> {
    let client = shared().client().await?;
    apply::install_crds(&client).await?;
    Ok(client)
}

fn tenants(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::erase::<SmartRegionTenant>(&()),
    )
}

/// The Prato example with another name.
fn example(name: &str) -> Result<Value> {
    let text = std::fs::read_to_string(paths::workspace_root().join("examples/prato.yaml"))?;
    let mut tenant: Value = serde_yaml::from_str(&text)?;
    tenant["metadata"]["name"] = json!(name);
    Ok(tenant)
}

async fn create(client: &Client, tenant: &Value) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(tenant.clone()).expect("valid object");
    tenants(client)
        .create(&PostParams::default(), &object)
        .await
}

/// The API server's message when it refused `result` as invalid (422).
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Result<String> {
    match result {
        Err(kube::Error::Api(response)) if response.code == 422 => Ok(response.message),
        other => bail!("expected the API server to refuse it as invalid (422), got {other:?}"),
    }
}

#[tokio::test]
async fn running_the_cluster_up_again_changes_nothing() -> Result<()> {
    let before = shared().clone();
    let state_before = std::fs::read_to_string(before.state_dir.join("state.json"))?;
    let again = Cluster::up(&before.state_dir, before.engine).await?;
    let state_after = std::fs::read_to_string(again.state_dir.join("state.json"))?;
    assert_eq!(
        state_before, state_after,
        "a second `up` must reuse the running cluster"
    );
    assert_eq!(before.kubeconfig, again.kubeconfig);
    Ok(())
}

#[tokio::test]
async fn a_second_cluster_is_refused_and_leaves_no_snapshot_of_the_first_ones_machine() -> Result<()>
{
    let running = shared().clone();
    let other = running
        .state_dir
        .with_file_name(unique_name("second-cluster"));
    let refused = Cluster::up(&other, running.engine).await;
    let message = match refused {
        Ok(_) => bail!(
            "a second cluster started while {} runs the real node",
            running.state_dir.display()
        ),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        message.contains("runs this machine's real node"),
        "the refusal says why: {message}"
    );
    // What the machine looks like while the first cluster's kubelet has changed its
    // settings is no "before": nothing a later `down` could compare against is left.
    assert!(
        !other.join("node/machine-before.json").exists(),
        "a refused start left a snapshot of the machine"
    );
    Cluster::down(&other)?;
    assert!(
        !other.exists(),
        "down removes the refused cluster's directory"
    );
    // The running cluster is untouched.
    shared().client().await?.apiserver_version().await?;
    Ok(())
}

#[tokio::test]
async fn crd_is_established_and_a_valid_tenant_is_accepted_with_defaults() -> Result<()> {
    let client = client().await?;
    let name = unique_name("smoke-valid");
    let mut tenant = example(&name)?;
    tenant["spec"].as_object_mut().unwrap().remove("tier");
    tenant["spec"]
        .as_object_mut()
        .unwrap()
        .remove("deletionPolicy");
    tenant["spec"]["quotas"] =
        json!({ "cpu": "1500m", "memory": "8Gi", "pods": 30, "databaseStorage": 5 });
    let created = create(&client, &tenant).await?;
    assert_eq!(
        created.data["spec"]["tier"], "small",
        "tier defaults to small"
    );
    assert_eq!(created.data["spec"]["deletionPolicy"], "Retain");
    assert_eq!(created.data["spec"]["suspended"], false);
    assert_eq!(
        created.data["spec"]["quotas"]["databaseStorage"], 5,
        "int-or-string kept as given"
    );

    // The same object reads back through the typed API the operator uses.
    let typed: Api<SmartRegionTenant> = Api::all(client.clone());
    let read = typed.get(&name).await?;
    assert_eq!(read.spec.display_name, "Comune di Prato");
    typed.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn invalid_tenants_are_refused_with_the_field_named() -> Result<()> {
    let client = client().await?;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "upper-case name",
            |t| t["metadata"]["name"] = json!("Prato"),
            "metadata.name",
        ),
        (
            "underscore in name",
            |t| t["metadata"]["name"] = json!("prato_centro"),
            "metadata.name",
        ),
        (
            "name over 40 characters",
            |t| t["metadata"]["name"] = json!(format!("p{}", "a".repeat(40))),
            "metadata.name",
        ),
        (
            "name starting with a digit",
            |t| t["metadata"]["name"] = json!("1prato"),
            "metadata.name",
        ),
        (
            "unknown tier",
            |t| t["spec"]["tier"] = json!("huge"),
            "spec.tier",
        ),
        (
            "unknown entity type",
            |t| t["spec"]["entity"]["type"] = json!("Frazione"),
            "spec.entity.type",
        ),
        (
            "ISTAT code of 5 digits",
            |t| t["spec"]["entity"]["istatCode"] = json!("48017"),
            "spec.entity.istatCode",
        ),
        (
            "ISTAT code with a letter",
            |t| t["spec"]["entity"]["istatCode"] = json!("04801A"),
            "spec.entity.istatCode",
        ),
        (
            "zero CPU quota",
            |t| t["spec"]["quotas"] = json!({ "cpu": "0" }),
            "spec.quotas.cpu",
        ),
        (
            "negative memory quota",
            |t| t["spec"]["quotas"] = json!({ "memory": "-1Gi" }),
            "spec.quotas.memory",
        ),
        (
            "storage quota that is no quantity",
            |t| t["spec"]["quotas"] = json!({ "storage": "lots" }),
            "spec.quotas.storage",
        ),
        (
            "zero pods",
            |t| t["spec"]["quotas"] = json!({ "pods": 0 }),
            "spec.quotas.pods",
        ),
        (
            "unknown deletionPolicy",
            |t| t["spec"]["deletionPolicy"] = json!("Destroy"),
            "spec.deletionPolicy",
        ),
        (
            "missing displayName",
            |t| {
                t["spec"].as_object_mut().unwrap().remove("displayName");
            },
            "spec.displayName",
        ),
        (
            "empty admin group",
            |t| t["spec"]["admins"]["groups"] = json!([""]),
            "spec.admins.groups[0]",
        ),
        (
            "MQTT URL that is not mqtt://",
            |t| {
                t["spec"]["ingest"] = json!({ "mqtt": { "url": "http://broker", "topics": ["a"] } })
            },
            "spec.ingest.mqtt.url",
        ),
    ];
    let mut failures = Vec::new();
    for (what, edit, field) in cases {
        let mut tenant = example(&unique_name("smoke-invalid"))?;
        edit(&mut tenant);
        match refusal(create(&client, &tenant).await) {
            Ok(message) if message.contains(field) => eprintln!("{what}: {message}"),
            Ok(message) => {
                failures.push(format!("{what}: message does not name {field}: {message}"))
            }
            Err(error) => failures.push(format!("{what}: {error:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn immutable_fields_cannot_change() -> Result<()> {
    let client = client().await?;
    let name = unique_name("smoke-immutable");
    let created = create(&client, &example(&name)?).await?;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "entity type",
            |t| t["spec"]["entity"]["type"] = json!("Provincia"),
            "spec.entity.type",
            "immutable",
        ),
        (
            "ISTAT code",
            |t| t["spec"]["entity"]["istatCode"] = json!("048017"),
            "spec.entity.istatCode",
            "immutable",
        ),
        (
            "ISTAT code removed",
            |t| {
                t["spec"]["entity"]
                    .as_object_mut()
                    .unwrap()
                    .remove("istatCode");
            },
            "spec.entity",
            "cannot be removed",
        ),
    ];
    let mut failures = Vec::new();
    for (what, edit, field, phrase) in cases {
        let mut changed = serde_json::to_value(&created)?;
        edit(&mut changed);
        let object: DynamicObject = serde_json::from_value(changed)?;
        match refusal(
            tenants(&client)
                .replace(&name, &PostParams::default(), &object)
                .await,
        ) {
            Ok(message) if message.contains(field) && message.contains(phrase) => {}
            Ok(message) => failures.push(format!(
                "{what}: message does not name {field} and say {phrase:?}: {message}"
            )),
            Err(error) => failures.push(format!("{what}: {error:#}")),
        }
    }
    // A mutable field still changes.
    let mut changed = serde_json::to_value(&created)?;
    changed["spec"]["tier"] = json!("large");
    let object: DynamicObject = serde_json::from_value(changed)?;
    let replaced = tenants(&client)
        .replace(&name, &PostParams::default(), &object)
        .await?;
    assert_eq!(replaced.data["spec"]["tier"], "large");
    tenants(&client)
        .delete(&name, &DeleteParams::default())
        .await?;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

async fn fresh_namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = unique_name(prefix);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(name)
}

#[tokio::test]
async fn a_deployment_gets_a_running_and_ready_pod_on_a_kwok_node() -> Result<()> {
    let client = client().await?;
    let namespace = fresh_namespace(&client, "smoke-deploy").await?;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": namespace },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &deployment)
        .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod = wait::until("a Running and Ready pod of the Deployment", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await?;
            Ok(list.items.into_iter().find(|pod| {
                let status = pod.status.clone().unwrap_or_default();
                status.phase.as_deref() == Some("Running")
                    && status
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            }))
        }
    })
    .await?;
    let node = pod
        .spec
        .and_then(|spec| spec.node_name)
        .context("pod has no node")?;
    assert!(node.starts_with("kwok-node-"), "scheduled onto {node}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    wait::until(
        "the Deployment to report 1 available replica",
        TIMEOUT,
        || {
            let deployments = deployments.clone();
            async move {
                let status = deployments.get("web").await?.status.unwrap_or_default();
                Ok((status.available_replicas == Some(1)).then_some(()))
            }
        },
    )
    .await?;
    Api::<Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_completes() -> Result<()> {
    let client = client().await?;
    let namespace = fresh_namespace(&client, "smoke-nsdel").await?;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("a".into(), "1".into())])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &config_map)
        .await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await?;
    wait::until("the namespace to be gone", TIMEOUT, || {
        let namespaces = namespaces.clone();
        let namespace = namespace.clone();
        async move {
            Ok(namespaces
                .get_opt(&namespace)
                .await?
                .is_none()
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_owned_object_is_garbage_collected_with_its_owner() -> Result<()> {
    let client = client().await?;
    let namespace = fresh_namespace(&client, "smoke-gc").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let reference = OwnerReference {
        api_version: ConfigMap::api_version(&()).into(),
        kind: ConfigMap::kind(&()).into(),
        name: owner.name_any(),
        uid: owner.uid().context("owner without uid")?,
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("owned".into()),
                    owner_references: Some(vec![reference]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    config_maps
        .delete("owner", &DeleteParams::background())
        .await?;
    wait::until("the owned Secret to be garbage-collected", TIMEOUT, || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("owned").await?.is_none().then_some(())) }
    })
    .await?;
    Api::<Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await?;
    Ok(())
}
