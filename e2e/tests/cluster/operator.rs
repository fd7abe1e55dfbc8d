//! The operator against the real control plane: examples become Ready with every child,
//! drift is undone, spec changes reach the children, deletion is safe.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::{SmartRegionTenant, TENANT_LABEL};

/// Drift must be undone this fast (the bound).
const DRIFT_DEADLINE: Duration = Duration::from_secs(10);

/// Every child of `tenant` exists, carries the tenant labels and is owned by the tenant.
async fn assert_children(client: &Client, tenant: &SmartRegionTenant) -> Result<()> {
    let name = tenant.name_any();
    let namespace = format!("srt-{name}");
    let uid = tenant.uid().unwrap();
    let check = |kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        ensure_labelled_and_owned(kind, meta, &name, &uid)
    };
    let ns = Api::<Namespace>::all(client.clone())
        .get(&namespace)
        .await?;
    check("Namespace", &ns.metadata)?;
    let ns_labels = ns.metadata.labels.unwrap_or_default();
    ensure!(
        ns_labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str)
            == Some("restricted")
    );
    check(
        "ServiceAccount",
        &Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
            .get("ingest")
            .await?
            .metadata,
    )?;
    check(
        "ResourceQuota",
        &Api::<ResourceQuota>::namespaced(client.clone(), &namespace)
            .get("tenant-quota")
            .await?
            .metadata,
    )?;
    check(
        "LimitRange",
        &Api::<LimitRange>::namespaced(client.clone(), &namespace)
            .get("tenant-limits")
            .await?
            .metadata,
    )?;
    check(
        "Role",
        &Api::<Role>::namespaced(client.clone(), &namespace)
            .get("tenant-admin")
            .await?
            .metadata,
    )?;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await?;
    // deny-from-other-namespaces, allow-ingest, allow-read, restrict-egress
    ensure!(
        policies.items.len() == 4,
        "expected 4 NetworkPolicies, found {}",
        policies.items.len()
    );
    for policy in &policies.items {
        check("NetworkPolicy", &policy.metadata)?;
    }
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await?;
    let admins = tenant.spec.admins.clone().unwrap_or_default();
    ensure!(
        bindings.items.len() == admins.groups.len() + admins.users.len(),
        "one RoleBinding per admin"
    );
    for binding in &bindings.items {
        check("RoleBinding", &binding.metadata)?;
    }
    Ok(())
}

#[tokio::test]
async fn examples_become_ready_with_every_child_labelled_and_owned() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("examples");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let mut names = Vec::new();
    for file in [
        "firenze",
        "prato",
        "rt-attivita-produttive",
        "unione-mugello",
    ] {
        let name = unique_name(&file[..file.len().min(20)]);
        apply_tenant(&client, &example(file, &name, &shard)?).await?;
        names.push(name);
    }
    for name in &names {
        let tenant = wait_ready(&client, name).await?;
        assert_children(&client, &tenant).await?;
        let status = tenant.status.as_ref().unwrap();
        assert_eq!(
            status.namespace.as_deref(),
            Some(format!("srt-{name}").as_str())
        );
        assert!(condition(&tenant, "NamespaceReady").is_some_and(|c| c.status == "True"));
    }
    delete_all_and_wait(&client, &names).await?;
    Ok(())
}

