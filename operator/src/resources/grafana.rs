//! A tenant's Grafana data source and starter dashboard, for the platform's Grafana
//! (docs/grafana.md). They are placed in Grafana's own namespace, labelled as the Grafana
//! Helm chart's sidecar looks for them (`grafana_datasource: "1"` on a Secret,
//! `grafana_dashboard: "1"` on a ConfigMap): the sidecar then needs to read Secrets in its
//! own namespace only, never the tenants' (where `db-writer` lives) or the whole
//! cluster's. Pure.
//!
//! The formats are Grafana's provisioning files: a data source YAML (`apiVersion: 1`,
//! `datasources:`) and a dashboard JSON model.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::config::DatabaseEndpoint;
use crate::crd::{MANAGED_BY, TENANT_LABEL};
use crate::database::names::TenantDb;
use crate::tenant::Validated;

/// The label the Grafana chart's sidecar selects data-source Secrets by.
pub const DATASOURCE_LABEL: (&str, &str) = ("grafana_datasource", "1");
/// The label it selects dashboard ConfigMaps by.
pub const DASHBOARD_LABEL: (&str, &str) = ("grafana_dashboard", "1");
/// Label with the tenant's uid: only what carries it is the tenant's to change or delete.
pub const TENANT_UID_LABEL: &str = "smartregion.toscana.it/tenant-uid";
/// Grafana's PostgreSQL data source plugin (Grafana 10.3 and later; `postgres` before).
pub const PLUGIN: &str = "grafana-postgresql-datasource";

/// `smartregion-<tenant>-datasource` and `smartregion-<tenant>-dashboard`.
pub fn datasource_name(tenant: &Validated) -> String {
    datasource_name_of(tenant.name.as_str())
}

pub fn datasource_name_of(tenant: &str) -> String {
    format!("smartregion-{tenant}-datasource")
}

pub fn dashboard_name(tenant: &Validated) -> String {
    dashboard_name_of(tenant.name.as_str())
}

pub fn dashboard_name_of(tenant: &str) -> String {
    format!("smartregion-{tenant}-dashboard")
}

/// The data source's uid, which the dashboard's panels name.
fn uid(tenant: &Validated) -> String {
    format!("smartregion-{}", tenant.name)
}

