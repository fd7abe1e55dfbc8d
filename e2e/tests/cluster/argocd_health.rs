//! The Argo CD health check of SmartRegionTenant
//! (`examples/argocd/resource_customizations/smartregion.toscana.it/SmartRegionTenant/`),
//! run by a real Lua 5.1 as Argo CD runs it:
//!
//! - on every case of its `health_test.yaml`, as Argo CD's own test runner does;
//! - on live tenants that the real operator brought into each state on the local control
//!   plane and PostgreSQL: onboarding, Ready, Suspended, waiting for a Secret, an invalid
//!   spec, an unreachable database before and after Ready, a spec the operator has not
//!   seen yet, and a deletion that waits for its confirmation.
//!
//! The testdata are those live objects. `SMARTREGION_RECORD_ARGOCD=1` makes the end-to-end
//! tests write them again: uid, resourceVersion, managedFields, creationTimestamp and the
//! test's shard label removed, timestamps set to one fixed instant, and the random test
//! name replaced by a stable one. Without it, each test checks that the live object gets
//! the health its committed case expects, so the testdata cannot drift from what the
//! operator writes.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};
use smartregion_operator::crd::{CONFIRM_DELETE_ANNOTATION, SmartRegionTenant};

use crate::argocd::{Health, Libraries};
use crate::support::*;

const RECORD_ENV: &str = "SMARTREGION_RECORD_ARGOCD";
/// Every timestamp in a recorded object.
const RECORDED_TIME: &str = "2026-01-01T00:00:00Z";

#[test]
fn every_case_of_health_test_yaml_gets_its_expected_health() -> Result<()> {
    let script = crate::argocd::script()?;
    let cases = crate::argocd::cases()?;
    let mut failures = Vec::new();
    for case in &cases {
        let object = crate::argocd::load_input(&case.input_path)?;
        for libraries in [Libraries::Open, Libraries::Controller] {
            let got = crate::argocd::health(&script, &object, libraries)
                .with_context(|| format!("{} ({libraries:?})", case.input_path))?;
            if got != case.health_status {
                failures.push(format!(
                    "{} ({libraries:?}): expected {:?}, got {got:?}",
                    case.input_path, case.health_status
                ));
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));

    // Every status the check can give is covered, and no testdata file goes unchecked.
    let statuses: BTreeSet<&str> = cases
        .iter()
        .map(|c| c.health_status.status.as_str())
        .collect();
    for status in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        ensure!(statuses.contains(status), "no case expects {status}");
    }
    let checked: BTreeSet<String> = cases.iter().map(|c| c.input_path.clone()).collect();
    for entry in std::fs::read_dir(crate::argocd::check_dir().join("testdata"))? {
        let file = format!("testdata/{}", entry?.file_name().to_string_lossy());
        ensure!(
            checked.contains(&file),
            "{file} has no case in health_test.yaml"
        );
    }
    Ok(())
}

#[test]
fn the_check_runs_without_the_string_library() -> Result<()> {
    // An argocd-cm script gets no string library: a call into it must fail here too, or
    // the Controller runs above would prove nothing.
    let failing = "return { status = string.lower(\"HEALTHY\"), message = \"\" }";
    let object = json!({ "metadata": { "name": "prato" } });
    ensure!(crate::argocd::health(failing, &object, Libraries::Controller).is_err());
    ensure!(crate::argocd::health(failing, &object, Libraries::Open)?.status == "Unknown");
    Ok(())
}

/// The reasons the check treats as "on its way" are exactly the operator's pending ones.
#[test]
fn the_checks_waiting_reasons_are_the_operators_pending_reasons() -> Result<()> {
    use smartregion_operator::surface::Reason;
    use strum::IntoEnumIterator;
    let script = crate::argocd::script()?;
    let (_, table) = script
        .split_once("local waiting = {")
        .context("health.lua has no `local waiting = {` table")?;
    let (table, _) = table
        .split_once('}')
        .context("unterminated waiting table")?;
    let listed: BTreeSet<String> = table
        .lines()
        .filter_map(|line| line.trim().strip_suffix("= true,"))
        .map(|name| name.trim().to_string())
        .collect();
    let pending: BTreeSet<String> = Reason::iter()
        .filter(|reason| reason.pending())
        .map(|reason| reason.as_str().to_string())
        .collect();
    ensure!(
        listed == pending,
        "health.lua waits on {listed:?}, the operator's pending reasons are {pending:?} \
         (reconcile::conditions::Reason::pending)"
    );
    Ok(())
}

