//! A real Gateway API implementation on the real node: Traefik v3.6 (built from its Go
//! module by `e2e/go/traefik.sh`, packed into an image like the workspace's own binaries
//! and imported into the node's containerd), running as a pod in a platform namespace of
//! its own with a GatewayClass, a Gateway `public` whose HTTPS listener terminates TLS
//! for `*.<domain>` with a certificate of the test's own CA, and a NodePort Service, so a
//! sender on the host reaches it at the node's address as one outside the cluster would.
//!
//! Traefik reads the Gateway API objects itself, programs its routes and writes their
//! status: what the operator reads back into `ExposureReady` comes from a real
//! implementation, and requests cross a real proxy to the tenants' ingest pods.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

use crate::image::{self, App};
use crate::node::{self, NODE_ADDRESS, REAL_NODE_KEY, REGISTRY};
use crate::{Cluster, apply, gateway_api, wait};

/// Traefik's controller name, which its GatewayClass names.
pub const CONTROLLER: &str = "traefik.io/gateway-controller";
/// The Gateway's HTTPS listener and Traefik's entry point behind it: a port a non-root
/// container may bind.
pub const LISTENER: &str = "https";
const HTTPS_PORT: u16 = 8443;
const GATEWAY: &str = "public";

/// A running Traefik with its Gateway.
pub struct Gateway {
    /// The platform namespace of the pod, the Gateway and the Service.
    pub namespace: String,
    /// `*.<domain>` is what the listener serves.
    pub domain: String,
    /// The Service's node port: `https://<host>:<port>` at [`NODE_ADDRESS`].
    pub node_port: u16,
    /// The CA that signed the listener's certificate, for senders to trust.
    pub ca_file: PathBuf,
    client: Client,
}

/// The Traefik binary, built by `e2e/go/traefik.sh`.
pub fn binary() -> Result<PathBuf> {
    crate::paths::printed_path("e2e/go/traefik.sh")
}

/// The version the wrapper module requires.
fn version() -> Result<String> {
    let go_mod = crate::paths::workspace_root().join("e2e/go/traefik/go.mod");
    std::fs::read_to_string(&go_mod)?
        .lines()
        .find_map(|line| line.strip_prefix("require github.com/traefik/traefik/v3 v"))
        .map(|version| version.trim().to_string())
        .with_context(|| format!("{} requires no Traefik", go_mod.display()))
}

/// Packs the binary into an image (as `e2e/images` packs the workspace's) and imports it
/// into the real node's containerd; the image's reference.
fn import_image(cluster: &Cluster) -> Result<String> {
    let version = version()?;
    let cache = crate::paths::cache_dir().join("debs");
    let base = image::base_layer(&image::base_debs(&cache)?)?;
    let out = cluster.state_dir.join("gateway-image");
    std::fs::create_dir_all(&out)?;
    let built = image::build(
        &App {
            name: "traefik",
            binary: &binary()?,
            version: &version,
            revision: &format!("v{version}"),
            source: "https://github.com/traefik/traefik",
            created: 0,
        },
        &base,
        REGISTRY,
        &out,
    )?;
    let socket = node::Paths::new(&cluster.state_dir).containerd_socket();
    let output = Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["--namespace", "k8s.io", "images", "import", "--no-unpack"])
        .arg(&built.path)
        .output()
        .context("failed to run ctr")?;
    ensure!(
        output.status.success(),
        "ctr images import {} failed: {}",
        built.path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(format!("{REGISTRY}/traefik:{version}"))
}

/// A CA and a certificate for `*.<domain>` signed by it: (CA PEM, certificate PEM, key
/// PEM).
fn certificates(domain: &str) -> Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "smartregion-e2e-gateway-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![format!("*.{domain}")])?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("*.{domain}"));
    let certificate = params.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), certificate.pem(), key.serialize_pem()))
}

