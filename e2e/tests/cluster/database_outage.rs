//! PostgreSQL goes away for 30 seconds while 10 tenants are reconciled: they report it,
//! their Kubernetes side keeps being reconciled, and they are all Ready again once it is
//! back, without the operator restarting.
//!
//! The test stops a PostgreSQL of its own, so the other tests' database never goes away.

use std::time::Duration;

use crate::support::*;
use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::LimitRange;
use kube::api::Api;
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{PostgresServer, shared, unique_name, wait};

const TENANTS: usize = 10;
/// The outage.
const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn tenants_report_a_database_outage_and_recover_without_a_restart() -> Result<()> {
    let client = client().await?;
    let mut database = PostgresServer::start_new(shared(), "outage-postgres").await?;
    let shard = unique_name("outage");
    let url = format!("--database-url={}", database.url());
    let mut operator = Operator::start(shared(), &shard, &[&url, "--requeue-seconds=5"])?;
    let pid = operator.pid();
    let names: Vec<String> = (0..TENANTS).map(|_| unique_name("outage")).collect();
    for name in &names {
        apply_tenant(&client, &example("prato", name, &shard)?).await?;
    }
    for name in &names {
        wait_ready(&client, name).await?;
    }

    database.stop()?;
    let outage_started = std::time::Instant::now();
    let api = tenants(&client);
    for name in &names {
        let reported = wait::until(
            &format!("tenant {name} to report the outage"),
            READY_TIMEOUT,
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let tenant = api.get(&name).await?;
                    Ok(condition(&tenant, "DatabaseReady")
                        .filter(|c| c.status == "False")
                        .cloned())
                }
            },
        )
        .await?;
        ensure!(
            reported.reason == "DatabaseUnavailable",
            "reason {}: {}",
            reported.reason,
            reported.message
        );
        ensure!(
            reported.message.contains("unreachable") || reported.message.contains("connect"),
            "a readable reason: {}",
            reported.message
        );
    }
    // The Kubernetes side is still reconciled: a deleted child comes back meanwhile.
    let namespace = format!("srt-{}", names[0]);
    let limits: Api<LimitRange> = Api::namespaced(client.clone(), &namespace);
    delete_and_wait_replaced(&limits, "tenant-limits", READY_TIMEOUT).await?;
    ensure!(
        outage_started.elapsed() < OUTAGE,
        "the checks above took longer than the outage itself"
    );
    // Not a synchronisation: the outage lasts its full length.
    tokio::time::sleep(OUTAGE.saturating_sub(outage_started.elapsed())).await;

    database.restart().await?;
    let recovery = std::time::Instant::now();
    for name in &names {
        wait_ready(&client, name).await?;
    }
    eprintln!(
        "all {TENANTS} tenants Ready {:.1}s after PostgreSQL returned",
        recovery.elapsed().as_secs_f64()
    );
    ensure!(operator.running(), "the operator kept running");
    ensure!(operator.pid() == pid, "no restart");
    delete_all_and_wait(&client, &names).await?;
    drop(operator);
    Ok(())
}
