//! The finalizer: a tenant goes only after its namespace (and, later, its data) is dealt
//! with according to `deletionPolicy`.
//!
//! Talks to the API server. `Delete` needs the confirm-delete annotation; without it the
//! tenant stays Terminating with a condition that says exactly what to add.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;

use super::context::Context;
use super::status::{self, Observation, Observed, READY, Reason};
use crate::crd::{CONFIRM_DELETE_ANNOTATION, DeletionPolicy, FINALIZER, Phase, SmartRegionTenant};
use crate::metrics::ErrorLabel;
use crate::tenant::TenantName;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to add the finalizer to tenant {0}")]
    AddFinalizer(String, #[source] kube::Error),
    #[error("failed to remove the finalizer from tenant {0}")]
    RemoveFinalizer(String, #[source] kube::Error),
    #[error("failed to delete namespace {0}")]
    DeleteNamespace(String, #[source] kube::Error),
    #[error(transparent)]
    Status(#[from] status::Error),
    #[error(transparent)]
    Database(#[from] super::database::Error),
    #[error(transparent)]
    Grafana(#[from] super::grafana::Error),
}

impl Error {
    pub fn metric_label(&self) -> ErrorLabel {
        match self {
            Error::AddFinalizer(..) => ErrorLabel::AddFinalizer,
            Error::RemoveFinalizer(..) => ErrorLabel::RemoveFinalizer,
            Error::DeleteNamespace(..) => ErrorLabel::DeleteNamespace,
            Error::Status(_) => ErrorLabel::Status,
            Error::Database(error) => error.metric_label(),
            Error::Grafana(_) => ErrorLabel::Prune,
        }
    }
}

/// Adds the finalizer if it is missing (one write, once in a tenant's life).
pub async fn ensure_finalizer(client: &Client, tenant: &SmartRegionTenant) -> Result<(), Error> {
    if tenant.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(client, tenant, finalizers)
        .await
        .map_err(|source| Error::AddFinalizer(tenant.name_any(), source))
}

/// Merge patch of the finalizer list, guarded by the resourceVersion so a concurrent
/// change of the list is never overwritten.
async fn set_finalizers(
    client: &Client,
    tenant: &SmartRegionTenant,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let api: Api<SmartRegionTenant> = Api::all(client.clone());
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": tenant.resource_version(),
        }
    });
    api.patch(
        &tenant.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

pub async fn cleanup(tenant: &SmartRegionTenant, context: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    if !tenant.finalizers().iter().any(|f| f == FINALIZER) {
        context.metrics.set_phase(&name, None);
        return Ok(Action::await_change());
    }
    let confirmed = tenant.annotations().get(CONFIRM_DELETE_ANNOTATION) == Some(&name);
    if tenant.spec.deletion_policy == DeletionPolicy::Delete && !confirmed {
        let message = format!(
            "deletionPolicy is Delete, which drops the tenant's data: to confirm, add the \
             annotation {CONFIRM_DELETE_ANNOTATION}: {name} (kubectl annotate srt {name} \
             {CONFIRM_DELETE_ANNOTATION}={name}); to keep the data, set deletionPolicy: Retain"
        );
        terminating(
            context,
            tenant,
            Observed::not_ok(READY, Reason::DeletionNotConfirmed, message),
        )
        .await?;
        return Ok(Action::await_change());
    }

    // A name the CRD would refuse never got database objects.
    if let (Some(database), Ok(tenant_name)) = (&context.database, TenantName::parse(&name)) {
        let drop_data = tenant.spec.deletion_policy == DeletionPolicy::Delete;
        super::database::ensure_database_released(database, &tenant_name, drop_data).await?;
    }

    if let (Some(namespace), Some(uid)) = (&context.config.grafana_namespace, &tenant.metadata.uid)
    {
        super::grafana::ensure_removed(&context.client, namespace, &name, uid).await?;
    }

    if let Some(waiting) = ensure_namespace_gone(tenant, context).await? {
        return Ok(waiting);
    }
    remove_finalizer(tenant, context).await
}

/// Deletes the tenant's namespace, if it is the tenant's; `Some` while it is going.
async fn ensure_namespace_gone(
    tenant: &SmartRegionTenant,
    context: &Context,
) -> Result<Option<Action>, Error> {
    let namespace = context.config.namespace_for(&tenant.name_any());
    let namespaces: Api<Namespace> = Api::all(context.client.clone());
    let present = namespaces
        .get_opt(&namespace)
        .await
        .map_err(|source| Error::DeleteNamespace(namespace.clone(), source))?;
    if let Some(present) = present {
        // Only a namespace this tenant owns (by its uid, which no one can copy) is
        // deleted, and only that very namespace (a precondition on its uid); a foreign
        // one of the same name is left alone with everything in it.
        let tenant_uid = tenant.uid().unwrap_or_default();
        let ours = present
            .owner_references()
            .iter()
            .any(|owner| owner.uid == tenant_uid);
        if ours {
            if present.metadata.deletion_timestamp.is_none() {
                let params = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: present.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match namespaces.delete(&namespace, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(response)) if response.code == 404 => {}
                    Err(source) => return Err(Error::DeleteNamespace(namespace, source)),
                }
            }
            let message = format!("deleting namespace {namespace}");
            terminating(
                context,
                tenant,
                Observed::not_ok(READY, Reason::DeletingNamespace, message),
            )
            .await?;
            // The namespace watch wakes us when it is gone; this is the safety net.
            return Ok(Some(Action::requeue(Duration::from_secs(5))));
        }
    }
    Ok(None)
}

/// The last step: the tenant goes.
async fn remove_finalizer(tenant: &SmartRegionTenant, context: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    let remaining: Vec<String> = tenant
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    match set_finalizers(&context.client, tenant, remaining).await {
        Ok(()) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => {}
        Err(source) => return Err(Error::RemoveFinalizer(name, source)),
    }
    context.metrics.set_phase(&name, None);
    context.metrics.set_database_bytes(&name, None);
    context.metrics.set_maintenance(&name, None);
    context.rates.forget(&name);
    tracing::info!(tenant = %name, "tenant removed");
    Ok(Action::await_change())
}

async fn terminating(
    context: &Context,
    tenant: &SmartRegionTenant,
    ready: Observed,
) -> Result<(), Error> {
    let observation = Observation {
        phase: Phase::Terminating,
        namespace: None,
        database: None,
        usage: None,
        ingest_endpoint: None,
        read_endpoint: None,
        shared_with_me: None,
        exposure: Default::default(),
        conditions: vec![ready],
    };
    status::update(&context.client, &context.recorder, tenant, &observation).await?;
    context
        .metrics
        .set_phase(&tenant.name_any(), Some(Phase::Terminating));
    Ok(())
}