/// What Traefik's Gateway API provider reads and writes (its informers and status
/// updates, `pkg/provider/kubernetes/gateway/client.go`).
fn cluster_role(name: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": name },
        "rules": [
            { "apiGroups": [""], "resources": ["namespaces", "services", "secrets", "configmaps"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["gateway.networking.k8s.io"],
              "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes",
                            "referencegrants", "backendtlspolicies"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["gateway.networking.k8s.io"],
              "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status",
                            "grpcroutes/status", "backendtlspolicies/status"],
              "verbs": ["update"] },
        ],
    })
}

/// Traefik's pod: on the real node, restricted (non-root, no capabilities, read-only
/// root), one entry point for the Gateway's listener.
fn deployment(namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "traefik", "namespace": namespace },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": "traefik" } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": "traefik" } },
                "spec": {
                    "serviceAccountName": "traefik",
                    "nodeSelector": { REAL_NODE_KEY: "true" },
                    "tolerations": [{ "key": REAL_NODE_KEY, "operator": "Exists", "effect": "NoSchedule" }],
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": image::USER_ID,
                        "runAsGroup": image::USER_ID,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "traefik",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "args": [
                            format!("--entryPoints.{LISTENER}.address=:{HTTPS_PORT}"),
                            "--providers.kubernetesgateway=true",
                            format!("--providers.kubernetesgateway.statusAddress.ip={NODE_ADDRESS}"),
                            "--log.level=INFO",
                        ],
                        "ports": [{ "name": LISTENER, "containerPort": HTTPS_PORT }],
                        "readinessProbe": { "tcpSocket": { "port": HTTPS_PORT }, "periodSeconds": 2 },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
                    }],
                    "volumes": [{ "name": "tmp", "emptyDir": {} }],
                },
            },
        },
    })
}

/// Applies `object` (JSON) server-side.
async fn apply_json(client: &Client, object: Value) -> Result<DynamicObject> {
    apply::apply(client, &serde_json::from_value(object)?).await
}

