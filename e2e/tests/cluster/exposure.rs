//! Exposure of a tenant's ingest outside the cluster, on the real API server with the
//! Gateway API's real CRDs (the release's standard channel, `e2e/go/gateway-api/`): an
//! HTTPRoute attached to a platform Gateway with the tenant's host and the ingest Service
//! as backend, kept in shape and removed when exposure is turned off; an Ingress with the
//! configured class, annotations and the conventional TLS Secret name (a Secret the
//! operator never writes); the ingest NetworkPolicy admitting only the controller's
//! namespace; the route's acceptance, written here as a gateway controller would write
//! it, read back into the tenant's status; and, on the real node, the exposed ingest
//! port reached from the gateway's namespace and refused from another one. No gateway
//! implementation runs here, so no request crosses a gateway (docs/exposure.md says what
//! that leaves unproven).

use std::time::Duration;

use crate::support::*;
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{apply, gateway_api, shared, unique_name, wait};
use smartregion_operator::crd::{ExposureKind, Phase, SmartRegionTenant};
use smartregion_operator::surface::children::HTTPRoute;

const DOMAIN: &str = "ingest.e2e.example.it";
const DEADLINE: Duration = Duration::from_secs(30);
/// The controller name this test writes route status under, standing in for a gateway.
const CONTROLLER: &str = "example.org/e2e-stand-in-gateway";

/// A platform namespace with a GatewayClass and a Gateway `public` whose `https`
/// listener takes routes for `*.DOMAIN` from every namespace. Returns the namespace.
async fn platform_gateway(client: &Client) -> Result<String> {
    gateway_api::install_crds(client).await?;
    let namespace = unique_name("gateway-system");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } }))?,
        )
        .await?;
    for object in [
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": { "name": namespace },
            "spec": { "controllerName": CONTROLLER },
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": { "name": "public", "namespace": namespace },
            "spec": {
                "gatewayClassName": namespace,
                "listeners": [{
                    "name": "https",
                    "protocol": "HTTPS",
                    "port": 443,
                    "hostname": format!("*.{DOMAIN}"),
                    "tls": { "mode": "Terminate", "certificateRefs": [{ "name": "wildcard-ingest-tls" }] },
                    "allowedRoutes": { "namespaces": { "from": "All" } },
                }],
            },
        }),
    ] {
        let object: DynamicObject = serde_json::from_value(object)?;
        apply::apply(client, &object).await?;
    }
    Ok(namespace)
}

async fn remove_platform(client: &Client, namespace: &str) -> Result<()> {
    let class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": { "name": namespace },
    });
    let class: DynamicObject = serde_json::from_value(class)?;
    let (resource, _) = kube::discovery::pinned_kind(
        client,
        &kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass"),
    )
    .await?;
    Api::<DynamicObject>::all_with(client.clone(), &resource)
        .delete(&class.name_any(), &DeleteParams::default())
        .await?;
    Api::<Namespace>::all(client.clone())
        .delete(namespace, &DeleteParams::default())
        .await?;
    Ok(())
}

fn gateway_flags(gateway_namespace: &str) -> Vec<String> {
    vec![
        format!("--ingest-gateway={gateway_namespace}/public"),
        "--ingest-gateway-section=https".into(),
        format!("--ingest-domain={DOMAIN}"),
    ]
}

fn start(shard: &str, flags: &[String]) -> Result<Operator> {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Operator::start(shared(), shard, &flags)
}

/// The `from` of the ingest NetworkPolicy's one rule (None: open to every namespace).
async fn ingest_admits(client: &Client, namespace: &str) -> Result<Option<Value>> {
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
        .get("allow-ingest")
        .await?;
    let rules = policy
        .spec
        .and_then(|spec| spec.ingress)
        .unwrap_or_default();
    ensure!(rules.len() == 1, "one ingress rule: {rules:?}");
    Ok(rules[0].from.as_ref().map(|from| json!(from)))
}

