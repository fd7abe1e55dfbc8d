//! The tenant's read service (docs/read-api.md): Deployment and Service `read`, and the
//! Secret `read-keys` with its first API key. The ingest image's other mode
//! (`smartregion-ingest read`), with the reader's login only: the writer's Secret is
//! never referenced.
//!
//! Pure builders, hardened as ingest is (`super::ingest`): Pod Security `restricted`, a
//! read-only root, no service account token, credentials only as `secretKeyRef`s, a
//! checksum of the Secrets it reads so new credentials or keys roll the pod.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, Probe, ResourceRequirements, Secret, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smartregion_contract::env;

use super::ingest::{
    DATABASE_CA_DIR, HTTP_PORT_NAME, container_security, database_ca_mount, database_ca_volume,
    from_secret, pod_security, probe, rolling_deployment, value,
};
use super::network::READ_POD_LABEL;
use super::secrets::{CA_KEY, READER_SECRET};
use super::service_account::INGEST_SERVICE_ACCOUNT;
use super::{labels, object_meta};
use crate::config::Config;
use crate::database::names::TenantDb;
use crate::tenant::Validated;

/// Name of the Deployment, the Service and the container.
pub const READ: &str = "read";
/// The Secret with the API keys the read service accepts (`Authorization: Bearer <key>`).
pub const READ_KEYS_SECRET: &str = "read-keys";
/// Its one key: API keys, one per line.
pub const KEYS_KEY: &str = "keys";
/// Port the pods listen on, and the Service's.
pub const READ_PORT: u16 = env::READ_PORT;

/// Read pods wanted: one, none while the tenant is suspended or the service disabled.
pub fn read_replicas(tenant: &Validated) -> i32 {
    if tenant.suspended || !tenant.read_enabled {
        0
    } else {
        1
    }
}

/// `http://read.<namespace>.svc:8081`, where the tenant's clients inside the cluster
/// reach it.
pub fn read_endpoint(tenant: &Validated) -> String {
    format!("http://{READ}.{}.svc:{READ_PORT}", tenant.namespace)
}

/// The base of the read service's URLs as its clients use them: the tenant's exposed
/// host where ingest is exposed, else the in-cluster endpoint.
pub fn public_url(tenant: &Validated, config: &Config) -> String {
    match (config.exposure.as_ref(), tenant.ingest.enabled) {
        (Some(exposure), true) => format!("https://{}", super::exposure::host(tenant, exposure)),
        _ => read_endpoint(tenant),
    }
}

/// The labels that select the read pods (Deployment, Service, the `allow-read`
/// NetworkPolicy).
pub fn pod_labels(tenant: &Validated) -> BTreeMap<String, String> {
    let mut labels = labels(tenant);
    let (key, value) = READ_POD_LABEL;
    labels.insert(key.to_string(), value.to_string());
    labels
}

/// The container's environment: the contract of `smartregion_contract::env`, the
/// database's from `db-reader`.
fn env(tenant: &Validated, config: &Config) -> Vec<EnvVar> {
    let mut env = vec![
        value(env::TENANT, tenant.name.to_string()),
        value(env::SCHEMA, TenantDb::for_tenant(&tenant.name).schema),
        value(env::READ_LISTEN, format!("0.0.0.0:{READ_PORT}")),
        value(env::PUBLISHER_NAME, tenant.display_name.clone()),
        value(env::READ_PUBLIC_URL, public_url(tenant, config)),
    ];
    if let Some(code) = &tenant.ipa_code {
        env.push(value(env::PUBLISHER_IPA_CODE, code.clone()));
    }
    for (name, key) in [
        (env::PGHOST, "host"),
        (env::PGPORT, "port"),
        (env::PGDATABASE, "dbname"),
        (env::PGUSER, "user"),
        (env::PGPASSWORD, "password"),
        (env::PGSSLMODE, "sslmode"),
    ] {
        env.push(from_secret(name, READER_SECRET, key));
    }
    env.push(value(
        env::PGSSLROOTCERT,
        format!("{DATABASE_CA_DIR}/{CA_KEY}"),
    ));
    env.push(from_secret(env::READ_API_KEYS, READ_KEYS_SECRET, KEYS_KEY));
    env.push(value(env::LOG_FORMAT, "json"));
    env
}