/// Tenants as the API server returns them, unparsed, as Argo CD's controller sees them.
fn raw_tenants(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::erase::<SmartRegionTenant>(&()),
    )
}

async fn live(client: &Client, name: &str) -> Result<Value> {
    Ok(serde_json::to_value(raw_tenants(client).get(name).await?)?)
}

fn verdict(object: &Value) -> Result<Health> {
    crate::argocd::health(&crate::argocd::script()?, object, Libraries::Controller)
}

/// A live tenant in one state, and the stable name it gets in testdata.
struct Subject<'a> {
    name: &'a str,
    stable: &'a str,
}

impl Subject<'_> {
    /// `text` with the test's random name (also as the schema's `t_<name>`) made stable.
    fn stabilise(&self, text: &str) -> String {
        text.replace(&self.name.replace('-', "_"), &self.stable.replace('-', "_"))
            .replace(self.name, self.stable)
    }

    /// The object as it is committed to testdata.
    fn recorded(&self, live: &Value) -> Result<Value> {
        let mut object = live.clone();
        let metadata = object["metadata"].as_object_mut().context("no metadata")?;
        for noise in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
        ] {
            metadata.remove(noise);
        }
        if metadata.contains_key("deletionTimestamp") {
            metadata.insert("deletionTimestamp".into(), json!(RECORDED_TIME));
        }
        if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(smartregion_e2e::operator::SHARD_LABEL);
            if labels.is_empty() {
                metadata.remove("labels");
            }
        }
        if let Some(conditions) = object["status"]["conditions"].as_array_mut() {
            for condition in conditions {
                condition["lastTransitionTime"] = json!(RECORDED_TIME);
            }
        }
        if object["status"]["database"]["credentialsRotatedAt"].is_string() {
            object["status"]["database"]["credentialsRotatedAt"] = json!(RECORDED_TIME);
        }
        Ok(serde_json::from_str(
            &self.stabilise(&serde_json::to_string(&object)?),
        )?)
    }

    /// Asserts the health of the live object — `status`, with `fragment` in the message —
    /// and that its case in `health_test.yaml` expects exactly this health; records the
    /// object as `testdata/<file>` first when asked to.
    fn check(&self, live: &Value, file: &str, status: &str, fragment: &str) -> Result<()> {
        let health = verdict(live)?;
        ensure!(
            health.status == status && health.message.contains(fragment),
            "{file}: expected {status} with {fragment:?}, health.lua says {health:?} for status {}",
            serde_json::to_string_pretty(&live["status"])?
        );
        let input_path = format!("testdata/{file}");
        let recording = std::env::var_os(RECORD_ENV).is_some();
        if recording {
            let header = format!(
                "# Recorded from a live tenant by e2e/tests/cluster/argocd_health.rs ({RECORD_ENV}=1):\n\
                 # uid, resourceVersion, managedFields and creationTimestamp removed, times\n\
                 # fixed, the test's name replaced by {:?}.\n",
                self.stable
            );
            let text = header + &serde_yaml::to_string(&self.recorded(live)?)?;
            std::fs::write(crate::argocd::check_dir().join(&input_path), text)?;
        }
        let stable = Health {
            status: health.status.clone(),
            message: self.stabilise(&health.message),
        };
        let expected = crate::argocd::cases()?
            .into_iter()
            .find(|case| case.input_path == input_path)
            .map(|case| case.health_status);
        if expected.as_ref() != Some(&stable) {
            let wanted = format!(
                "health_test.yaml expects {expected:?} for {input_path}, the live tenant gets \
                 {stable:?}; the case that matches it:\n  - healthStatus:\n      status: {}\n      \
                 message: {:?}\n    inputPath: {input_path}",
                stable.status, stable.message
            );
            // Recording goes on through every state; the cases test checks the result.
            ensure!(
                recording,
                "{wanted}\nrecord again with {RECORD_ENV}=1 and update the case"
            );
            eprintln!("{wanted}");
        }
        Ok(())
    }
}

fn is_observed(object: &Value) -> bool {
    object["status"]["observedGeneration"] == object["metadata"]["generation"]
}

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