fn only_namespace(name: &str) -> Value {
    json!([{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": name } } }])
}

/// Waits until `check` holds for the tenant's status of its current generation.
async fn wait_tenant(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&SmartRegionTenant) -> bool,
) -> Result<SmartRegionTenant> {
    let api = tenants(client);
    let check = &check;
    wait::until(&format!("tenant {name}: {what}"), DEADLINE, || {
        let api = api.clone();
        async move {
            let tenant = api.get(name).await?;
            let current = tenant.status.as_ref().and_then(|s| s.observed_generation)
                == tenant.metadata.generation;
            Ok((current && check(&tenant)).then_some(tenant))
        }
    })
    .await
}

fn exposure_reason(tenant: &SmartRegionTenant) -> Option<(String, String)> {
    condition(tenant, "ExposureReady").map(|c| (c.status.clone(), c.reason.clone()))
}

/// Writes the route's status as the Gateway's controller would.
async fn gateway_says(
    routes: &Api<HTTPRoute>,
    gateway_namespace: &str,
    accepted: bool,
) -> Result<()> {
    let route = routes.get("ingest").await?;
    let (status, reason, message) = if accepted {
        (
            "True",
            "Accepted",
            "accepted by the test's stand-in gateway",
        )
    } else {
        (
            "False",
            "NotAllowedByListeners",
            "no listener admits this route",
        )
    };
    let patch = json!({ "status": { "parents": [{
        "parentRef": {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": gateway_namespace,
            "name": "public",
            "sectionName": "https",
        },
        "controllerName": CONTROLLER,
        "conditions": [{
            "type": "Accepted",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": route.metadata.generation,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }],
    }]}});
    routes
        .patch_status("ingest", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Reconciles the operator has finished (the count of its duration histogram).
async fn reconciles_finished(operator: &Operator) -> Result<u64> {
    let metrics = operator.metrics().await?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("smartregion_reconcile_duration_seconds_count "))
        .context("no reconcile duration count in the operator's metrics")?
        .trim()
        .parse()
        .context("a count that is not a number")
}

#[tokio::test]
async fn an_httproute_attaches_the_tenant_to_the_platform_gateway_and_goes_when_turned_off()
-> Result<()> {
    let client = client().await?;
    let gateway_namespace = platform_gateway(&client).await?;
    let shard = unique_name("expose-gw");
    let operator = start(&shard, &gateway_flags(&gateway_namespace))?;
    let name = unique_name("prato");
    let namespace = format!("srt-{name}");
    let tenant = apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &namespace);

    let route = wait::until("the HTTPRoute ingest", DEADLINE, || {
        let routes = routes.clone();
        async move { Ok(routes.get_opt("ingest").await?) }
    })
    .await?;
    ensure_labelled_and_owned("HTTPRoute", &route.metadata, &name, &tenant.uid().unwrap())?;
    let parent = &route.spec.parent_refs[0];
    assert_eq!(route.spec.parent_refs.len(), 1);
    assert_eq!(
        parent.namespace.as_deref(),
        Some(gateway_namespace.as_str())
    );
    assert_eq!(parent.name, "public");
    assert_eq!(parent.section_name.as_deref(), Some("https"));
    assert_eq!(route.spec.hostnames, vec![format!("{name}.{DOMAIN}")]);
    let rule = &route.spec.rules[0];
    let backend = &rule.backend_refs[0];
    assert_eq!(
        (backend.name.as_str(), backend.port),
        ("ingest", Some(8080))
    );
    assert_eq!(backend.kind.as_deref(), Some("Service"));
    let paths: Vec<String> = rule
        .matches
        .iter()
        .filter_map(|m| m.path.as_ref()?.value.clone())
        .collect();
    assert_eq!(paths, ["/v1/measurements", "/v2/notify", "/v1/senml"]);

    // Until the Gateway's controller accepts the route, the tenant waits for it.
    let waiting = wait_tenant(&client, &name, "waiting for the gateway", |t| {
        exposure_reason(t) == Some(("False".into(), "WaitingForGateway".into()))
    })
    .await?;
    let exposure = waiting.status.as_ref().unwrap().exposure.clone().unwrap();
    assert_eq!(exposure.url, format!("https://{name}.{DOMAIN}/"));
    assert_eq!(exposure.kind, ExposureKind::HttpRoute);
    assert_ne!(waiting.status.as_ref().unwrap().phase, Some(Phase::Ready));
    assert_eq!(
        ingest_admits(&client, &namespace).await?,
        Some(only_namespace(&gateway_namespace)),
        "only the Gateway's namespace reaches ingest"
    );

    // Accepted: the tenant is Ready with it. Refused: it says why.
    gateway_says(&routes, &gateway_namespace, true).await?;
    let ready = wait_ready(&client, &name).await?;
    assert_eq!(
        exposure_reason(&ready),
        Some(("True".into(), "RouteAccepted".into()))
    );
    // Idle reconciles write neither the route nor the ingest policy.
    let versions = || async {
        let route = routes.get("ingest").await?.resource_version();
        let policy = Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
            .get("allow-ingest")
            .await?
            .resource_version();
        anyhow::Ok((route, policy))
    };
    let before = versions().await?;
    let finished = reconciles_finished(&operator).await?;
    tenants(&client)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "e2e.example.org/poke": "1" } } }),
            ),
        )
        .await?;
    wait::until("a reconcile after the poke", DEADLINE, || {
        let operator = &operator;
        async move { Ok((reconciles_finished(operator).await? > finished).then_some(())) }
    })
    .await?;
    assert_eq!(
        versions().await?,
        before,
        "an idle reconcile rewrote a child"
    );

    gateway_says(&routes, &gateway_namespace, false).await?;
    let refused = wait_tenant(&client, &name, "the route refused", |t| {
        exposure_reason(t) == Some(("False".into(), "RouteNotAccepted".into()))
    })
    .await?;
    let message = &condition(&refused, "ExposureReady").unwrap().message;
    assert!(message.contains("no listener admits"), "{message}");
    assert_eq!(
        refused.status.as_ref().unwrap().phase,
        Some(Phase::Degraded)
    );

    // A hand edit of the host is undone; a deleted route comes back.
    routes
        .patch(
            "ingest",
            &PatchParams::apply("e2e-hand-edit").force(),
            &Patch::Apply(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "spec": { "hostnames": ["elsewhere.example.org"] },
            })),
        )
        .await?;
    wait::until("the route's host to be restored", DEADLINE, || {
        let routes = routes.clone();
        let host = format!("{name}.{DOMAIN}");
        async move {
            let route = routes.get("ingest").await?;
            Ok((route.spec.hostnames == vec![host]).then_some(()))
        }
    })
    .await?;
    delete_and_wait_replaced(&routes, "ingest", DEADLINE).await?;

    // Exposure off: the route, the URL and the condition go; ingest is open to the
    // platform again.
    drop(operator);
    let _operator = start(&shard, &[])?;
    wait::until("the HTTPRoute to be removed", DEADLINE, || {
        let routes = routes.clone();
        async move { Ok(routes.get_opt("ingest").await?.is_none().then_some(())) }
    })
    .await?;
    let off = wait_tenant(&client, &name, "exposure gone from status", |t| {
        t.status.as_ref().is_some_and(|s| s.exposure.is_none()) && exposure_reason(t).is_none()
    })
    .await?;
    assert!(condition(&off, "NamespaceReady").is_some_and(|c| c.status == "True"));
    assert_eq!(ingest_admits(&client, &namespace).await?, None);

    delete_and_wait(&client, &name).await?;
    remove_platform(&client, &gateway_namespace).await?;
    Ok(())
}

