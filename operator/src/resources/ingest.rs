//! The tenant's ingest service: Deployment, Service and PodDisruptionBudget `ingest`, and
//! the Secret `ingest-keys` with its first API key.
//!
//! Pure builders. The env contract with the ingest binary comes from
//! `smartregion_contract::env`, so a renamed variable fails to compile here rather than
//! in a cluster. Credentials reach the pods only as `secretKeyRef`s: no value of a Secret
//! is ever copied into the Deployment; only a checksum of them is, so that new
//! credentials roll the pods.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceFieldSelector, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use smartregion_contract::env;

use super::network::INGEST_POD_LABEL;
use super::secrets::{CA_KEY, WRITER_SECRET};
use super::service_account::INGEST_SERVICE_ACCOUNT;
use super::{labels, object_meta};
use crate::config::Config;
use crate::crd::IngestFormat;
use crate::database::names::TenantDb;
use crate::tenant::Validated;

/// Name of the Deployment, the Service, the PodDisruptionBudget and the container.
pub const INGEST: &str = "ingest";
/// The Secret with the API keys that ingest accepts (`Authorization: Bearer <key>`).
pub const KEYS_SECRET: &str = "ingest-keys";
/// Its one key: API keys, one per line.
pub const KEYS_KEY: &str = "keys";
/// Pod template annotation: a checksum of the Secrets the pods read, so that new
/// credentials or keys roll the pods.
pub const SECRETS_CHECKSUM_ANNOTATION: &str = "smartregion.toscana.it/secrets-checksum";
/// Name of the container port, used by the Service and the probes.
pub const HTTP_PORT_NAME: &str = "http";
/// Port of the Service `ingest`, whatever the pods listen on.
pub const SERVICE_PORT: u16 = 8080;
/// Where the pods find the database's CA bundle (`ca.crt` of `db-writer`, when the
/// operator was given one; see `PGSSLROOTCERT`).
pub const DATABASE_CA_DIR: &str = "/etc/smartregion/database-ca";
const DATABASE_CA_VOLUME: &str = "database-ca";
/// User and group the ingest container runs as (the "nonroot" user of distroless images).
pub const RUN_AS: i64 = 65532;

/// Ingest pods wanted: none while the tenant is suspended or ingest is disabled.
pub fn ingest_replicas(tenant: &Validated) -> i32 {
    if tenant.suspended || !tenant.ingest.enabled {
        0
    } else {
        tenant.limits.ingest_replicas
    }
}

/// `http://ingest.<namespace>.svc:8080`, where the tenant's senders inside the cluster
/// reach ingest.
pub fn ingest_endpoint(tenant: &Validated) -> String {
    format!("http://{INGEST}.{}.svc:{SERVICE_PORT}", tenant.namespace)
}

/// The labels that select the ingest pods (Deployment, Service, PodDisruptionBudget and
/// the `allow-ingest` NetworkPolicy).
pub fn pod_labels(tenant: &Validated) -> BTreeMap<String, String> {
    let mut labels = labels(tenant);
    let (key, value) = INGEST_POD_LABEL;
    labels.insert(key.to_string(), value.to_string());
    labels
}

fn selector(tenant: &Validated) -> LabelSelector {
    LabelSelector {
        match_labels: Some(pod_labels(tenant)),
        ..LabelSelector::default()
    }
}

