//! `smartregion-operator run`: start-up checks, leader election, the HTTP server for
//! metrics and health, and the controller with its watches.
//!
//! Children of the cluster-scoped tenant are mapped back to it by the tenant label:
//! `Controller::owns` cannot map namespaced children to a cluster-scoped owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{debug, info, warn};

use crate::cli::RunArgs;
use crate::config::{Config, Exposure, ExposureVia, Placement, Tiers};
use crate::crd::SmartRegionTenant;
use crate::database::connect::{Database, Settings};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};

pub async fn run(args: RunArgs) -> Result<()> {
    let config = config_from(&args)?;
    let client = Client::try_default()
        .await
        .context("failed to configure a Kubernetes client (in-cluster or KUBECONFIG)")?;
    check_crd_installed(&client).await?;
    if let Some(Exposure {
        via: ExposureVia::Gateway(_),
        ..
    }) = &config.exposure
    {
        check_gateway_api_installed(&client).await?;
    }
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let server = serve(args.metrics_address, metrics.clone(), ready.clone()).await?;
    let identity = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "smartregion-operator".into()),
        std::process::id()
    );
    let leadership = match args.leader_election {
        true => Some(become_leader(&client, &args, &identity, &ready).await?),
        false => None,
    };
    ready.store(true, Ordering::Relaxed);
    let database = database_from(&args, &metrics).await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "smartregion-operator".into(),
            instance: Some(identity),
        },
    );
    let context = Arc::new(Context::new(
        client.clone(),
        config,
        recorder,
        metrics,
        database,
        Duration::from_secs(args.requeue_seconds),
    ));
    let tenants = match &args.tenant_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let controller = controller(client, context, tenants, args.concurrency);
    let result = run_while_leader(controller, leadership).await;
    server.abort();
    if result.is_ok() {
        info!("stopped");
    }
    result
}

/// The operator's configuration from its command line (and the tiers file).
fn config_from(args: &RunArgs) -> Result<Config> {
    let config = Config {
        namespace_prefix: args.namespace_prefix.clone(),
        tiers: match &args.tiers_file {
            Some(path) => Tiers::from_file(path)?,
            None => Tiers::default(),
        },
        database_address: args.database_address,
        database_port: args.database_port,
        ingest_port: args.ingest_port,
        ingest_image: args.ingest_image.clone(),
        ingest_image_pull_policy: args.ingest_image_pull_policy,
        ingest_placement: Placement {
            node_selector: args.ingest_node_selector.iter().cloned().collect(),
            tolerations: args.ingest_tolerations.clone(),
        },
        exposure: Exposure::from_flags(&args.exposure_flags())?,
        grafana_namespace: args.grafana_namespace.clone(),
    };
    config.check()?;
    Ok(config)
}

/// The watch on the leader Lease, once this replica holds it. Standby replicas are ready
/// meanwhile: they are healthy and waiting.
async fn become_leader(
    client: &Client,
    args: &RunArgs,
    identity: &str,
    ready: &AtomicBool,
) -> Result<Leadership> {
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(identity)
        .with_duration(args.lease_seconds)
        .with_grace(args.lease_seconds.div_ceil(3).max(1))
        .build()
        .await
        .context("failed to set up leader election")?;
    let (mut channel, task) = manager.watch().await;
    ready.store(true, Ordering::Relaxed);
    info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "waiting to become the leader");
    while !*channel.borrow_and_update() {
        channel.changed().await.context("leader election stopped")?;
    }
    info!(%identity, "became the leader");
    Ok((channel, task))
}

type Leadership = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
);

/// The shared database from `--database-url`, checked at start; `None` without one.
async fn database_from(args: &RunArgs, metrics: &Metrics) -> Result<Option<Database>> {
    let Some(url) = &args.database_url else {
        warn!("no --database-url: managing only the Kubernetes side of tenants");
        return Ok(None);
    };
    let database = Database::new(&Settings {
        url: url.clone(),
        sslmode: args.database_sslmode,
        ca_file: args.database_ca_file.clone(),
        public_host: args.database_public_host.clone(),
        pool_size: usize::from(args.database_pool_size),
        storage: args.database_storage,
        insecure: args.database_insecure,
        channel_binding: args.database_channel_binding,
    })?;
    report_database_checks(&database, metrics).await;
    Ok(Some(database))
}

/// Runs the controller, and stops at once when the Lease is lost: another replica may
/// already be reconciling.
async fn run_while_leader(
    controller: impl std::future::Future<Output = ()>,
    leadership: Option<Leadership>,
) -> Result<()> {
    let Some((mut channel, _task)) = leadership else {
        controller.await;
        return Ok(());
    };
    let lost = async move {
        while *channel.borrow_and_update() {
            if channel.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = controller => Ok(()),
        () = lost => bail!("lost the leader Lease; exiting so that only one replica reconciles"),
    }
}

/// Checks at start what the operator needs of the database and what in it would let a
/// tenant reach past its schema or quota (`database::checks`), and says each finding
/// with the statement that fixes it. Never fatal: a database that is down now is
/// waited for by the reconciles, which report their own errors.
async fn report_database_checks(database: &Database, metrics: &Metrics) {
    use crate::database::checks::{self, Kind};
    let connection = match database.pool.get().await {
        Ok(connection) => connection,
        Err(error) => {
            warn!(%error, "the database is not reachable at start; its checks wait for the next start");
            return;
        }
    };
    let names = connection
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)));
    let (admin, dbname) = names.unwrap_or_else(|_| ("<admin>".into(), "<database>".into()));
    let findings = checks::run(&connection).await;
    for check in checks::CHECKS {
        let finding = findings.iter().find(|f| f.check.name == check.name);
        metrics.set_database_check(check.name, finding.is_none());
        let Some(finding) = finding else { continue };
        let fix = checks::fix(check, &admin, &dbname).join("; ");
        let kind: &'static str = check.kind.into();
        match (&finding.unknown, check.kind) {
            (Some(error), _) => {
                warn!(check = check.name, kind, %error, "could not check the database")
            }
            (None, Kind::Needed) => {
                tracing::error!(check = check.name, kind, problem = check.problem, fix = %fix, "the database lacks what the operator needs")
            }
            (None, Kind::Hazard) => {
                warn!(check = check.name, kind, problem = check.problem, fix = %fix, "the database lets tenants reach past their limits")
            }
        }
    }
    if findings.is_empty() {
        info!(
            checks = checks::CHECKS.len(),
            "the database passed every check"
        );
    }
}