/// Waits until the operator reported on the tenant's current generation with `phase`.
async fn wait_phase(client: &Client, name: &str, wanted: &str) -> Result<Value> {
    wait::until(
        &format!("tenant {name} to be {wanted}"),
        READY_TIMEOUT,
        || async move {
            let object = live(client, name).await?;
            Ok((is_observed(&object) && phase(&object) == wanted).then_some(object))
        },
    )
    .await
}

/// Waits until the tenant's Ready condition has `reason`, and returns the tenant.
async fn wait_ready_reason(client: &Client, name: &str, reason: &str) -> Result<Value> {
    wait::until(
        &format!("tenant {name} to report {reason}"),
        READY_TIMEOUT,
        || async move {
            let object = live(client, name).await?;
            let ready = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .cloned();
            let reported = ready.is_some_and(|c| c["reason"] == reason);
            Ok((reported && is_observed(&object)).then_some(object))
        },
    )
    .await
}

/// Every version of the tenant the API server stores after `resource_version`, until one
/// is Ready for its generation.
async fn versions_until_ready(
    client: &Client,
    name: &str,
    resource_version: &str,
) -> Result<Vec<Value>> {
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut events = raw_tenants(client)
        .watch(&params, resource_version)
        .await?
        .boxed();
    let collect = async {
        let mut versions = Vec::new();
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    let object = serde_json::to_value(object)?;
                    let done = phase(&object) == "Ready" && is_observed(&object);
                    versions.push(object);
                    if done {
                        return Ok(versions);
                    }
                }
                WatchEvent::Error(error) => anyhow::bail!("watch failed: {error:?}"),
                _ => {}
            }
        }
        anyhow::bail!("the watch ended before tenant {name} was Ready")
    };
    tokio::time::timeout(READY_TIMEOUT, collect)
        .await
        .with_context(|| format!("tenant {name} was not Ready within {READY_TIMEOUT:?}"))?
}

#[tokio::test]
async fn onboarding_is_progressing_then_healthy_and_suspension_is_suspended() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("argocd");
    let name = unique_name("argocd");
    let prato = Subject {
        name: &name,
        stable: "prato",
    };
    // No operator serves the shard yet: the tenant as a GitOps sync first creates it.
    let created = apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    prato.check(
        &live(&client, &name).await?,
        "no-status.yaml",
        "Progressing",
        "Waiting for smartregion-operator",
    )?;

    let _operator = Operator::start(shared(), &shard, &[])?;
    let versions = versions_until_ready(
        &client,
        &name,
        &created.resource_version().context("no resourceVersion")?,
    )
    .await?;
    let verdicts = versions.iter().map(verdict).collect::<Result<Vec<_>>>()?;
    // Argo CD sees an onboarding go from Progressing to Healthy, never through Degraded.
    let (last, before) = verdicts.split_last().context("no versions")?;
    ensure!(last.status == "Healthy", "{last:?}");
    ensure!(
        before.iter().all(|health| health.status == "Progressing"),
        "every version before Ready is Progressing: {verdicts:#?}"
    );
    let rolling_out = versions
        .iter()
        .find(|object| {
            object["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["reason"] == "Progressing")
            })
        })
        .context("no version showed the ingest pods rolling out")?;
    prato.check(
        rolling_out,
        "provisioning-ingest-rolling-out.yaml",
        "Progressing",
        "IngestReady: Progressing: ",
    )?;

    prato.check(
        &live(&client, &name).await?,
        "ready.yaml",
        "Healthy",
        "every part of the tenant is ready",
    )?;

    let mut tenant = example("prato", &name, &shard)?;
    tenant["spec"]["suspended"] = json!(true);
    apply_tenant(&client, &tenant).await?;
    prato.check(
        &wait_phase(&client, &name, "Suspended").await?,
        "suspended.yaml",
        "Suspended",
        "spec.suspended is true",
    )?;
    delete_and_wait(&client, &name).await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_that_cannot_work_as_written_is_degraded_and_one_waiting_is_progressing()