#[tokio::test]
async fn an_ingress_carries_the_class_annotations_and_tls_by_convention_and_gives_way_to_a_route()
-> Result<()> {
    let client = client().await?;
    let gateway_namespace = platform_gateway(&client).await?;
    let shard = unique_name("expose-ing");
    let ingress_flags = vec![
        "--ingress-class=nginx".to_string(),
        "--ingress-annotation=cert-manager.io/cluster-issuer=letsencrypt-e2e".into(),
        "--ingress-annotation=nginx.ingress.kubernetes.io/proxy-body-size=8m".into(),
        format!("--ingest-domain={DOMAIN}"),
        "--ingress-from-namespace=ingress-nginx".into(),
    ];
    let operator = start(&shard, &ingress_flags)?;
    let name = unique_name("firenze");
    let namespace = format!("srt-{name}");
    let tenant = apply_tenant(&client, &example("firenze", &name, &shard)?).await?;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &namespace);

    // No controller verdict to wait for: Ready once the Ingress is in place.
    let ready = wait_ready(&client, &name).await?;
    assert_eq!(
        exposure_reason(&ready),
        Some(("True".into(), "IngressApplied".into()))
    );
    let exposure = ready.status.as_ref().unwrap().exposure.clone().unwrap();
    assert_eq!(exposure.url, format!("https://{name}.{DOMAIN}/"));
    assert_eq!(exposure.kind, ExposureKind::Ingress);

    let ingress = ingresses.get("ingest").await?;
    ensure_labelled_and_owned("Ingress", &ingress.metadata, &name, &tenant.uid().unwrap())?;
    let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("cert-manager.io/cluster-issuer")
            .map(String::as_str),
        Some("letsencrypt-e2e")
    );
    assert_eq!(
        annotations
            .get("nginx.ingress.kubernetes.io/proxy-body-size")
            .map(String::as_str),
        Some("8m")
    );
    let spec = ingress.spec.clone().context("spec")?;
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let host = format!("{name}.{DOMAIN}");
    let tls = spec.tls.clone().context("tls")?;
    assert_eq!(tls.len(), 1);
    assert_eq!(tls[0].secret_name.as_deref(), Some("ingest-tls"));
    assert_eq!(tls[0].hosts.clone().unwrap_or_default(), vec![host.clone()]);
    let rule = &spec.rules.clone().context("rules")?[0];
    assert_eq!(rule.host.as_deref(), Some(host.as_str()));
    // The ingest API to ingest, the read API to the read service.
    for path in &rule.http.as_ref().context("http")?.paths {
        let service = path.backend.service.as_ref().context("service backend")?;
        let value = path.path.as_deref().unwrap_or_default();
        let expected = if smartregion_operator::surface::READ_PATHS.contains(&value) {
            ("read", 8081)
        } else {
            ("ingest", 8080)
        };
        assert_eq!(
            (
                service.name.as_str(),
                service.port.as_ref().and_then(|p| p.number)
            ),
            (expected.0, Some(expected.1)),
            "{value}"
        );
    }
    // The certificate is the platform's to issue: the operator wrote no Secret for it.
    assert!(
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .get_opt("ingest-tls")
            .await?
            .is_none()
    );
    assert_eq!(
        ingest_admits(&client, &namespace).await?,
        Some(only_namespace("ingress-nginx"))
    );

    // The other mode: the Ingress goes, a route comes, only the Gateway's namespace is
    // admitted.
    drop(operator);
    let _operator = start(&shard, &gateway_flags(&gateway_namespace))?;
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &namespace);
    wait::until("the Ingress to give way to an HTTPRoute", DEADLINE, || {
        let (routes, ingresses) = (routes.clone(), ingresses.clone());
        async move {
            let route = routes.get_opt("ingest").await?;
            let ingress = ingresses.get_opt("ingest").await?;
            Ok((route.is_some() && ingress.is_none()).then_some(()))
        }
    })
    .await?;
    let switched = wait_tenant(&client, &name, "exposed through the route", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.exposure.as_ref())
            .is_some_and(|e| e.kind == ExposureKind::HttpRoute)
    })
    .await?;
    assert_eq!(
        exposure_reason(&switched),
        Some(("False".into(), "WaitingForGateway".into()))
    );
    assert_eq!(
        ingest_admits(&client, &namespace).await?,
        Some(only_namespace(&gateway_namespace))
    );

    delete_and_wait(&client, &name).await?;
    remove_platform(&client, &gateway_namespace).await?;
    Ok(())
}

