//! The operator survives being killed mid-onboarding, and with two replicas only the
//! leader reconciles until it dies and the standby takes over.

use std::time::{Duration, Instant};

use crate::support::*;
use anyhow::{Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use smartregion_e2e::apiserver::reconciles;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::{FINALIZER, TENANT_LABEL};

/// How many of the tenant's children of kind `K` exist (found by the tenant label).
async fn count<K>(client: &Client, namespace: &str, tenant: &str) -> Result<usize>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{TENANT_LABEL}={tenant}");
    Ok(api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
        .items
        .len())
}

/// Exactly the children a Prato-like tenant (one admin group) should have, no more.
async fn assert_exact_children(client: &Client, tenant: &str) -> Result<()> {
    let ns = format!("srt-{tenant}");
    let counts = [
        (
            "ServiceAccount",
            count::<ServiceAccount>(client, &ns, tenant).await?,
            1,
        ),
        (
            "ResourceQuota",
            count::<ResourceQuota>(client, &ns, tenant).await?,
            1,
        ),
        (
            "LimitRange",
            count::<LimitRange>(client, &ns, tenant).await?,
            1,
        ),
        (
            "NetworkPolicy",
            count::<NetworkPolicy>(client, &ns, tenant).await?,
            // deny-from-other-namespaces, allow-ingest, allow-read, restrict-egress
            4,
        ),
        ("Role", count::<Role>(client, &ns, tenant).await?, 1),
        (
            "RoleBinding",
            count::<RoleBinding>(client, &ns, tenant).await?,
            1,
        ),
    ];
    for (kind, found, expected) in counts {
        ensure!(
            found == expected,
            "tenant {tenant}: {found} {kind} objects, expected {expected}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_killed_operator_restarts_and_finishes_onboarding_20_tenants() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("sigkill");
    let mut operator = Operator::start(shared(), &shard, &["--concurrency=2"])?;
    let names: Vec<String> = (0..20).map(|_| unique_name("onboard")).collect();
    for name in &names {
        apply_tenant(&client, &example("prato", name, &shard)?).await?;
    }
    // Kill it in the middle: some namespaces exist, not every tenant is Ready yet.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let prefix_selector = "app.kubernetes.io/managed-by=smartregion-operator";
    wait::until("onboarding to be under way", READY_TIMEOUT, || {
        let namespaces = namespaces.clone();
        let names = names.clone();
        async move {
            let existing = namespaces
                .list_metadata(&ListParams::default().labels(prefix_selector))
                .await?;
            let ours = existing
                .items
                .iter()
                .filter(|ns| names.iter().any(|n| ns.name_any() == format!("srt-{n}")))
                .count();
            Ok((ours >= 3).then_some(()))
        }
    })
    .await?;
    operator.kill()?;
    let ready_at_kill = {
        let api = tenants(&client);
        let mut ready = 0;
        for name in &names {
            if is_ready(&api.get(name).await?) {
                ready += 1;
            }
        }
        ready
    };
    eprintln!("killed the operator with {ready_at_kill}/20 tenants Ready");
    ensure!(
        ready_at_kill < 20,
        "the kill came too late to test anything"
    );

    let _restarted = Operator::start(shared(), &shard, &[])?;
    for name in &names {
        let tenant = wait_ready(&client, name).await?;
        assert_exact_children(&client, name).await?;
        let finalizers = tenant
            .finalizers()
            .iter()
            .filter(|f| *f == FINALIZER)
            .count();
        assert_eq!(
            finalizers, 1,
            "tenant {name} has the finalizer exactly once"
        );
        for condition in &tenant.status.as_ref().unwrap().conditions {
            assert_eq!(condition.status, "True", "tenant {name}: {condition:?}");
        }
    }
    delete_all_and_wait(&client, &names).await?;
    Ok(())
}

#[tokio::test]
async fn only_the_leader_reconciles_and_the_standby_takes_over() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("leader");
    let lease_name = unique_name("smartregion-operator");
    let flags = [
        "--leader-election=true".to_string(),
        format!("--lease-name={lease_name}"),
        "--lease-namespace=default".to_string(),
        "--lease-seconds=10".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = || {
        let leases = leases.clone();
        let lease_name = lease_name.clone();
        async move {
            Ok(leases
                .get_opt(&lease_name)
                .await?
                .and_then(|lease| lease.spec?.holder_identity)
                .filter(|holder| !holder.is_empty()))
        }
    };

    let mut first = Operator::start(shared(), &shard, &flags)?;
    let leader = wait::until("the first replica to take the Lease", READY_TIMEOUT, holder).await?;
    ensure!(
        leader.ends_with(&format!("-{}", first.pid())),
        "leader is {leader}"
    );
    let second = Operator::start(shared(), &shard, &flags)?;
    // The standby is up (its health server answers) before anything is created.
    wait::until("the standby to answer /readyz", READY_TIMEOUT, || {
        let port = second.metrics_port;
        async move {
            Ok(smartregion_e2e::operator::http_get(port, "/readyz")
                .await
                .ok())
        }
    })
    .await?;

    let before = unique_name("leader-a");
    apply_tenant(&client, &example("prato", &before, &shard)?).await?;
    wait_ready(&client, &before).await?;
    assert!(
        reconciles(&first.metrics().await?) > 0.0,
        "the leader reconciled"
    );
    assert_eq!(
        reconciles(&second.metrics().await?),
        0.0,
        "the standby must not reconcile"
    );

    first.kill()?;
    let killed = Instant::now();
    let after = unique_name("leader-b");
    apply_tenant(&client, &example("prato", &after, &shard)?).await?;
    wait_ready(&client, &after).await?;
    let takeover = killed.elapsed();
    eprintln!(
        "takeover: the standby had a new tenant Ready {:.1}s after the leader was killed (lease 10s)",
        takeover.as_secs_f64()
    );
    let new_leader = wait::until(
        "the standby to hold the Lease",
        Duration::from_secs(5),
        holder,
    )
    .await?;
    ensure!(
        new_leader.ends_with(&format!("-{}", second.pid())),
        "leader is {new_leader}"
    );
    assert!(reconciles(&second.metrics().await?) > 0.0);

    delete_all_and_wait(&client, &[before, after]).await?;
    Ok(())
}