async fn check_crd_installed(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        SmartRegionTenant::crd_name(),
        crate::crd::SmartRegionShare::crd_name(),
        crate::crd::SmartRegionDataset::crd_name(),
    ] {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!(
                "the CustomResourceDefinition {name} is not installed; install the CRDs with \
                 `kubectl apply --server-side -f crds/` (or `smartregion-operator crd | kubectl apply --server-side -f -`)"
            ),
            Err(error) => {
                return Err(error).context(format!(
                    "failed to check that the CustomResourceDefinition {name} is installed"
                ));
            }
        }
    }
    Ok(())
}

/// With `--ingest-gateway`, the Gateway API's HTTPRoute must be served.
async fn check_gateway_api_installed(client: &Client) -> Result<()> {
    let name = HTTPROUTE_CRD;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!(
            "--ingest-gateway is set but the CustomResourceDefinition {name} is not \
             installed; install the Gateway API (standard channel) or expose ingest with \
             --ingress-class instead (docs/exposure.md)"
        ),
        Err(error) => Err(error).context(format!(
            "failed to check that the CustomResourceDefinition {name} is installed"
        )),
    }
}

/// The Gateway API's HTTPRoute CRD.
pub const HTTPROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";

async fn controller(
    client: Client,
    context: Arc<Context>,
    tenants: watcher::Config,
    concurrency: u16,
) {
    // Children are mapped back to their tenant by its label, from its own namespace
    // (`reconcile::kinds::tenant_of`): `Controller::owns` cannot map namespaced children
    // to a cluster-scoped owner.
    let controller = Controller::new(
        Api::<SmartRegionTenant>::all(client.clone()),
        tenants.clone(),
    );
    let controller = reconcile::kinds::watch_children(controller, &client, &context.config);
    // A share concerns its provider and its consumers, in other namespaces.
    let controller = controller.watches(
        Api::<crate::crd::SmartRegionShare>::all(client.clone()),
        watcher::Config::default(),
        reconcile::sharing::tenants_of_share(&context.config.namespace_prefix),
    );
    // A dataset concerns the tenant whose namespace holds it.
    let controller = controller.watches(
        Api::<crate::crd::SmartRegionDataset>::all(client.clone()),
        watcher::Config::default(),
        reconcile::open_data::tenant_of_dataset(&context.config.namespace_prefix),
    );
    // A consumer that comes, goes or changes concerns the providers sharing with it,
    // read from a cache of the shares.
    let (shares, writer) = kube::runtime::reflector::store();
    tokio::spawn(
        kube::runtime::reflector(
            writer,
            watcher::watcher(
                Api::<crate::crd::SmartRegionShare>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .for_each(|_| std::future::ready(())),
    );
    let controller = controller.watches(
        Api::<SmartRegionTenant>::all(client.clone()),
        tenants.clone(),
        reconcile::sharing::providers_sharing_with(shares, &context.config.namespace_prefix),
    );
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                // A child of a deleted tenant, or of one outside --tenant-selector: expected.
                Err(error @ controller::Error::ObjectNotFound(..)) => {
                    debug!(error = %error, "a watched child maps to no tenant of this operator")
                }
                Err(error) => warn!(error = %reconcile::error_chain(&error), "controller"),
            }
        })
        .await;
}

async fn serve(
    address: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on {address} for /metrics and health"))?;
    info!(%address, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, usually: give the others a moment.
                    warn!(%error, "the metrics and health server failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, ready) = (metrics.clone(), ready.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &metrics, ready.load(Ordering::Relaxed));
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%error, "a metrics or health connection ended with an error");
                }
            });
        }
    }))
}

/// The answer of the metrics and health server to `request` (pure).
fn respond<B>(request: &Request<B>, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok".into()),
        (&Method::GET, "/readyz") if ready => (StatusCode::OK, "text/plain", "ok".into()),
        (&Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting".into(),
        ),
        (_, "/metrics" | "/healthz" | "/readyz") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz, /readyz".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn the_server_answers_metrics_health_and_readiness() {
        let metrics = Metrics::default();
        let response = respond(&get("/metrics"), &metrics, false);
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        assert_eq!(
            respond(&get("/healthz"), &metrics, false).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&get("/readyz"), &metrics, false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            respond(&get("/readyz"), &metrics, true).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&get("/other"), &metrics, true).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(
            respond(&post, &metrics, true).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
