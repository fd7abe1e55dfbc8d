//! What a Deployment's container would see, for running its binary as a host process.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

/// The environment of `container` in the Deployment `deployment`, as the kubelet would
/// give it: `secretKeyRef`s replaced by the Secret's value, `fieldRef: metadata.namespace`
/// by the namespace, `resourceFieldRef: limits.memory` by the container's limit in bytes.
/// Anything else the harness cannot resolve is an error.
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
    let spec = object
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.containers.into_iter().find(|c| c.name == container))
        .with_context(|| format!("the Deployment {deployment} has no container {container}"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut env = Vec::new();
    for variable in spec.env.unwrap_or_default() {
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