impl Gateway {
    /// Installs the Gateway API CRDs, then Traefik serving `*.<domain>`, and waits until
    /// its Gateway is Programmed.
    pub async fn install(cluster: &Cluster, client: &Client, domain: &str) -> Result<Gateway> {
        gateway_api::install_crds(client).await?;
        let image = import_image(cluster)?;
        let namespace = crate::unique_name("gateway-system");
        let (ca, certificate, key) = certificates(domain)?;
        let ca_file = cluster.state_dir.join(format!("{namespace}-ca.pem"));
        std::fs::write(&ca_file, &ca)?;
        let role = format!("smartregion-e2e-{namespace}");
        for object in [
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace } }),
            json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": { "name": "traefik", "namespace": namespace } }),
            cluster_role(&role),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": { "name": role },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                "subjects": [{ "kind": "ServiceAccount", "name": "traefik", "namespace": namespace }],
            }),
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": { "name": "wildcard-tls", "namespace": namespace },
                "stringData": { "tls.crt": certificate, "tls.key": key },
            }),
            deployment(&namespace, &image),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "traefik", "namespace": namespace },
                "spec": {
                    "type": "NodePort",
                    "selector": { "app.kubernetes.io/name": "traefik" },
                    "ports": [{ "name": LISTENER, "port": HTTPS_PORT, "targetPort": HTTPS_PORT }],
                },
            }),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": { "name": namespace },
                "spec": { "controllerName": CONTROLLER },
            }),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": { "name": GATEWAY, "namespace": namespace },
                "spec": {
                    "gatewayClassName": namespace,
                    "listeners": [{
                        "name": LISTENER,
                        "protocol": "HTTPS",
                        "port": HTTPS_PORT,
                        "hostname": format!("*.{domain}"),
                        "tls": { "mode": "Terminate", "certificateRefs": [{ "name": "wildcard-tls" }] },
                        "allowedRoutes": { "namespaces": { "from": "All" } },
                    }],
                },
            }),
        ] {
            apply_json(client, object).await?;
        }
        let service: Service = Api::namespaced(client.clone(), &namespace)
            .get("traefik")
            .await?;
        let node_port = service
            .spec
            .and_then(|spec| spec.ports)
            .and_then(|ports| ports.first().and_then(|port| port.node_port))
            .context("the NodePort Service has no node port")?;
        let gateway = Gateway {
            namespace,
            domain: domain.to_string(),
            node_port: u16::try_from(node_port)?,
            ca_file,
            client: client.clone(),
        };
        gateway.wait_programmed().await?;
        Ok(gateway)
    }

    /// The Gateway, as the operator's `--ingest-gateway` names it.
    pub fn reference(&self) -> String {
        format!("{}/{GATEWAY}", self.namespace)
    }

    async fn wait_programmed(&self) -> Result<()> {
        let resource = gateway_api_resource("Gateway", "gateways");
        let gateways: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
        let programmed = wait::until(
            "Traefik to program the Gateway",
            Duration::from_secs(180),
            || {
                let gateways = gateways.clone();
                async move {
                    let gateway = gateways.get(GATEWAY).await?;
                    let conditions = gateway.data["status"]["conditions"].as_array().cloned();
                    Ok(conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|condition| {
                            condition["type"] == "Programmed" && condition["status"] == "True"
                        })
                        .then_some(()))
                }
            },
        )
        .await;
        if let Err(error) = programmed {
            bail!("{error:#}; Traefik's log:\n{}", self.logs().await);
        }
        Ok(())
    }

    /// The last lines of Traefik's log.
    pub async fn logs(&self) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let Ok(list) = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=traefik"))
            .await
        else {
            return "(no pods)".into();
        };
        let mut text = String::new();
        for pod in list {
            let log = pods
                .logs(
                    &pod.name_any(),
                    &kube::api::LogParams {
                        tail_lines: Some(40),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|error| format!("(no log: {error})"));
            text.push_str(&log);
        }
        text
    }

    /// POSTs `body` from the host to `https://<host>/<path>` through the gateway (TLS, the
    /// host resolved to the node), with `headers`; the status and the body.
    pub fn post(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, String)> {
        let url = format!("https://{host}:{}{path}", self.node_port);
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--max-time", "20"])
            .arg("--resolve")
            .arg(format!("{host}:{}:{NODE_ADDRESS}", self.node_port))
            .arg("--cacert")
            .arg(&self.ca_file)
            .args(["--write-out", "\n%{http_code}", "--data-binary", "@-"])
            .args(["--header", "content-type: application/json"]);
        for (name, value) in headers {
            command.arg("--header").arg(format!("{name}: {value}"));
        }
        let mut child = command
            .arg(&url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("failed to run curl")?;
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .context("curl's stdin")?
                .write_all(body.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "curl {url} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout)?;
        let (body, status) = text.rsplit_once('\n').context("curl wrote no status")?;
        Ok((status.trim().parse()?, body.to_string()))
    }

    /// Removes everything [`Gateway::install`] created (the CRDs stay, as other tests use
    /// them).
    pub async fn remove(self) -> Result<()> {
        let role = format!("smartregion-e2e-{}", self.namespace);
        let delete = DeleteParams::default();
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(&role, &delete)
            .await;
        let _ = Api::<ClusterRole>::all(self.client.clone())
            .delete(&role, &delete)
            .await;
        let resource = gateway_api_resource("GatewayClass", "gatewayclasses");
        let _ = Api::<DynamicObject>::all_with(self.client.clone(), &resource)
            .delete(&self.namespace, &delete)
            .await;
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &delete)
            .await?;
        let _ = std::fs::remove_file(&self.ca_file);
        Ok(())
    }
}

/// The API resource of a Gateway API kind.
fn gateway_api_resource(kind: &str, plural: &str) -> kube::discovery::ApiResource {
    kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind),
        plural,
    )
}
