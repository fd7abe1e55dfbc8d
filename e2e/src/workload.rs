//! What a Deployment's container would see, for running its binary as a host process.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

/// The environment of `container` in the Deployment `deployment`, as the kubelet would
/// give it: `secretKeyRef`s replaced by the Secret's value, `fieldRef: metadata.namespace`
/// by the namespace. Anything else the harness cannot resolve is an error.
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
