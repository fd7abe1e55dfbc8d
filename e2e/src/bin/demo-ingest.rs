//! `demo-ingest`: part of `e2e/demo`. From a pod in the tenant's namespace on the real
//! node, sends sample data in the three formats, as sensors and FIWARE Orion would, to the
//! tenant's ingest Service (the name in `status.ingestEndpoint`), and prints what the
//! tenant's own `db-reader` login then reads back; with `--shared-with`, also what another
//! tenant's `db-reader` reads of it through the views its `status.sharedWithMe` names.
//! Then, from a pod again, through the tenant's read service (`status.readEndpoint`):
//! hourly averages with its key, and without any key the open-data catalogue and the
//! public hourly series of each `SmartRegionDataset` the tenant publishes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use smartregion_contract::postgres::{SslMode, connector};
use smartregion_e2e::Cluster;
use smartregion_e2e::pods::ClientPod;
use smartregion_operator::crd::{SmartRegionDataset, SmartRegionTenant};

#[derive(Parser)]
#[command(name = "demo-ingest")]
struct Cli {
    /// Directory of the running local cluster.
    #[arg(long, env = "SMARTREGION_E2E_STATE", default_value_os_t = smartregion_e2e::paths::default_state_dir())]
    state_dir: PathBuf,
    /// The tenant whose ingest service receives the data.
    #[arg(long, default_value = "prato")]
    tenant: String,
    /// Namespace prefix the operator uses.
    #[arg(long, default_value = "srt-")]
    namespace_prefix: String,
    /// Tenants that read what `--tenant` shares with them, each with its own `db-reader`.
    #[arg(long)]
    shared_with: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn secret_value(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .with_context(|| format!("the Secret has no key {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

async fn run(cli: Cli) -> Result<()> {
    let cluster = Cluster::running(&cli.state_dir).await?;
    let client = cluster.client().await?;
    let namespace = format!("{}{}", cli.namespace_prefix, cli.tenant);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    // The senders are a pod in the tenant's namespace, on the real node, posting to the
    // Service its status names, with the tenant's first API key.
    let tenants: Api<SmartRegionTenant> = Api::all(client.clone());
    let tenant = tenants.get(&cli.tenant).await?;
    let endpoint = tenant
        .status
        .and_then(|status| status.ingest_endpoint)
        .context("the tenant's status names no ingest endpoint yet")?;
    let keys = secret_value(&secrets.get("ingest-keys").await?, "keys")?;
    let key = keys
        .lines()
        .next()
        .context("the ingest-keys Secret holds no key")?
        .to_string();
    println!("starting a sender pod in {namespace} (the tests' probe image) on the real node");
    let sender = ClientPod::start(
        &client,
        &namespace,
        &smartregion_e2e::unique_name("demo-sender"),
        json!({ "app.kubernetes.io/name": "demo-sender" }),
        true,
    )
    .await?;
    let auth = format!("Authorization: Bearer {key}");
    let now = time_now();
    let sends = [
        (
            "/v1/measurements",
            "a JSON batch from an air-quality station",
            json!([
                {"sensor": "prato-via-roma", "metric": "pm10", "time": now, "value": 18.4},
                {"sensor": "prato-via-roma", "metric": "no2", "time": now, "value": 37.0},
                {"sensor": "prato-piazza-duomo", "metric": "pm10", "time": now, "value": 21.9},
            ]),
        ),
        (
            "/v2/notify",
            "an NGSI-v2 notification as FIWARE Orion sends it",
            json!({
                "subscriptionId": "65f0c0ffee0000000000cafe",
                "data": [{
                    "id": "urn:ngsi-ld:TrafficFlowObserved:prato-declassata-01",
                    "type": "TrafficFlowObserved",
                    "intensity": {"type": "Number", "value": 412, "metadata": {}},
                    "averageVehicleSpeed": {"type": "Number", "value": 46.5, "metadata": {}},
                    "laneDirection": {"type": "Text", "value": "forward", "metadata": {}},
                    "TimeInstant": {"type": "DateTime", "value": now}
                }]
            }),
        ),
        (
            "/v1/senml",
            "a SenML pack from a river-level gauge",
            json!([
                {"bn": "urn:dev:ow:bisenzio-ponte-datini:", "bt": unix_now(), "bu": "m", "n": "level", "v": 1.42},
                {"n": "level", "t": -600, "v": 1.38},
                {"n": "battery", "u": "%EL", "v": 87}
            ]),
        ),
    ];
    for (path, what, body) in sends {
        let url = format!("{endpoint}{path}");
        let body = body.to_string();
        let outcome = sender
            .probe(&[
                "post",
                &url,
                "--header",
                &auth,
                "--body",
                &body,
                "--attempts",
                "20",
            ])
            .await?;
        let committed = outcome
            .message
            .split_once('{')
            .and_then(|(_, rest)| {
                serde_json::from_str::<serde_json::Value>(&format!("{{{rest}")).ok()
            })
            .and_then(|report| report.get("committed").cloned());
        println!(
            "  POST {url:<52} {what}: {}",
            committed
                .map(|n| format!("200 ({n} rows committed)"))
                .unwrap_or_else(|| outcome.message.clone())
        );
        ensure!(
            outcome.succeeded,
            "ingest refused the sample: {}",
            outcome.message
        );
    }
    sender.delete().await?;

    // What the tenant's own read-only login sees.
    let db = reader(&cluster, &client, &cli.namespace_prefix, &cli.tenant).await?;
    let schema = format!("t_{}", cli.tenant.replace('-', "_"));
    print_rows(
        &format!("{schema} as its db-reader login reads it"),
        &db,
        &format!("\"{schema}\".measurements"),
    )
    .await?;

    // What each consumer's own read-only login reads of it, through the database's views.
    for consumer in &cli.shared_with {
        let views: Vec<String> = tenants
            .get(consumer)
            .await?
            .status
            .map(|status| status.shared_with_me)
            .unwrap_or_default()
            .into_iter()
            .filter(|shared| shared.provider == cli.tenant)
            .map(|shared| shared.read_as)
            .collect();
        ensure!(
            !views.is_empty(),
            "{consumer}'s status.sharedWithMe names nothing shared by {}: \
             is a SmartRegionShare in {namespace} listing {consumer} Ready?",
            cli.tenant
        );
        let db = reader(&cluster, &client, &cli.namespace_prefix, consumer).await?;
        for view in views {
            print_rows(
                &format!(
                    "{view}, shared by {}, as {consumer}'s db-reader reads it",
                    cli.tenant
                ),
                &db,
                &view,
            )
            .await?;
        }
    }
    read_back(&client, &namespace, &cli.tenant).await
}

/// From a pod in the tenant's namespace: an hourly query with the tenant's read key, the
/// open catalogue and each open dataset's hourly series without one.
async fn read_back(client: &kube::Client, namespace: &str, tenant: &str) -> Result<()> {
    let tenants: Api<SmartRegionTenant> = Api::all(client.clone());
    let endpoint = tenants
        .get(tenant)
        .await?
        .status
        .and_then(|status| status.read_endpoint)
        .context("the tenant's status names no read endpoint")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let keys = secret_value(&secrets.get("read-keys").await?, "keys")?;
    let key = keys.lines().next().context("read-keys holds no key")?;
    let datasets: Api<SmartRegionDataset> = Api::namespaced(client.clone(), namespace);
    let datasets = datasets.list(&Default::default()).await?.items;
    println!("\nstarting a reader pod in {namespace} on the real node, reading {endpoint}");
    let pod = ClientPod::start(
        client,
        namespace,
        &smartregion_e2e::unique_name("demo-reader"),
        json!({ "app.kubernetes.io/name": "demo-reader" }),
        true,
    )
    .await?;
    let auth = format!("Authorization: Bearer {key}");
    let mut gets = vec![(
        format!("{endpoint}/v2/attrs/pm10?aggrMethod=avg,max,count&aggrPeriod=PT1H&format=csv"),
        "hourly PM10 of every sensor, with the tenant's read key".to_string(),
        Some(auth.as_str()),
    )];
    gets.push((
        format!("{endpoint}/open/catalog"),
        "the open-data catalogue (DCAT-AP_IT, Turtle), without a key".to_string(),
        None,
    ));
    for dataset in &datasets {
        let name = kube::ResourceExt::name_any(dataset);
        gets.push((
            format!(
                "{endpoint}/open/{name}/v2/attrs?aggrMethod=avg,min,max&aggrPeriod={}&format=csv",
                dataset.spec.granularity.iso()
            ),
            format!("the open dataset {name}, without a key"),
            None,
        ));
    }
    for (url, what, header) in gets {
        let mut args = vec!["get", url.as_str(), "--attempts", "20"];
        if let Some(header) = header {
            args.extend(["--header", header]);
        }
        let outcome = pod.probe(&args).await?;
        ensure!(
            outcome.succeeded,
            "GET {url} ({what}) failed: {}",
            outcome.message
        );
        println!("\n  GET {url}\n  {what}:");
        let body = outcome
            .message
            .split_once(' ')
            .map(|(_, rest)| rest)
            .unwrap_or(&outcome.message);
        for line in body.lines().take(14) {
            println!("    {line}");
        }
    }
    pod.delete().await
}

/// `tenant`'s own `db-reader` login, verifying the server with the CA its Secret carries.
async fn reader(
    cluster: &Cluster,
    client: &kube::Client,
    namespace_prefix: &str,
    tenant: &str,
) -> Result<tokio_postgres::Client> {
    let secrets: Api<Secret> =
        Api::namespaced(client.clone(), &format!("{namespace_prefix}{tenant}"));
    let reader = secrets.get("db-reader").await?;
    let ca_file = cluster.state_dir.join(format!("{tenant}-database-ca.crt"));
    if let Ok(bundle) = secret_value(&reader, "ca.crt") {
        std::fs::write(&ca_file, bundle)?;
    }
    let mut config = tokio_postgres::Config::new();
    config
        .host(secret_value(&reader, "host")?)
        .port(secret_value(&reader, "port")?.parse()?)
        .dbname(secret_value(&reader, "dbname")?)
        .user(secret_value(&reader, "user")?)
        .password(secret_value(&reader, "password")?);
    let mode = match secret_value(&reader, "sslmode")?.as_str() {
        "verify-full" => SslMode::VerifyFull,
        "require" => SslMode::Require,
        _ => SslMode::Disable,
    };
    let ca = ca_file.exists().then_some(ca_file.as_path());
    Ok(match connector(mode, ca)? {
        Some(tls) => {
            let (db, connection) = config.connect(tls).await?;
            tokio::spawn(connection);
            db
        }
        None => {
            let (db, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            db
        }
    })
}

/// The newest 20 rows of `relation` as `db` reads them, under `title`.
async fn print_rows(title: &str, db: &tokio_postgres::Client, relation: &str) -> Result<()> {
    let rows = db
        .query(
            &format!(
                "SELECT sensor, metric, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), value \
                 FROM {relation} ORDER BY time DESC, sensor, metric LIMIT 20"
            ),
            &[],
        )
        .await?;
    println!("\n{title} ({} rows, newest first):", rows.len());
    println!(
        "  {:<56} {:<20} {:<19} {:>8}",
        "sensor", "metric", "time (UTC)", "value"
    );
    for row in &rows {
        let (sensor, metric, time, value): (String, String, String, f64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        println!("  {sensor:<56} {metric:<20} {time:<19} {value:>8}");
    }
    Ok(())
}

/// Now, to the second, as RFC 3339 (what sensors send).
fn time_now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("now is a valid time")
        .to_string()
}

fn unix_now() -> f64 {
    jiff::Timestamp::now().as_second() as f64
}