-> Result<()> {
    let client = client().await?;
    let shard = unique_name("argocd");
    let _operator = Operator::start(shared(), &shard, &[])?;

    // Waits for a Secret the tenant's admins create: pending, not failed.
    let waiting = unique_name("argocd");
    let mut tenant = example("prato", &waiting, &shard)?;
    tenant["spec"]["ingest"] = json!({ "mqtt": {
        "url": "mqtts://broker.example.it:8883",
        "topics": ["prato/sensors/#"],
        "credentialsSecret": "mqtt-credentials",
    }});
    tenant["spec"]["deletionPolicy"] = json!("Delete");
    apply_tenant(&client, &tenant).await?;
    let subject = Subject {
        name: &waiting,
        stable: "prato",
    };
    subject.check(
        &wait_ready_reason(&client, &waiting, "WaitingForMqttCredentials").await?,
        "provisioning-waiting-for-mqtt-credentials.yaml",
        "Progressing",
        "IngestReady: WaitingForMqttCredentials: create the Secret mqtt-credentials",
    )?;

    // Deleting it with deletionPolicy Delete and no confirmation: stuck until a person acts.
    raw_tenants(&client)
        .delete(&waiting, &DeleteParams::default())
        .await?;
    subject.check(
        &wait_ready_reason(&client, &waiting, "DeletionNotConfirmed").await?,
        "terminating-deletion-not-confirmed.yaml",
        "Degraded",
        "Ready: DeletionNotConfirmed: deletionPolicy is Delete",
    )?;
    raw_tenants(&client)
        .patch(
            &waiting,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { CONFIRM_DELETE_ANNOTATION: waiting } } }),
            ),
        )
        .await?;

    // Passes the CRD's pattern, but no port is above 65535: the operator refuses the spec.
    let invalid = unique_name("argocd");
    let mut tenant = example("prato", &invalid, &shard)?;
    tenant["spec"]["ingest"] = json!({ "mqtt": {
        "url": "mqtt://broker.example.it:99999",
        "topics": ["prato/sensors/#"],
    }});
    apply_tenant(&client, &tenant).await?;
    Subject {
        name: &invalid,
        stable: "prato",
    }
    .check(
        &wait_phase(&client, &invalid, "Degraded").await?,
        "degraded-invalid-spec.yaml",
        "Degraded",
        "Ready: InvalidSpec: ingest.mqtt.url",
    )?;

    delete_all_and_wait(&client, &[waiting, invalid]).await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_database_degrades_and_an_unseen_spec_is_progressing() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("argocd");
    let name = unique_name("argocd");
    let firenze = Subject {
        name: &name,
        stable: "firenze",
    };
    let mut operator = Operator::start(shared(), &shard, &[])?;
    let mut tenant = example("firenze", &name, &shard)?;
    apply_tenant(&client, &tenant).await?;
    wait_ready(&client, &name).await?;

    // A spec change the operator has not seen (it is down): the status is for generation 1.
    operator.kill()?;
    tenant["spec"]["displayName"] = json!("Comune di Firenze (Palazzo Vecchio)");
    apply_tenant(&client, &tenant).await?;
    let unseen = live(&client, &name).await?;
    ensure!(unseen["metadata"]["generation"] == 2, "{unseen}");
    firenze.check(
        &unseen,
        "unobserved-generation.yaml",
        "Progressing",
        "reconcile generation 2 (the status describes generation 1)",
    )?;

    // Back, but the database is unreachable: a Ready tenant turns Degraded, a new one
    // cannot get Ready.
    let closed = shared()
        .operator_database_url
        .rsplit_once(':')
        .map(|(prefix, _)| format!("{prefix}:1/smartregion"))
        .context("database URL without a port")?;
    let unreachable = Operator::start(shared(), &shard, &[&format!("--database-url={closed}")])?;
    firenze.check(
        &wait_phase(&client, &name, "Degraded").await?,
        "degraded-database-unavailable.yaml",
        "Degraded",
        "DatabaseReady: DatabaseUnavailable: ",
    )?;
    let newcomer = unique_name("argocd");
    apply_tenant(&client, &example("prato", &newcomer, &shard)?).await?;
    Subject {
        name: &newcomer,
        stable: "prato",
    }
    .check(
        &wait_ready_reason(&client, &newcomer, "DatabaseUnavailable").await?,
        "provisioning-database-unavailable.yaml",
        "Degraded",
        "DatabaseReady: DatabaseUnavailable: ",
    )?;

    // Releasing the tenants' data needs the database.
    drop(unreachable);
    let _operator = Operator::start(shared(), &shard, &[])?;
    delete_all_and_wait(&client, &[name.clone(), newcomer]).await?;
    Ok(())
}