#[tokio::test]
async fn the_operator_refuses_both_exposure_modes_at_once() -> Result<()> {
    let shard = unique_name("expose-both");
    let mut operator = start(
        &shard,
        &[
            "--ingest-gateway=gateway-system/public".into(),
            "--ingress-class=nginx".into(),
            format!("--ingest-domain={DOMAIN}"),
        ],
    )?;
    let status = operator.wait_exit(DEADLINE).await?;
    assert!(!status.success(), "{status}");
    let logs = operator.logs();
    assert!(
        logs.contains("--ingest-gateway") && logs.contains("cannot be used with"),
        "{logs}"
    );
    Ok(())
}

/// A namespace for the platform's pods (Pod Security `restricted`, as the probe pods
/// satisfy), without NetworkPolicies.
async fn platform_namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = unique_name(prefix);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": name, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted" } } }))?,
        )
        .await?;
    Ok(name)
}

#[tokio::test]
async fn exposed_ingest_admits_the_gateways_namespace_and_no_other_by_traffic() -> Result<()> {
    use smartregion_e2e::pods::{self, ClientPod};
    let client = client().await?;
    gateway_api::install_crds(&client).await?;
    // The gateway's pods would run here; another platform namespace stands beside it.
    let gateway_namespace = platform_namespace(&client, "gateway-system").await?;
    let elsewhere = platform_namespace(&client, "platform").await?;
    let shard = unique_name("expose-net");
    let database_port = shared()
        .database_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .context("no port in the database URL")?
        .parse()?;
    let mut flags = pods::real_node_operator_flags(database_port);
    flags.extend(gateway_flags(&gateway_namespace));
    let _operator = start(&shard, &flags)?;
    let name = unique_name("expose-net");
    let namespace = format!("srt-{name}");
    apply_tenant(&client, &example("prato", &name, &shard)?).await?;
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &namespace);
    wait::until("the HTTPRoute ingest", DEADLINE, || {
        let routes = routes.clone();
        async move { Ok(routes.get_opt("ingest").await?) }
    })
    .await?;
    gateway_says(&routes, &gateway_namespace, true).await?;
    wait_ready(&client, &name)
        .await
        .context("the tenant with real ingest pods")?;

    let pods_api: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &namespace);
    let ingest_ip = pods_api
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=ingest"))
        .await?
        .items
        .iter()
        .find(|pod| pod.metadata.deletion_timestamp.is_none())
        .and_then(|pod| pod.status.as_ref()?.pod_ip.clone())
        .context("the ingest pod has no IP")?;
    let ingest = format!("{ingest_ip}:8080");
    let (from_gateway, from_elsewhere) = futures::try_join!(
        ClientPod::start(
            &client,
            &gateway_namespace,
            "client",
            json!({ "app": "client" }),
            false
        ),
        ClientPod::start(
            &client,
            &elsewhere,
            "client",
            json!({ "app": "client" }),
            false
        ),
    )?;
    // The firewall learns a new pod's address a moment after it starts: the first
    // connection that succeeds proves the rule is there.
    wait::until(
        "the gateway's namespace to reach the ingest port",
        Duration::from_secs(60),
        || {
            let (from, target) = (&from_gateway, &ingest);
            async move { Ok(from.connect(target).await?.succeeded.then_some(())) }
        },
    )
    .await?;
    // And the other namespace's pod can connect at all (to the gateway's pod, which no
    // policy guards), so its refusal below is the tenant's policy.
    let gateway_pod = format!("{}:{}", from_gateway.ip, pods::CLIENT_PORT);
    wait::until(
        "the other platform namespace to reach a pod without policies",
        Duration::from_secs(60),
        || {
            let (from, target) = (&from_elsewhere, &gateway_pod);
            async move { Ok(from.connect(target).await?.succeeded.then_some(())) }
        },
    )
    .await?;
    let refused = from_elsewhere.connect(&ingest).await?;
    assert!(
        !refused.succeeded,
        "another platform namespace reached the exposed ingest: {}",
        refused.message
    );

    delete_and_wait(&client, &name).await?;
    for namespace in [gateway_namespace, elsewhere] {
        Api::<Namespace>::all(client.clone())
            .delete(&namespace, &DeleteParams::default())
            .await?;
    }
    Ok(())
}