/// Deployment `read`: one pod of the ingest image in its read mode.
pub fn read_deployment(tenant: &Validated, config: &Config, secrets_checksum: &str) -> Deployment {
    let resources = BTreeMap::from([
        ("cpu".to_string(), tenant.limits.container_cpu.quantity()),
        (
            "memory".to_string(),
            tenant.limits.container_memory.quantity(),
        ),
    ]);
    let container = Container {
        name: READ.into(),
        image: Some(config.ingest_image.clone()),
        image_pull_policy: Some(config.ingest_image_pull_policy.as_str().into()),
        args: Some(vec!["read".into()]),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: i32::from(READ_PORT),
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
        // /readyz asks the database (one `SELECT 1`): not every second.
        readiness_probe: Some(Probe {
            period_seconds: Some(10),
            ..probe("/readyz")
        }),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![database_ca_mount()]),
        ..Container::default()
    };
    let pod = PodSpec {
        // The ingest pods' account: no token is mounted, it grants nothing.
        service_account_name: Some(INGEST_SERVICE_ACCOUNT.into()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        containers: vec![container],
        node_selector: (!config.ingest_placement.node_selector.is_empty())
            .then(|| config.ingest_placement.node_selector.clone()),
        tolerations: (!config.ingest_placement.tolerations.is_empty())
            .then(|| config.ingest_placement.tolerations.clone()),
        volumes: Some(vec![database_ca_volume(READER_SECRET)]),
        ..PodSpec::default()
    };
    rolling_deployment(
        tenant,
        READ,
        read_replicas(tenant),
        pod_labels(tenant),
        secrets_checksum,
        pod,
    )
}

/// Service `read`: port 8081 inside the cluster, to the pod's `http` port.
pub fn read_service(tenant: &Validated) -> Service {
    Service {
        metadata: object_meta(tenant, READ, true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(pod_labels(tenant)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: i32::from(READ_PORT),
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Secret `read-keys` with its first API key. Created once and then owned by the
/// tenant's admins, who add keys (one per line) to rotate them; never applied again.
pub fn read_keys_secret(tenant: &Validated, key: &str) -> Secret {
    Secret {
        metadata: object_meta(tenant, READ_KEYS_SECRET, true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEYS_KEY.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{tenant, validate};

    fn deployment() -> Deployment {
        let tenant = validate(&tenant("prato").build(), &Config::default()).unwrap();
        read_deployment(&tenant, &Config::default(), "checksum")
    }

    #[test]
    fn the_read_pod_holds_the_readers_login_and_never_the_writers() {
        let deployment = deployment();
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.args.as_deref(), Some(&["read".to_string()][..]));
        let env = container.env.clone().unwrap();
        let text = serde_json::to_string(&pod).unwrap();
        assert!(!text.contains("db-writer"), "{text}");
        assert!(!text.contains("ingest-keys"), "{text}");
        for name in ["PGUSER", "PGPASSWORD", "PGHOST"] {
            let var = env.iter().find(|var| var.name == name).unwrap();
            assert_eq!(var.value, None, "{name} is not copied");
            let selector = var.value_from.clone().unwrap().secret_key_ref.unwrap();
            assert_eq!(selector.name, "db-reader");
        }
        let keys = env
            .iter()
            .find(|var| var.name == env::READ_API_KEYS)
            .unwrap();
        let selector = keys.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("read-keys", "keys")
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }

    #[test]
    fn suspended_or_disabled_runs_no_read_pod() {
        let config = Config::default();
        let suspended = validate(&tenant("prato").suspended().build(), &config).unwrap();
        assert_eq!(read_replicas(&suspended), 0);
        let mut disabled = tenant("prato").build();
        disabled.spec.read = Some(crate::crd::ReadSpec { enabled: false });
        assert_eq!(read_replicas(&validate(&disabled, &config).unwrap()), 0);
        assert_eq!(
            read_replicas(&validate(&tenant("prato").build(), &config).unwrap()),
            1
        );
    }
}