pub(super) fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub(super) fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The container's environment: the contract of `smartregion_contract::env`.
fn env(tenant: &Validated, config: &Config) -> Vec<EnvVar> {
    let schema = TenantDb::for_tenant(&tenant.name).schema;
    let mut env = vec![
        value(env::TENANT, tenant.name.to_string()),
        value(env::SCHEMA, schema),
        value(env::LISTEN, format!("0.0.0.0:{}", config.ingest_port)),
        value(env::RATE, tenant.limits.ingest_rate.to_string()),
        // Ingest refuses items older than the retention would keep.
        value(
            env::RETENTION_DAYS,
            tenant.limits.retention_days.to_string(),
        ),
        // The memory budget of requests in flight is a share of the container's limit.
        EnvVar {
            name: env::MEMORY_LIMIT.to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some(INGEST.to_string()),
                    resource: "limits.memory".to_string(),
                    divisor: None,
                }),
                ..EnvVarSource::default()
            }),
        },
    ];
    if !tenant.ingest.formats.is_empty() {
        let formats: Vec<&str> = tenant
            .ingest
            .formats
            .iter()
            .copied()
            .map(IngestFormat::as_str)
            .collect();
        env.push(value(env::FORMATS, formats.join(",")));
    }
    // libpq's names, one to one with the keys of the writer's Secret.
    for (name, key) in [
        (env::PGHOST, "host"),
        (env::PGPORT, "port"),
        (env::PGDATABASE, "dbname"),
        (env::PGUSER, "user"),
        (env::PGPASSWORD, "password"),
        (env::PGSSLMODE, "sslmode"),
    ] {
        env.push(from_secret(name, WRITER_SECRET, key));
    }
    // Read only with sslmode verify-full, which needs it; the file is there whenever the
    // operator was given the CA bundle.
    env.push(value(
        env::PGSSLROOTCERT,
        format!("{DATABASE_CA_DIR}/{CA_KEY}"),
    ));
    env.push(from_secret(env::API_KEYS, KEYS_SECRET, KEYS_KEY));
    if let Some(mqtt) = &tenant.ingest.mqtt {
        env.push(value(env::MQTT_URL, mqtt.url.clone()));
        // The CRD refuses commas in topic filters, so the list survives the join.
        env.push(value(env::MQTT_TOPICS, mqtt.topics.join(",")));
        if let Some(secret) = &mqtt.credentials_secret {
            env.push(from_secret(env::MQTT_USERNAME, secret, "username"));
            env.push(from_secret(env::MQTT_PASSWORD, secret, "password"));
        }
    }
    env.push(value(env::LOG_FORMAT, "json"));
    env
}

pub(super) fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

/// Pod Security `restricted`, which the tenant namespace enforces: the pod's part.
pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Pod Security `restricted`: the container's part, and a read-only root.
pub(super) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        ..SecurityContext::default()
    }
}

/// Only the CA bundle of the database Secret `secret`, never the credentials, as a file;
/// optional, since without verify-full the Secret has no `ca.crt`.
pub(super) fn database_ca_volume(secret: &str) -> Volume {
    Volume {
        name: DATABASE_CA_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![KeyToPath {
                key: CA_KEY.into(),
                path: CA_KEY.into(),
                mode: None,
            }]),
            optional: Some(true),
            default_mode: Some(0o444),
        }),
        ..Volume::default()
    }
}

