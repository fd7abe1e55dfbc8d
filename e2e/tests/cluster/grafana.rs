//! Grafana, the ecosystem's way (docs/grafana.md): a tenant with `spec.grafana.enabled`
//! gets a data source for its reader and a starter dashboard in the platform's Grafana
//! namespace, labelled for the Grafana chart's sidecar; the data source logs in as the
//! reader (its password is the one in `db-reader`), the dashboard's queries run as that
//! reader against the real PostgreSQL, and both go when the tenant turns them off or is
//! deleted. Grafana itself is not run here (its licence keeps it out of what is built
//! here); the formats are checked by the unit tests of `resources/grafana.rs`.

use crate::read::write_minutes;
use crate::support::*;
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name, wait};

/// The panels' SQL with Grafana's macros and the `metric` variable replaced as Grafana
/// would for the last two days, per minute, and pm10.
fn as_grafana_runs_it(sql: &str) -> String {
    sql.replace(
        "$__timeFilter(time)",
        "time BETWEEN now() - interval '2 days' AND now()",
    )
    .replace(
        "$__timeGroupAlias(time, $__interval)",
        "date_trunc('minute', time) AS time",
    )
    .replace("$metric", "pm10")
}

#[tokio::test]
async fn a_tenant_gets_a_datasource_for_its_reader_and_a_dashboard_in_grafanas_namespace()
-> Result<()> {
    let client = client().await?;
    let grafana = unique_name("grafana");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": grafana } }))?,
        )
        .await?;
    let shard = unique_name("grafana");
    let _operator = Operator::start(
        shared(),
        &shard,
        &[&format!("--grafana-namespace={grafana}")],
    )?;
    let tenant = unique_name("dash");
    let mut object = example("prato", &tenant, &shard)?;
    object["spec"]["grafana"] = json!({ "enabled": true });
    apply_tenant(&client, &object).await?;
    wait_ready(&client, &tenant).await?;
    write_minutes(&client, &tenant).await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &grafana);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &grafana);
    let datasource = format!("smartregion-{tenant}-datasource");
    let dashboard = format!("smartregion-{tenant}-dashboard");
    let secret = wait::until("the data source Secret", READY_TIMEOUT, || {
        let secrets = secrets.clone();
        let name = datasource.clone();
        async move { Ok(secrets.get_opt(&name).await?) }
    })
    .await?;
    ensure!(secret.metadata.labels.as_ref().context("labels")?["grafana_datasource"] == "1");
    let yaml = &secret.data.as_ref().context("data")?[&format!("smartregion-{tenant}.yaml")].0;
    let document: Value = serde_yaml::from_slice(yaml)?;
    let source = &document["datasources"][0];
    let user = secret_value(&client, &tenant, "db-reader", "user").await?;
    let password = secret_value(&client, &tenant, "db-reader", "password").await?;
    ensure!(source["user"] == json!(user), "{source}");
    ensure!(
        source["secureJsonData"]["password"] == json!(password),
        "the data source's password is not db-reader's"
    );

    // The dashboard's queries, as Grafana runs them, with the data source's login.
    let map = maps.get(&dashboard).await?;
    ensure!(map.metadata.labels.as_ref().context("labels")?["grafana_dashboard"] == "1");
    let model: Value = serde_json::from_str(
        &map.data.as_ref().context("data")?[&format!("smartregion-{tenant}.json")],
    )?;
    let reader = login(&client, &tenant, "db-reader").await?;
    let mut queries: Vec<String> = model["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["rawSql"].as_str().map(str::to_string))
        .collect();
    queries.push(
        model["templating"]["list"][0]["query"]
            .as_str()
            .context("the metric variable's query")?
            .to_string(),
    );
    for sql in &queries {
        let rows = reader.query(&as_grafana_runs_it(sql), &[]).await?;
        ensure!(!rows.is_empty(), "no rows: {sql}");
    }

    // Turned off: both go.
    object["spec"]["grafana"] = json!({ "enabled": false });
    apply_tenant(&client, &object).await?;
    wait::until("the Grafana objects gone", READY_TIMEOUT, || {
        let (secrets, maps) = (secrets.clone(), maps.clone());
        let (datasource, dashboard) = (datasource.clone(), dashboard.clone());
        async move {
            let gone = secrets.get_opt(&datasource).await?.is_none()
                && maps.get_opt(&dashboard).await?.is_none();
            Ok(gone.then_some(()))
        }
    })
    .await?;

    // On again, then the tenant deleted: both go with it.
    object["spec"]["grafana"] = json!({ "enabled": true });
    apply_tenant(&client, &object).await?;
    wait::until("the data source back", READY_TIMEOUT, || {
        let secrets = secrets.clone();
        let name = datasource.clone();
        async move { Ok(secrets.get_opt(&name).await?) }
    })
    .await?;
    delete_all_and_wait(&client, std::slice::from_ref(&tenant)).await?;
    ensure!(secrets.get_opt(&datasource).await?.is_none());
    ensure!(maps.get_opt(&dashboard).await?.is_none());
    namespaces
        .delete(&grafana, &DeleteParams::default())
        .await?;
    Ok(())
}
