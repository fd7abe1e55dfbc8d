//! What a Deployment's container would see, for running its binary as a host process.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

/// The environment of `container` in the Deployment `deployment`, as the kubelet would
/// give it: `secretKeyRef`s replaced by the Secret's value, `fieldRef: metadata.namespace`
/// by the namespace, `resourceFieldRef: limits.memory` by the container's limit in bytes,
/// and a path into a mounted Secret volume by a file of the same content the harness
/// writes (the database's CA bundle for `PGSSLROOTCERT`). Anything else the harness
/// cannot resolve is an error.
pub async fn container_env(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
    container: &str,
) -> Result<Vec<(String, String)>> {
    let object = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(deployment)
        .await
        .with_context(|| format!("the Deployment {namespace}/{deployment}"))?;
    let pod = object
        .spec
        .and_then(|spec| spec.template.spec)
        .with_context(|| format!("the Deployment {deployment} has no pod template"))?;
    let spec = pod
        .containers
        .iter()
        .find(|c| c.name == container)
        .cloned()
        .with_context(|| format!("the Deployment {deployment} has no container {container}"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mounted = secret_mounts(&secrets, &pod, &spec, namespace, deployment).await?;
    let env = resolve_env(&secrets, &spec, namespace).await?;
    Ok(env
        .into_iter()
        .map(|(name, value)| {
            let value = mounted
                .iter()
                .find_map(|(mount, dir)| {
                    value
                        .strip_prefix(mount.as_str())
                        .map(|rest| format!("{}{rest}", dir.display()))
                })
                .unwrap_or(value);
            (name, value)
        })
        .collect())
}

/// Writes the keys of every Secret volume `container` mounts into a directory in the
/// cluster's state directory, as the kubelet would into the pod; returns (mount path,
/// directory) pairs.
async fn secret_mounts(
    secrets: &Api<Secret>,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &k8s_openapi::api::core::v1::Container,
    namespace: &str,
    deployment: &str,
) -> Result<Vec<(String, std::path::PathBuf)>> {
    let mut mounted = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(source) = pod
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == mount.name)
            .and_then(|volume| volume.secret.clone())
        else {
            continue;
        };
        let name = source.secret_name.clone().unwrap_or_default();
        let data = secrets
            .get_opt(&name)
            .await?
            .and_then(|secret| secret.data)
            .unwrap_or_default();
        // In the cluster's state directory, so `cluster down` removes it with the rest.
        let dir = crate::paths::default_state_dir()
            .join("workloads")
            .join(format!("{namespace}-{deployment}"))
            .join(&mount.name);
        std::fs::create_dir_all(&dir)?;
        for item in source.items.iter().flatten() {
            // An optional key that is absent is left out, as the kubelet does.
            if let Some(value) = data.get(&item.key) {
                std::fs::write(dir.join(&item.path), &value.0)?;
            }
        }
        mounted.push((mount.mount_path.clone(), dir));
    }
    Ok(mounted)
}

/// The container's environment with every reference resolved (see [`container_env`]).
async fn resolve_env(
    secrets: &Api<Secret>,
    spec: &k8s_openapi::api::core::v1::Container,
    namespace: &str,
) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for variable in spec.env.clone().unwrap_or_default() {
        let value = match (variable.value, variable.value_from) {
            (Some(value), _) => value,
            (None, Some(source)) => {
                if let Some(field) = source.field_ref {
                    if field.field_path != "metadata.namespace" {
                        bail!(
                            "{}: fieldRef {} is not supported",
                            variable.name,
                            field.field_path
                        );
                    }
                    env.push((variable.name, namespace.to_string()));
                    continue;
                }
                if let Some(resource) = source.resource_field_ref {
                    ensure!(
                        resource.resource == "limits.memory",
                        "{}: resourceFieldRef {} is not supported",
                        variable.name,
                        resource.resource
                    );
                    let limit = spec
                        .resources
                        .as_ref()
                        .and_then(|resources| resources.limits.as_ref())
                        .and_then(|limits| limits.get("memory"))
                        .with_context(|| {
                            format!("{}: the container has no memory limit", variable.name)
                        })?;
                    env.push((variable.name, memory_bytes(&limit.0)?.to_string()));
                    continue;
                }
                let reference = source.secret_key_ref.with_context(|| {
                    format!(
                        "{} comes from neither a Secret nor the namespace",
                        variable.name
                    )
                })?;
                let secret = secrets.get(&reference.name).await?;
                let bytes = secret
                    .data
                    .and_then(|data| data.get(&reference.key).cloned())
                    .with_context(|| {
                        format!("Secret {} has no key {}", reference.name, reference.key)
                    })?;
                String::from_utf8(bytes.0)?
            }
            (None, None) => String::new(),
        };
        env.push((variable.name, value));
    }
    Ok(env)
}

/// A memory quantity (`256Mi`, `1Gi`, `500M`, `1048576`) in bytes, as the kubelet
/// resolves `resourceFieldRef: limits.memory`.
pub fn memory_bytes(quantity: &str) -> Result<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{quantity:?} is not a memory quantity"))?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => bail!("{quantity:?}: the harness does not read the suffix {suffix:?}"),
    };
    Ok(number * factor)
}