pub(super) fn database_ca_mount() -> VolumeMount {
    VolumeMount {
        name: DATABASE_CA_VOLUME.into(),
        mount_path: DATABASE_CA_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Seconds before a new ingest pod's first readiness check.
pub const READY_DELAY_SECONDS: i32 = 3;

/// Seconds a stopping ingest pod keeps serving before it gets SIGTERM: the time the
/// endpoint controller and every node's kube-proxy take to stop sending it new
/// connections once it is terminating. Kubernetes' own `sleep` action: the image has no
/// shell to run one.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// The whole stop of a pod: the pre-stop sleep, then up to the login roles' statement
/// timeout (30 s) for requests in flight to commit (the ingest drains them on SIGTERM).
pub const TERMINATION_GRACE_SECONDS: i64 = PRE_STOP_SLEEP_SECONDS + 30;

/// Deployment `ingest`. `secrets_checksum` (see `secrets_checksum`)
/// goes into the pod template, so the pods roll whenever the Secrets they read change.
/// (Long: one object literal, the pod spec as Kubernetes reads it; split, it would be
/// read in pieces.)
pub fn ingest_deployment(
    tenant: &Validated,
    config: &Config,
    secrets_checksum: &str,
) -> Deployment {
    let resources = BTreeMap::from([
        ("cpu".to_string(), tenant.limits.container_cpu.quantity()),
        (
            "memory".to_string(),
            tenant.limits.container_memory.quantity(),
        ),
    ]);
    let container = Container {
        name: INGEST.into(),
        image: Some(config.ingest_image.clone()),
        image_pull_policy: Some(config.ingest_image_pull_policy.as_str().into()),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: i32::from(config.ingest_port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env(tenant, config)),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(probe("/healthz")),
        // /readyz fails while the database is unreachable, so the Service stops sending
        // data that could not be committed anyway. A new pod is first Ready a few seconds
        // after it starts: the node's network-policy engine programs the rules that
        // admit its senders asynchronously (kube-router, in the local cluster, refused
        // connections to a pod Ready 0.6 s earlier under load), and Ready puts it in the
        // Service at once.
        // Checked every 2 s (it reads a flag, no query), so Ready follows soon after.
        readiness_probe: Some(Probe {
            initial_delay_seconds: Some(READY_DELAY_SECONDS),
            period_seconds: Some(2),
            ..probe("/readyz")
        }),
        // A roll-out (a rotation, say) must not refuse a request: requests keep arriving
        // for a moment after the pod is marked terminating.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![database_ca_mount()]),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(INGEST_SERVICE_ACCOUNT.into()),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        // Ingest never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        containers: vec![container],
        node_selector: (!config.ingest_placement.node_selector.is_empty())
            .then(|| config.ingest_placement.node_selector.clone()),
        tolerations: (!config.ingest_placement.tolerations.is_empty())
            .then(|| config.ingest_placement.tolerations.clone()),
        volumes: Some(vec![database_ca_volume(WRITER_SECRET)]),
        ..PodSpec::default()
    };
    rolling_deployment(
        tenant,
        INGEST,
        ingest_replicas(tenant),
        pod_labels(tenant),
        secrets_checksum,
        pod,
    )
}

/// Deployment `name` of `replicas` pods labelled `labels`, running `pod`, with the
/// checksum of the Secrets they read in the pod template. Never below the wanted number
/// of pods while rolling: a new pod must be ready before an old one goes.
pub(super) fn rolling_deployment(
    tenant: &Validated,
    name: &str,
    replicas: i32,
    labels: BTreeMap<String, String>,
    secrets_checksum: &str,
    pod: PodSpec,
) -> Deployment {
    Deployment {
        metadata: object_meta(tenant, name, true),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        SECRETS_CHECKSUM_ANNOTATION.to_string(),
                        secrets_checksum.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Service `ingest`: port 8080 inside the cluster, to the pods' `http` port.
pub fn ingest_service(tenant: &Validated) -> Service {
    Service {
        metadata: object_meta(tenant, INGEST, true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(pod_labels(tenant)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: i32::from(SERVICE_PORT),
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// PodDisruptionBudget `ingest`, only when more than one pod runs: a voluntary
/// disruption (a node drain) then leaves at least one pod serving. With one pod a budget
/// of one would block drains forever.
pub fn ingest_pdb(tenant: &Validated) -> Option<PodDisruptionBudget> {
    (ingest_replicas(tenant) > 1).then(|| PodDisruptionBudget {
        metadata: object_meta(tenant, INGEST, true),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(selector(tenant)),
            // Pods that are not ready (the database is down) protect nothing: they may
            // always be evicted, so they never block a drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// Secret `ingest-keys` with its first API key. Created once and then owned by the
/// tenant's admins, who add keys (one per line) to rotate them; never applied again.
pub fn ingest_keys_secret(tenant: &Validated, key: &str) -> Secret {
    Secret {
        metadata: object_meta(tenant, KEYS_SECRET, true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEYS_KEY.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// SHA-256 over the data of `secrets` (name, then keys in sorted order, every item length
/// prefixed so no two different contents hash alike), as lowercase hex. One-way: the
/// values cannot be recovered from it, and a change of any value changes it.
pub fn secrets_checksum(secrets: &[&Secret]) -> String {
    let mut hash = Sha256::new();
    let mut item = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    for secret in secrets {
        item(
            secret
                .metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        );
        // A BTreeMap: sorted by key.
        for (key, value) in secret.data.iter().flatten() {
            item(key.as_bytes());
            item(&value.0);
        }
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    fn checksum_secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_checksum_moves_with_any_value_and_shows_none() {
        let writer = checksum_secret(
            "db-writer",
            &[("password", "s3cret-pw"), ("user", "t_prato_writer")],
        );
        let keys = checksum_secret("ingest-keys", &[("keys", "key-one")]);
        let base = secrets_checksum(&[&writer, &keys]);
        assert_eq!(base.len(), 64);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(base, secrets_checksum(&[&writer.clone(), &keys.clone()]));
        let rotated = checksum_secret(
            "db-writer",
            &[("password", "n3w-pw"), ("user", "t_prato_writer")],
        );
        assert_ne!(base, secrets_checksum(&[&rotated, &keys]));
        let more_keys = checksum_secret("ingest-keys", &[("keys", "key-one\nkey-two")]);
        assert_ne!(base, secrets_checksum(&[&writer, &more_keys]));
        // Moving bytes between a key and its value is a different content.
        let shifted = checksum_secret("ingest-keys", &[("keysk", "ey-one")]);
        assert_ne!(base, secrets_checksum(&[&writer, &shifted]));
        assert!(!base.contains("s3cret") && !base.contains("key-one"));
    }

    use super::*;
    use crate::config::ImagePullPolicy;
    use crate::crd::{MqttSource, Tier};
    use crate::test_support::tenant;
    use crate::test_support::validate;

    fn validated(tenant: crate::test_support::TenantBuilder) -> Validated {
        validate(&tenant.build(), &Config::default()).expect("valid tenant")
    }

    fn deployment(tenant: &Validated) -> Deployment {
        ingest_deployment(tenant, &Config::default(), "checksum-1")
    }

    fn pod_spec(deployment: &Deployment) -> PodSpec {
        deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .expect("pod spec")
    }

    fn container(deployment: &Deployment) -> Container {
        pod_spec(deployment).containers.remove(0)
    }

    fn env_var(deployment: &Deployment, name: &str) -> Option<EnvVar> {
        container(deployment)
            .env
            .unwrap_or_default()
            .into_iter()
            .find(|var| var.name == name)
    }

    fn replicas(deployment: &Deployment) -> i32 {
        deployment.spec.as_ref().unwrap().replicas.unwrap()
    }

    #[test]
    fn pods_satisfy_pod_security_restricted() {
        let deployment = deployment(&validated(tenant("prato")));
        let pod = pod_spec(&deployment);
        let pod_security = pod.security_context.clone().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.run_as_user, Some(65532));
        assert_eq!(pod_security.run_as_group, Some(65532));
        assert_eq!(
            pod_security.seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("ingest"));
        assert!(pod.host_network.is_none());
        // Restricted allows Secret volumes; this one exposes only the CA bundle.
        let volumes = pod.volumes.clone().unwrap();
        assert_eq!(volumes.len(), 1);
        let secret = volumes[0].secret.clone().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("db-writer"));
        let items = secret.items.unwrap();
        assert_eq!((items.len(), items[0].key.as_str()), (1, "ca.crt"));
        let security = container(&deployment).security_context.unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.privileged, None);
        let capabilities = security.capabilities.unwrap();
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(capabilities.add, None);
    }

    #[test]
    fn credentials_come_from_the_right_secret_keys_and_are_never_copied() {
        let deployment = deployment(&validated(tenant("prato")));
        let reference = |name: &str| {
            let var = env_var(&deployment, name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(var.value, None, "{name} must not hold a value");
            let selector = var.value_from.unwrap().secret_key_ref.unwrap();
            (selector.name, selector.key)
        };
        for (name, key) in [
            ("PGHOST", "host"),
            ("PGPORT", "port"),
            ("PGDATABASE", "dbname"),
            ("PGUSER", "user"),
            ("PGPASSWORD", "password"),
            ("PGSSLMODE", "sslmode"),
        ] {
            assert_eq!(reference(name), ("db-writer".into(), key.into()), "{name}");
        }
        assert_eq!(
            reference("SMARTREGION_INGEST_API_KEYS"),
            ("ingest-keys".into(), "keys".into())
        );
        let plain = |name: &str| env_var(&deployment, name).and_then(|var| var.value);
        assert_eq!(plain("SMARTREGION_TENANT").as_deref(), Some("prato"));
        assert_eq!(plain("SMARTREGION_SCHEMA").as_deref(), Some("t_prato"));
        assert_eq!(plain("SMARTREGION_INGEST_RATE").as_deref(), Some("500"));
        assert_eq!(plain("SMARTREGION_LOG_FORMAT").as_deref(), Some("json"));
        assert_eq!(plain("SMARTREGION_INGEST_FORMATS"), None, "all formats");
    }

    #[test]
    fn the_retention_reaches_ingest_as_days() {
        let retention = |tenant: &Validated| {
            env_var(&deployment(tenant), env::RETENTION_DAYS)
                .and_then(|var| var.value)
                .expect("the retention is passed as a value")
        };
        let by_tier = validated(tenant("prato").tier(Tier::Large));
        assert_eq!(
            retention(&by_tier),
            by_tier.limits.retention_days.to_string()
        );
        let mut own = tenant("prato").build();
        own.spec.database = Some(crate::crd::DatabaseSpec {
            retention_days: Some(30),
            ..Default::default()
        });
        let own = validate(&own, &Config::default()).expect("valid tenant");
        assert_eq!(retention(&own), "30");
    }

    #[test]
    fn the_schema_follows_the_database_convention() {
        let deployment = deployment(&validated(tenant("unione-mugello")));
        let schema = env_var(&deployment, "SMARTREGION_SCHEMA").unwrap().value;
        assert_eq!(schema.as_deref(), Some("t_unione_mugello"));
    }

    /// The environment parses with the ingest binary's own command line: every variable is
    /// one it knows, and the values are ones it accepts.
    #[test]
    fn mqtt_credentials_come_from_their_secret() {
        let deployment = ingest_deployment(
            &validated(tenant("prato").ingest(|ingest| {
                ingest.formats = vec![IngestFormat::SenML, IngestFormat::Measurements];
                ingest.mqtt = Some(MqttSource {
                    url: "mqtts://broker.example.it".into(),
                    topics: vec!["prato/+/air".into(), "prato/traffic/#".into()],
                    credentials_secret: Some("mqtt-login".into()),
                });
            })),
            &Config::default(),
            "c",
        );
        let password = env_var(&deployment, "SMARTREGION_INGEST_MQTT_PASSWORD").unwrap();
        assert_eq!(password.value, None, "never copied");
        let reference = password.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("mqtt-login", "password")
        );
        // That the ingest binary reads exactly this environment is checked where both
        // binaries' crates are at hand: e2e/tests/offline/contract.rs.
    }

    #[test]
    fn without_mqtt_the_pods_subscribe_to_nothing() {
        let deployment = deployment(&validated(tenant("prato")));
        assert!(env_var(&deployment, "SMARTREGION_INGEST_MQTT_URL").is_none());
        assert!(env_var(&deployment, "SMARTREGION_INGEST_MQTT_USERNAME").is_none());
    }

    #[test]
    fn formats_are_spelled_as_the_crd_spells_them_in_a_stable_order() {
        let with = |formats: Vec<IngestFormat>| {
            let deployment = deployment(&validated(
                tenant("prato").ingest(|ingest| ingest.formats = formats),
            ));
            env_var(&deployment, "SMARTREGION_INGEST_FORMATS").and_then(|var| var.value)
        };
        assert_eq!(
            with(vec![IngestFormat::SenML, IngestFormat::NgsiV2]).as_deref(),
            Some("NgsiV2,SenML")
        );
        assert_eq!(
            with(vec![
                IngestFormat::NgsiV2,
                IngestFormat::Measurements,
                IngestFormat::SenML
            ])
            .as_deref(),
            Some("Measurements,NgsiV2,SenML")
        );
    }

    #[test]
    fn replicas_follow_the_tier_and_the_spec_and_are_zero_when_stopped() {
        assert_eq!(replicas(&deployment(&validated(tenant("prato")))), 1);
        let medium = validated(tenant("prato").tier(Tier::Medium));
        assert_eq!(replicas(&deployment(&medium)), 2);
        let four = validated(tenant("prato").ingest(|ingest| ingest.replicas = Some(4)));
        assert_eq!(replicas(&deployment(&four)), 4);
        let suspended = validated(tenant("prato").tier(Tier::Medium).suspended());
        assert_eq!(replicas(&deployment(&suspended)), 0);
        let disabled = validated(tenant("prato").ingest(|ingest| ingest.enabled = false));
        assert_eq!(replicas(&deployment(&disabled)), 0);
    }

    #[test]
    fn a_pdb_only_when_more_than_one_pod_runs() {
        assert!(ingest_pdb(&validated(tenant("prato"))).is_none());
        let medium = validated(tenant("prato").tier(Tier::Medium));
        let pdb = ingest_pdb(&medium).expect("two pods get a budget");
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.unwrap().match_labels,
            deployment(&medium).spec.unwrap().selector.match_labels
        );
        let suspended = validated(tenant("prato").tier(Tier::Medium).suspended());
        assert!(ingest_pdb(&suspended).is_none(), "no pods, no budget");
    }

    #[test]
    fn a_stopping_pod_keeps_serving_until_its_endpoints_are_gone_then_drains() {
        let pod = pod_spec(&deployment(&validated(tenant("prato"))));
        let pre_stop = pod.containers[0]
            .lifecycle
            .clone()
            .and_then(|lifecycle| lifecycle.pre_stop)
            .expect("a preStop action");
        assert_eq!(pre_stop.sleep.map(|sleep| sleep.seconds), Some(5));
        assert!(pre_stop.exec.is_none(), "the image has no shell");
        assert_eq!(pod.termination_grace_period_seconds, Some(35));
    }

    #[test]
    fn the_checksum_annotation_carries_the_checksum() {
        let tenant = validated(tenant("prato"));
        let annotation = |checksum: &str| {
            ingest_deployment(&tenant, &Config::default(), checksum)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[SECRETS_CHECKSUM_ANNOTATION]
                .clone()
        };
        assert_eq!(annotation("aaaa"), "aaaa");
        assert_ne!(annotation("aaaa"), annotation("bbbb"));
        let a = ingest_deployment(&tenant, &Config::default(), "aaaa");
        let b = ingest_deployment(&tenant, &Config::default(), "bbbb");
        let mut b_as_a = b.clone();
        b_as_a.spec.as_mut().unwrap().template.metadata = a.spec.clone().unwrap().template.metadata;
        assert_eq!(a, b_as_a, "nothing else depends on the checksum");
    }

    #[test]
    fn the_image_and_pull_policy_come_from_the_configuration() {
        let tenant = validated(tenant("prato"));
        let default = container(&ingest_deployment(&tenant, &Config::default(), "c"));
        assert_eq!(
            default.image.as_deref(),
            Some(concat!(
                "ghcr.io/regione-toscana/smartregion-ingest:",
                env!("CARGO_PKG_VERSION")
            ))
        );
        assert_eq!(default.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(default.args, None);
        let config = Config {
            ingest_image: "registry.example.it/ingest@sha256:0123".into(),
            ingest_image_pull_policy: ImagePullPolicy::Always,
            ..Config::default()
        };
        let set = container(&ingest_deployment(&tenant, &config, "c"));
        assert_eq!(
            set.image.as_deref(),
            Some("registry.example.it/ingest@sha256:0123")
        );
        assert_eq!(set.image_pull_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn the_pods_go_where_the_placement_says_and_anywhere_without_one() {
        let tenant = validated(tenant("prato"));
        let anywhere = pod_spec(&ingest_deployment(&tenant, &Config::default(), "c"));
        assert_eq!((anywhere.node_selector, anywhere.tolerations), (None, None));
        let config = Config {
            ingest_placement: crate::config::Placement {
                node_selector: [("pool".to_string(), "ingest".to_string())].into(),
                tolerations: vec![crate::config::parse_toleration("dedicated:NoSchedule").unwrap()],
            },
            ..Config::default()
        };
        let placed = pod_spec(&ingest_deployment(&tenant, &config, "c"));
        assert_eq!(placed.node_selector.unwrap()["pool"], "ingest");
        let toleration = &placed.tolerations.unwrap()[0];
        assert_eq!(toleration.key.as_deref(), Some("dedicated"));
        assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));
    }

    #[test]
    fn pods_service_probes_and_network_policy_agree_on_labels_and_ports() {
        let tenant = validated(tenant("prato").tier(Tier::Large));
        let deployment = deployment(&tenant);
        let spec = deployment.spec.clone().unwrap();
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        let selected = spec.selector.match_labels.unwrap();
        assert!(selected.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(pod_labels["app.kubernetes.io/name"], "ingest");
        assert_eq!(pod_labels["smartregion.toscana.it/tenant"], "prato");
        let service = ingest_service(&tenant);
        let service_spec = service.spec.unwrap();
        assert_eq!(service_spec.selector.unwrap(), selected);
        let port = &service_spec.ports.unwrap()[0];
        assert_eq!(port.port, 8080);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        let container = container(&deployment);
        assert_eq!(container.ports.unwrap()[0].name.as_deref(), Some("http"));
        for probe in [container.liveness_probe, container.readiness_probe] {
            let http = probe.unwrap().http_get.unwrap();
            assert_eq!(http.port, IntOrString::String("http".into()));
        }
        let resources = container.resources.unwrap();
        assert_eq!(
            resources.requests.unwrap()["cpu"].0,
            tenant.limits.container_cpu.as_str()
        );
        assert_eq!(
            resources.limits.unwrap()["memory"].0,
            tenant.limits.container_memory.as_str()
        );
        let strategy = spec.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(strategy.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(ingest_endpoint(&tenant), "http://ingest.srt-prato.svc:8080");
    }

    #[test]
    fn the_keys_secret_holds_the_key_under_keys() {
        let tenant = validated(tenant("prato"));
        let secret = ingest_keys_secret(&tenant, "k1");
        assert_eq!(secret.metadata.name.as_deref(), Some("ingest-keys"));
        assert_eq!(secret.data.unwrap()["keys"].0, b"k1");
        assert_eq!(
            secret.metadata.owner_references.unwrap()[0].uid,
            "uid-prato"
        );
    }
}
