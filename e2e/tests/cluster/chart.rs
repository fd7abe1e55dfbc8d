//! The Helm chart: lint and render with helm built from its Go module, apply what it
//! renders to the real API server, and run the operator with a token of the chart's
//! ServiceAccount (not as admin) until an example tenant is Ready — proof that the
//! chart's RBAC is enough. Also: no wildcards in its RBAC, its CRD and tier presets are
//! the ones the operator has.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{apply_tenant, client, condition, delete_and_wait, example, wait_ready};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use smartregion_e2e::operator::{Operator, SHARD_LABEL};
use smartregion_e2e::{apply, helm, paths, shared, unique_name, wait};

fn kinds(objects: &[DynamicObject]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|object| object.types.as_ref().map(|types| types.kind.clone()))
        .collect()
}

fn of_kind<'a>(objects: &'a [DynamicObject], kind: &str) -> Vec<&'a DynamicObject> {
    objects
        .iter()
        .filter(|object| {
            object
                .types
                .as_ref()
                .is_some_and(|types| types.kind == kind)
        })
        .collect()
}

fn env_of(deployment: &DynamicObject) -> Vec<(String, Value)> {
    deployment.data["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|variable| {
            (
                variable["name"].as_str().unwrap_or_default().to_string(),
                variable.get("value").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[test]
fn the_chart_lints_and_renders_what_its_values_ask_for() -> Result<()> {
    let chart = helm::chart();
    let lint = helm::run(&["lint", "--strict", chart.to_str().context("path")?])?;
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let defaults = apply::documents(&helm::template("sr", "smartregion-system", &[])?)?;
    let expected: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&defaults), expected);
    let without = apply::documents(&helm::template(
        "sr",
        "smartregion-system",
        &["admissionPolicies.enabled=false"],
    )?)?;
    assert!(
        !kinds(&without).contains("ValidatingAdmissionPolicy"),
        "the policies can be left out"
    );
    let deployment = of_kind(&defaults, "Deployment")[0];
    assert_eq!(deployment.data["spec"]["replicas"], json!(2));
    let pod = &deployment.data["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        json!("RuntimeDefault")
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        json!(true)
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        json!(false)
    );
    let env = env_of(deployment);
    assert!(
        !env.iter()
            .any(|(name, _)| name == "SMARTREGION_DATABASE_URL"),
        "no database unless one is configured"
    );

    // One replica: no budget; a ServiceMonitor when asked for; the database URL only ever
    // as a reference to the Secret.
    let single = apply::documents(&helm::template(
        "sr",
        "smartregion-system",
        &[
            "replicaCount=1",
            "metrics.serviceMonitor.enabled=true",
            "database.existingSecret=smartregion-db",
            "database.caSecret=smartregion-db-ca",
        ],
    )?)?;
    let kinds = kinds(&single);
    assert!(!kinds.contains("PodDisruptionBudget"), "{kinds:?}");
    assert!(kinds.contains("ServiceMonitor"), "{kinds:?}");
    let deployment = of_kind(&single, "Deployment")[0];
    let url = deployment.data["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .context("env")?
        .iter()
        .find(|variable| variable["name"] == "SMARTREGION_DATABASE_URL")
        .context("the database URL is passed")?;
    assert_eq!(
        url["valueFrom"]["secretKeyRef"],
        json!({ "name": "smartregion-db", "key": "url" })
    );
    Ok(())
}

#[test]
fn bad_values_are_refused_with_a_message_that_names_them() -> Result<()> {
    for (set, says) in [
        ("database.sslmode=prefer", "sslmode"),
        ("replicaCount=0", "replicaCount"),
        ("tiers.small.pods=-1", "pods"),
        ("namespacePrefix=Not_A_Label", "namespacePrefix"),
        ("unknownSetting=1", "unknownSetting"),
    ] {
        let error = helm::template("sr", "smartregion-system", &[set])
            .err()
            .with_context(|| format!("{set} was accepted"))?;
        assert!(error.to_string().contains(says), "{set}: {error:#}");
    }
    let error = helm::template(
        "sr",
        "smartregion-system",
        &[
            "database.existingSecret=smartregion-db",
            "database.sslmode=verify-full",
        ],
    )
    .err()
    .context("verify-full without a CA was accepted")?;
    assert!(error.to_string().contains("database.caSecret"), "{error:#}");
    // A server that is not authenticated only on purpose.
    for mode in ["require", "disable"] {
        let sslmode = format!("database.sslmode={mode}");
        let error = helm::template(
            "sr",
            "smartregion-system",
            &["database.existingSecret=smartregion-db", &sslmode],
        )
        .err()
        .with_context(|| format!("sslmode {mode} without database.insecure was accepted"))?;
        assert!(error.to_string().contains("database.insecure"), "{error:#}");
        helm::template(
            "sr",
            "smartregion-system",
            &[
                "database.existingSecret=smartregion-db",
                &sslmode,
                "database.insecure=true",
            ],
        )?;
    }
    for (set, says) in [
        (
            "ingest.exposure.gateway.ref=gw/public,ingest.exposure.ingress.className=nginx,ingest.exposure.domain=ingest.example.it",
            "not both",
        ),
        (
            "ingest.exposure.gateway.ref=gw/public",
            "ingest.exposure.domain",
        ),
        (
            "ingest.exposure.ingress.className=nginx,ingest.exposure.domain=ingest.example.it",
            "fromNamespace",
        ),
        ("ingest.exposure.gateway.ref=public", "ref"),
    ] {
        let error = helm::template("sr", "smartregion-system", &[set])
            .err()
            .with_context(|| format!("{set} was accepted"))?;
        assert!(error.to_string().contains(says), "{set}: {error:#}");
    }
    Ok(())
}

#[test]
fn the_chart_configures_the_exposure_of_ingest() -> Result<()> {
    let names = |objects: &[DynamicObject]| -> Result<Vec<(String, Value)>> {
        Ok(env_of(of_kind(objects, "Deployment")[0])
            .into_iter()
            .filter(|(name, _)| {
                name.starts_with("SMARTREGION_INGRESS")
                    || name.starts_with("SMARTREGION_INGEST_G")
                    || name == "SMARTREGION_INGEST_DOMAIN"
            })
            .collect())
    };
    let off = apply::documents(&helm::template("sr", "smartregion-system", &[])?)?;
    assert_eq!(names(&off)?, vec![], "off by default");
    let gateway = apply::documents(&helm::template(
        "sr",
        "smartregion-system",
        &[
            "ingest.exposure.domain=ingest.smartregion.toscana.it",
            "ingest.exposure.gateway.ref=gateway-system/public",
            "ingest.exposure.gateway.sectionName=https",
        ],
    )?)?;
    assert_eq!(
        names(&gateway)?,
        vec![
            (
                "SMARTREGION_INGEST_DOMAIN".into(),
                json!("ingest.smartregion.toscana.it")
            ),
            (
                "SMARTREGION_INGEST_GATEWAY".into(),
                json!("gateway-system/public")
            ),
            ("SMARTREGION_INGEST_GATEWAY_SECTION".into(), json!("https")),
        ]
    );
    let ingress = apply::documents(&helm::template(
        "sr",
        "smartregion-system",
        &[
            "ingest.exposure.domain=ingest.smartregion.toscana.it",
            "ingest.exposure.ingress.className=nginx",
            "ingest.exposure.ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt",
            "ingest.exposure.fromNamespace=ingress-nginx",
        ],
    )?)?;
    assert_eq!(
        names(&ingress)?,
        vec![
            (
                "SMARTREGION_INGEST_DOMAIN".into(),
                json!("ingest.smartregion.toscana.it")
            ),
            (
                "SMARTREGION_INGRESS_FROM_NAMESPACE".into(),
                json!("ingress-nginx")
            ),
            ("SMARTREGION_INGRESS_CLASS".into(), json!("nginx")),
            (
                "SMARTREGION_INGRESS_ANNOTATIONS".into(),
                json!("cert-manager.io/cluster-issuer=letsencrypt")
            ),
        ]
    );
    // What the operator is then allowed: its exposure kinds and nothing more.
    let role = of_kind(&off, "ClusterRole")[0];
    let rules = role.data["rules"].as_array().context("rules")?;
    for (group, resource) in [
        ("networking.k8s.io", "ingresses"),
        ("gateway.networking.k8s.io", "httproutes"),
    ] {
        let rule = rules
            .iter()
            .find(|rule| rule["resources"] == json!([resource]))
            .with_context(|| format!("no rule for {resource}"))?;
        assert_eq!(rule["apiGroups"], json!([group]));
        assert_eq!(
            rule["verbs"],
            json!(["get", "list", "watch", "create", "patch", "delete"])
        );
    }
    Ok(())
}

#[test]
fn the_charts_rbac_has_no_wildcards() -> Result<()> {
    // Everything optional switched on, so every rule is rendered.
    let objects = apply::documents(&helm::template(
        "sr",
        "smartregion-system",
        &["leaderElection.enabled=true", "replicaCount=3"],
    )?)?;
    let mut rules = 0;
    for object in of_kind(&objects, "ClusterRole")
        .into_iter()
        .chain(of_kind(&objects, "Role"))
    {
        for rule in object.data["rules"].as_array().context("rules")? {
            rules += 1;
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{}: {rule}",
                object.metadata.name.as_deref().unwrap_or_default()
            );
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for item in rule[field].as_array().into_iter().flatten() {
                    let item = item.as_str().context("a string")?;
                    assert!(
                        !item.contains('*'),
                        "wildcard {item:?} in {field} of {}: {rule}",
                        object.metadata.name.as_deref().unwrap_or_default()
                    );
                }
            }
            assert!(
                !rule["verbs"].as_array().context("verbs")?.is_empty(),
                "{rule}"
            );
        }
    }
    assert!(rules >= 10, "only {rules} rules rendered");
    Ok(())
}