#[tokio::test]
async fn hand_edits_and_deletions_of_children_are_undone_within_10_seconds() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("drift");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("drift");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    wait_ready(&client, &name).await?;
    let namespace = format!("srt-{name}");

    // A hand edit of the quota's hard limits.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    let original = quotas
        .get("tenant-quota")
        .await?
        .spec
        .unwrap()
        .hard
        .unwrap();
    quotas
        .patch(
            "tenant-quota",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "hard": { "pods": "999" } } })),
        )
        .await?;
    wait::until("the quota edit to be undone", DRIFT_DEADLINE, || {
        let quotas = quotas.clone();
        let original = original.clone();
        async move {
            let hard = quotas
                .get("tenant-quota")
                .await?
                .spec
                .unwrap()
                .hard
                .unwrap();
            Ok((hard.get("pods") == original.get("pods")).then_some(()))
        }
    })
    .await?;

    // Deleting the LimitRange, and the admin RoleBinding.
    let limits: Api<LimitRange> = Api::namespaced(client.clone(), &namespace);
    delete_and_wait_replaced(&limits, "tenant-limits", DRIFT_DEADLINE).await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    let binding = bindings.list(&ListParams::default()).await?.items.remove(0);
    delete_and_wait_replaced(&bindings, &binding.name_any(), DRIFT_DEADLINE).await?;

    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn a_labelled_service_a_tenant_admin_makes_survives_reconciles() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("admin-service");
    let operator = Operator::start(shared(), &shard, &["--requeue-seconds=2"])?;
    let name = unique_name("admin-service");
    let mut tenant = example("prato", &name, &shard)?;
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let namespace = format!("srt-{name}");

    // A tenant admin (the example's group) makes a Service of their own, with the labels
    // the operator's children carry, copied.
    let admin = shared()
        .client_as("anna.bianchi@comune.prato.it", &["prato-admins"])
        .await?;
    let services: Api<Service> = Api::namespaced(admin, &namespace);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {
                    "name": "dashboard",
                    "labels": {
                        TENANT_LABEL: name,
                        "app.kubernetes.io/managed-by": "smartregion-operator"
                    }
                },
                "spec": { "ports": [{ "port": 80 }], "selector": { "app": "dashboard" } }
            }))?,
        )
        .await?;
    // Reconciles, periodic ones and one for a spec change, which prunes what is no
    // longer desired.
    tenant["spec"]["tier"] = json!("medium");
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let start = smartregion_e2e::apiserver::reconciles(&operator.metrics().await?);
    let operator = &operator;
    wait::until(
        "three more reconciles",
        Duration::from_secs(60),
        || async move {
            let now = smartregion_e2e::apiserver::reconciles(&operator.metrics().await?);
            Ok((now >= start + 3.0).then_some(()))
        },
    )
    .await?;
    let kept = services.get_opt("dashboard").await?;
    ensure!(
        kept.is_some(),
        "the tenant admin's Service was deleted by the operator"
    );
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn tier_change_reaches_the_quota_and_a_removed_admin_loses_its_binding() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("changes");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("changes");
    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["admins"] = json!({ "groups": ["prato-admins", "prato-ufficio-ced"], "users": ["mario.rossi@comune.prato.it"] });
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    let namespace = format!("srt-{name}");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    let pods = |quota: ResourceQuota| quota.spec.unwrap().hard.unwrap()["pods"].0.clone();
    assert_eq!(pods(quotas.get("tenant-quota").await?), "20", "small tier");

    tenant["spec"]["tier"] = json!("large");
    tenant["spec"]["admins"] = json!({ "groups": ["prato-admins"] });
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    assert_eq!(pods(quotas.get("tenant-quota").await?), "200", "large tier");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    let subjects: BTreeSet<String> = bindings
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .flat_map(|binding| binding.subjects.unwrap_or_default())
        .map(|subject| format!("{}:{}", subject.kind, subject.name))
        .collect();
    assert_eq!(subjects, BTreeSet::from(["Group:prato-admins".to_string()]));
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_namespace_and_delete_needs_confirmation() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("deletion");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let namespaces: Api<Namespace> = Api::all(client.clone());

    // Retain: the namespace goes, then the tenant.
    let kept = unique_name("retain");
    apply_tenant(&client, &example("prato", &kept, &shard)?).await?;
    wait_ready(&client, &kept).await?;
    delete_and_wait(&client, &kept).await?;
    assert!(
        namespaces.get_opt(&format!("srt-{kept}")).await?.is_none(),
        "namespace gone before the finalizer"
    );

    // Delete without the confirmation: stays Terminating and says what to add.
    let dropped = unique_name("delete");
    let mut tenant = example("prato", &dropped, &shard)?;
    tenant["spec"]["deletionPolicy"] = json!("Delete");
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &dropped).await?;
    let api = tenants(&client);
    api.delete(&dropped, &Default::default()).await?;
    let waiting = wait::until("the tenant to ask for confirmation", READY_TIMEOUT, || {
        let api = api.clone();
        let dropped = dropped.clone();
        async move {
            let tenant = api.get(&dropped).await?;
            Ok(condition(&tenant, "Ready")
                .filter(|c| c.reason == "DeletionNotConfirmed")
                .map(|c| c.message.clone()))
        }
    })
    .await?;
    let annotation = format!("smartregion.toscana.it/confirm-delete: {dropped}");
    assert!(
        waiting.contains(&annotation),
        "the condition names the annotation to add: {waiting}"
    );
    assert!(
        namespaces
            .get_opt(&format!("srt-{dropped}"))
            .await?
            .is_some(),
        "nothing deleted yet"
    );

    api.patch(
        &dropped,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { "smartregion.toscana.it/confirm-delete": dropped } } })),
    )
    .await?;
    wait::until("the confirmed tenant to be gone", READY_TIMEOUT, || {
        let api = api.clone();
        let dropped = dropped.clone();
        async move { Ok(api.get_opt(&dropped).await?.is_none().then_some(())) }
    })
    .await?;
    assert!(
        namespaces
            .get_opt(&format!("srt-{dropped}"))
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn a_suspended_tenant_shows_suspended() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("suspend");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let name = unique_name("suspend");
    let mut tenant = example("prato", &name, &shard)?;
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;
    tenant["spec"]["suspended"] = json!(true);
    apply_tenant(&client, &tenant).await?;
    let api = tenants(&client);
    let suspended = wait::until("the tenant to be Suspended", READY_TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let tenant = api.get(&name).await?;
            let phase = tenant.status.as_ref().and_then(|s| s.phase);
            Ok((phase == Some(smartregion_operator::crd::Phase::Suspended)).then_some(tenant))
        }
    })
    .await?;
    assert_eq!(condition(&suspended, "Ready").unwrap().reason, "Suspended");
    assert!(suspended.meta().deletion_timestamp.is_none());
    delete_and_wait(&client, &name).await?;
    Ok(())
}