fn metadata(tenant: &Validated, name: String, namespace: &str, label: (&str, &str)) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            (label.0.to_string(), label.1.to_string()),
            (TENANT_LABEL.to_string(), tenant.name.to_string()),
            (
                TENANT_UID_LABEL.to_string(),
                tenant.owner_reference.uid.clone(),
            ),
            (
                "app.kubernetes.io/managed-by".to_string(),
                MANAGED_BY.to_string(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// Grafana's data-source provisioning document for the tenant's reader login.
pub fn datasource_document(
    tenant: &Validated,
    endpoint: &DatabaseEndpoint,
    password: &str,
    timescaledb: bool,
) -> Value {
    let db = TenantDb::for_tenant(&tenant.name);
    let mut secure = json!({ "password": password });
    let mut json_data = json!({
        "database": endpoint.dbname,
        "sslmode": endpoint.sslmode,
        "postgresVersion": 1500,
        "timescaledb": timescaledb,
        "maxOpenConns": 2,
        "maxIdleConns": 2,
        "connMaxLifetime": 14400,
    });
    if let Some(bundle) = &endpoint.ca_bundle {
        json_data["tlsConfigurationMethod"] = json!("file-content");
        secure["tlsCACert"] = json!(bundle);
    }
    json!({
        "apiVersion": 1,
        "datasources": [{
            "name": format!("{} (smartregion)", tenant.display_name),
            "uid": uid(tenant),
            "type": PLUGIN,
            "access": "proxy",
            "url": format!("{}:{}", endpoint.host, endpoint.port),
            "user": db.reader,
            "editable": false,
            "jsonData": json_data,
            "secureJsonData": secure,
        }],
    })
}

/// The data source as the sidecar reads it: a Secret in Grafana's namespace.
pub fn datasource_secret(tenant: &Validated, namespace: &str, document: &Value) -> Secret {
    let yaml = serde_yaml::to_string(document).expect("a JSON value is YAML");
    Secret {
        metadata: metadata(tenant, datasource_name(tenant), namespace, DATASOURCE_LABEL),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            format!("smartregion-{}.yaml", tenant.name),
            ByteString(yaml.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// A panel of the starter dashboard, reading with the tenant's data source.
fn panel(
    tenant: &Validated,
    id: u32,
    kind: &str,
    title: &str,
    y: u32,
    sql: String,
    format: &str,
) -> Value {
    json!({
        "id": id,
        "type": kind,
        "title": title,
        "gridPos": { "h": 9, "w": 24, "x": 0, "y": y },
        "datasource": { "type": PLUGIN, "uid": uid(tenant) },
        "targets": [{
            "refId": "A",
            "datasource": { "type": PLUGIN, "uid": uid(tenant) },
            "editorMode": "code",
            "format": format,
            "rawQuery": true,
            "rawSql": sql,
        }],
    })
}

/// The starter dashboard: each sensor's latest value of each metric, and a time series
/// panel per metric (repeated over the `metric` variable), one line per sensor.
pub fn dashboard(tenant: &Validated) -> Value {
    let schema = TenantDb::for_tenant(&tenant.name).schema;
    let latest = format!(
        "SELECT DISTINCT ON (sensor, metric) sensor, metric, time, value \
         FROM {schema}.measurements WHERE $__timeFilter(time) \
         ORDER BY sensor, metric, time DESC"
    );
    let series = format!(
        "SELECT $__timeGroupAlias(time, $__interval), sensor AS metric, avg(value) AS value \
         FROM {schema}.measurements WHERE $__timeFilter(time) AND metric = '$metric' \
         GROUP BY 1, 2 ORDER BY 1"
    );
    let mut by_metric = panel(tenant, 2, "timeseries", "$metric", 9, series, "time_series");
    by_metric["repeat"] = json!("metric");
    by_metric["repeatDirection"] = json!("v");
    json!({
        "uid": format!("smartregion-{}", tenant.name),
        "title": format!("{}: sensori", tenant.display_name),
        "tags": ["smartregion"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "time": { "from": "now-24h", "to": "now" },
        "refresh": "1m",
        "templating": { "list": [{
            "name": "metric",
            "label": "Metrica",
            "type": "query",
            "datasource": { "type": PLUGIN, "uid": uid(tenant) },
            "query": format!(
                "SELECT DISTINCT metric FROM {schema}.measurements WHERE $__timeFilter(time) ORDER BY 1"
            ),
            "refresh": 2,
            "multi": true,
            "includeAll": true,
            "current": {},
            "options": [],
        }]},
        "panels": [
            panel(tenant, 1, "table", "Ultimo valore per sensore", 0, latest, "table"),
            by_metric,
        ],
    })
}

/// The dashboard as the sidecar reads it: a ConfigMap in Grafana's namespace.
pub fn dashboard_config_map(tenant: &Validated, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(tenant, dashboard_name(tenant), namespace, DASHBOARD_LABEL),
        data: Some(BTreeMap::from([(
            format!("smartregion-{}.json", tenant.name),
            serde_json::to_string_pretty(&dashboard(tenant)).expect("JSON serializes"),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(name: &str) -> Validated {
        crate::reconcile::validate::validate(
            &crate::test_support::tenant(name).build(),
            &crate::config::Config::default(),
        )
        .unwrap()
    }

    fn endpoint() -> DatabaseEndpoint {
        DatabaseEndpoint {
            host: "db.example".into(),
            port: 5432,
            dbname: "smartregion".into(),
            sslmode: "verify-full".into(),
            ca_bundle: Some("-----BEGIN CERTIFICATE-----\n".into()),
        }
    }

    /// The fields Grafana's data-source provisioning format requires, and what this
    /// product puts in them (grafana.com/docs/grafana/latest/administration/provisioning,
    /// "Data sources", and the PostgreSQL data source's provisioning example).
    #[test]
    fn the_datasource_is_grafanas_provisioning_format_for_the_reader() {
        let tenant = validated("prato");
        let document = datasource_document(&tenant, &endpoint(), "s3cret", true);
        assert_eq!(document["apiVersion"], 1);
        let sources = document["datasources"].as_array().unwrap();
        assert_eq!(sources.len(), 1);
        let source = &sources[0];
        for field in ["name", "uid", "type", "access", "url", "user"] {
            assert!(source[field].is_string(), "{field}: {source}");
        }
        assert_eq!(source["type"], PLUGIN);
        assert_eq!(source["access"], "proxy");
        assert_eq!(source["url"], "db.example:5432");
        assert_eq!(source["user"], "t_prato_reader");
        assert_eq!(source["jsonData"]["database"], "smartregion");
        assert_eq!(source["jsonData"]["sslmode"], "verify-full");
        assert_eq!(source["jsonData"]["timescaledb"], true);
        assert_eq!(source["jsonData"]["tlsConfigurationMethod"], "file-content");
        // The password and CA only in secureJsonData, which Grafana encrypts.
        assert_eq!(source["secureJsonData"]["password"], "s3cret");
        assert!(source["secureJsonData"]["tlsCACert"].is_string());
        assert!(!source["jsonData"].to_string().contains("s3cret"));
        let secret = datasource_secret(&tenant, "grafana", &document);
        assert_eq!(
            secret.metadata.labels.as_ref().unwrap()["grafana_datasource"],
            "1"
        );
        let yaml = &secret.data.as_ref().unwrap()["smartregion-prato.yaml"].0;
        let back: Value = serde_yaml::from_slice(yaml).unwrap();
        assert_eq!(back, document);
    }

    /// The dashboard JSON model's required shape (grafana.com/docs/grafana/latest/
    /// dashboards/build-dashboards/view-dashboard-json-model): uid, title, schemaVersion,
    /// panels each with id, type, title, gridPos {h, w, x, y}, a datasource reference and
    /// targets with refId; the variables the panels use are defined.
    #[test]
    fn the_dashboard_is_grafanas_json_model_on_the_tenants_datasource() {
        let tenant = validated("prato");
        let dashboard = dashboard(&tenant);
        assert!(dashboard["uid"].as_str().unwrap().len() <= 40);
        assert!(dashboard["title"].is_string());
        assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|variable| variable["name"].as_str().unwrap())
            .collect();
        let panels = dashboard["panels"].as_array().unwrap();
        let mut ids = Vec::new();
        for panel in panels {
            ids.push(panel["id"].as_u64().unwrap());
            assert!(["table", "timeseries"].contains(&panel["type"].as_str().unwrap()));
            for field in ["h", "w", "x", "y"] {
                assert!(panel["gridPos"][field].is_u64(), "{panel}");
            }
            assert_eq!(panel["datasource"]["uid"], "smartregion-prato");
            for target in panel["targets"].as_array().unwrap() {
                assert!(target["refId"].is_string());
                let sql = target["rawSql"].as_str().unwrap();
                assert!(sql.contains("t_prato.measurements"), "{sql}");
                for variable in sql.split('$').skip(1) {
                    let name: String = variable
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        name.starts_with("__") || variables.contains(&name.as_str()),
                        "{name} is not defined"
                    );
                }
            }
            if let Some(repeat) = panel["repeat"].as_str() {
                assert!(variables.contains(&repeat));
            }
        }
        ids.dedup();
        assert_eq!(ids.len(), panels.len(), "panel ids are unique");
        let map = dashboard_config_map(&tenant, "grafana");
        assert_eq!(
            map.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
            "1"
        );
        let text = &map.data.as_ref().unwrap()["smartregion-prato.json"];
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), dashboard);
    }
}