#[test]
fn the_chart_carries_the_operators_crd_and_tier_presets() -> Result<()> {
    let root = paths::workspace_root();
    let name = "smartregiontenants.smartregion.toscana.it.yaml";
    let committed = std::fs::read_to_string(root.join("crds").join(name))?;
    let in_chart = std::fs::read_to_string(helm::chart().join("crds").join(name))?;
    assert!(
        committed == in_chart,
        "charts/smartregion-operator/crds/{name} differs from crds/{name}; copy it:\n  \
         cp crds/{name} charts/smartregion-operator/crds/"
    );

    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(helm::chart().join("values.yaml"))?)?;
    let tiers: smartregion_operator::config::Tiers =
        serde_yaml::from_value(values["tiers"].clone())
            .context("the chart's tiers are not what the operator reads")?;
    assert_eq!(
        tiers,
        smartregion_operator::config::Tiers::default(),
        "the chart's default tiers must be the operator's built-in presets"
    );
    Ok(())
}

/// Removes the release's cluster-scoped objects and its namespace.
async fn uninstall(client: &kube::Client, release: &str, namespace: &str) {
    let name = format!("{release}-smartregion-operator");
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(namespace, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn the_operator_onboards_a_tenant_with_only_the_charts_service_account() -> Result<()> {
    let admin = client().await?;
    let cluster = shared();
    let release = unique_name("chart");
    let namespace = format!("{release}-system");
    let shard = release.clone();
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } }))?,
        )
        .await?;
    // The database admin Secret, as a cluster operator would create it.
    Api::<Secret>::namespaced(admin.clone(), &namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "smartregion-db" },
                "stringData": { "url": cluster.operator_database_url },
            }))?,
        )
        .await?;

    let result = async {
        let selector = format!("tenantSelector={SHARD_LABEL}={shard}");
        let text = helm::template(
            &release,
            &namespace,
            &[
                "database.existingSecret=smartregion-db",
                "database.sslmode=disable",
                "database.insecure=true",
                "replicaCount=1",
                &selector,
            ],
        )?;
        for object in apply::documents(&text)? {
            apply::apply(&admin, &object).await?;
        }

        // Exactly what a pod of the chart's Deployment would get: its env, its
        // ServiceAccount's token, the tier presets from its ConfigMap.
        let fullname = format!("{release}-smartregion-operator");
        let chart =
            smartregion_e2e::chart_operator::as_chart(cluster, &admin, &namespace, &release)
                .await?;
        let mut as_chart = cluster.clone();
        as_chart.kubeconfig = chart.kubeconfig;
        let env = chart.env;
        let operator = Operator::start_with_env(&as_chart, &shard, env, &[])?;

        let name = unique_name("chart-prato");
        apply_tenant(&admin, &example("prato", &name, &shard)?).await?;
        let outcome = wait_ready(&admin, &name).await;
        let logs = operator.logs();
        let tenant = outcome.with_context(|| {
            format!(
                "the tenant did not become Ready with the chart's RBAC; operator log:\n{}",
                logs.lines()
                    .rev()
                    .take(10)
                    .map(|line| line.chars().take(800).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        for part in ["NamespaceReady", "DatabaseReady", "IngestReady"] {
            assert_eq!(
                condition(&tenant, part).map(|c| c.status.as_str()),
                Some("True"),
                "{part}"
            );
        }
        // It held the leader Lease in the release namespace, through the chart's Role.
        let lease = wait::until("the leader Lease", Duration::from_secs(30), || {
            let leases = Api::<Lease>::namespaced(admin.clone(), &namespace);
            let fullname = fullname.clone();
            async move { Ok(leases.get_opt(&fullname).await?) }
        })
        .await?;
        assert!(
            lease
                .spec
                .and_then(|spec| spec.holder_identity)
                .is_some_and(|holder| !holder.is_empty()),
            "the Lease has a holder"
        );
        let forbidden: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("forbidden") || line.contains("Forbidden"))
            .collect();
        if !forbidden.is_empty() {
            bail!(
                "the operator was refused something:\n{}",
                forbidden.join("\n")
            );
        }
        // Decommissioning works with the same rights.
        delete_and_wait(&admin, &name).await?;
        drop(operator);
        Ok(())
    }
    .await;
    uninstall(&admin, &release, &namespace).await;
    result
}
