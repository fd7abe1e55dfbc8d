//! `demo-ingest`: part of `e2e/demo`. Runs one tenant's ingest service as a host process
//! with exactly its Deployment's environment and Secrets (pods never run containers on
//! the local cluster), sends it sample data in the three formats as sensors and FIWARE
//! Orion would, and prints what the tenant's own `db-reader` login then reads back.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use smartregion_contract::env::{API_KEYS as ENV_API_KEYS, PGSSLROOTCERT as ENV_PGSSLROOTCERT};
use smartregion_contract::postgres::{SslMode, connector};
use smartregion_e2e::ingest::{HttpClient, Ingest, deployment_env};
use smartregion_e2e::{Cluster, wait};

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

    // The Deployment's env; its one file, the CA bundle mounted from db-writer, is
    // written where this host process can read it. An operator just upgraded may still
    // be adding the bundle to a Secret it wrote before.
    let mut env = deployment_env(&client, &namespace).await?;
    let writer = wait::until(
        "the db-writer Secret to carry what verify-full needs",
        Duration::from_secs(60),
        || {
            let secrets = secrets.clone();
            async move {
                let writer = secrets.get("db-writer").await?;
                let complete = secret_value(&writer, "sslmode")? != "verify-full"
                    || secret_value(&writer, "ca.crt").is_ok();
                Ok(complete.then_some(writer))
            }
        },
    )
    .await?;
    let ca_file = cluster
        .state_dir
        .join(format!("{}-database-ca.crt", cli.tenant));
    if let Ok(bundle) = secret_value(&writer, "ca.crt") {
        std::fs::write(&ca_file, bundle)?;
        for (name, value) in env.iter_mut() {
            if name == ENV_PGSSLROOTCERT {
                *value = ca_file.display().to_string();
            }
        }
    }
    let key = env
        .iter()
        .find(|(name, _)| name == ENV_API_KEYS)
        .and_then(|(_, keys)| keys.lines().next().map(str::to_string))
        .context("the ingest Deployment passes no API key")?;
    println!(
        "starting smartregion-ingest for {} with its Deployment's environment",
        cli.tenant
    );
    let mut ingest = Ingest::start(&cluster, env)?;
    ingest.wait_ready(Duration::from_secs(30)).await?;
    println!(
        "  listening on {}; log: {}",
        ingest.url(""),
        ingest.log.display()
    );

    let http = HttpClient::new();
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str())];
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
        let answer = http
            .post(&ingest.url(path), &headers, body.to_string())
            .await?;
        let report = answer.json().unwrap_or_default();
        println!(
            "  POST {path:<17} {what}: {} {}",
            answer.status,
            report
                .get("committed")
                .map(|n| format!("({n} rows committed)"))
                .unwrap_or_default()
        );
        ensure!(answer.status == 200, "ingest refused the sample: {report}");
    }
    drop(ingest);

    // What the tenant's own read-only login sees.
    let reader = secrets.get("db-reader").await?;
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
    let db = match connector(mode, ca)? {
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
    };
    let schema = format!("t_{}", cli.tenant.replace('-', "_"));
    let rows = db
        .query(
            &format!(
                "SELECT sensor, metric, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), value \
                 FROM \"{schema}\".measurements ORDER BY time DESC, sensor, metric LIMIT 20"
            ),
            &[],
        )
        .await?;
    println!(
        "\n{} as its db-reader login reads it ({} rows, newest first):",
        schema,
        rows.len()
    );
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
