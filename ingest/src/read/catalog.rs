//! `/open/catalog`: the DCAT-AP_IT catalogue of the tenant's open datasets, made from what
//! the database publishes (the `datasets` table of its open schema, read as the public
//! role), in Turtle or JSON-LD by content negotiation.

use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use std::net::SocketAddr;

use super::dcat::{self, Catalogue, DistributionFormat};
use super::http::App;
use crate::http::RequestId;

/// A dataset's description as the operator stores it: its spec, and the tenant's
/// retention.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    title: String,
    description: String,
    #[serde(default = "hourly")]
    granularity: String,
    licence: String,
    themes: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default = "hourly_frequency")]
    update_frequency: String,
    contact: StoredContact,
    since: Option<Timestamp>,
    retention_days: Option<i64>,
}

fn hourly() -> String {
    "PT1H".into()
}

fn hourly_frequency() -> String {
    "HOURLY".into()
}

#[derive(Deserialize)]
struct StoredContact {
    name: String,
    email: String,
}

/// The serialisation asked for: `format` (`ttl`, `jsonld`) over the Accept header;
/// Turtle by default.
fn json_ld(raw: Option<&str>, headers: &HeaderMap) -> Result<bool, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        format: Option<String>,
    }
    let refused = || "the catalogue takes only format=ttl or format=jsonld".to_string();
    let params: Params = serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|_| refused())?;
    match params.format.as_deref() {
        Some("ttl") => return Ok(false),
        Some("jsonld") => return Ok(true),
        Some(_) => return Err(refused()),
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/ld+json")))
}

pub async fn open_catalog(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let id = RequestId::new();
    if let Some(refused) = app.open.admit(&headers, peer.ip(), id) {
        return refused;
    }
    let response = answer(&app, raw.as_deref(), &headers, id).await;
    app.metrics.request("open_catalog", response.status());
    response
}

async fn answer(app: &App, raw: Option<&str>, headers: &HeaderMap, id: RequestId) -> Response {
    let as_json_ld = match json_ld(raw, headers) {
        Ok(as_json_ld) => as_json_ld,
        Err(message) => {
            return super::http::refusal(StatusCode::BAD_REQUEST, message, Some("format"), id);
        }
    };
    let Some(ipa_code) = app.publisher.ipa_code.clone() else {
        return super::http::refusal(
            StatusCode::NOT_FOUND,
            "this tenant publishes no open data: it has no IPA code",
            None,
            id,
        );
    };
    let stored = match read_datasets(app).await {
        Ok(stored) => stored,
        Err(error) => {
            let source = super::sql::Source::open(&app.tenant, &app.schema, "catalog");
            return super::http::database_refusal(&error, &source, id);
        }
    };
    let base = app.publisher.public_url.trim_end_matches('/').to_string();
    let now = Timestamp::now();
    let hour =
        Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(3600)).unwrap_or(now);
    let datasets = stored
        .into_iter()
        .filter_map(|(name, stored)| {
            dataset(&base, &ipa_code, &app.publisher.name, &name, stored, hour)
        })
        .collect();
    let catalogue = Catalogue {
        uri: format!("{base}/open/catalog"),
        title: format!("Dati aperti di {}", app.publisher.name),
        description: format!(
            "I dati aperti di {} sulla piattaforma Smart Region Toscana: misure aggregate dei suoi sensori.",
            app.publisher.name
        ),
        homepage: base.clone(),
        language: "it".into(),
        publisher: dcat::Agent {
            name: app.publisher.name.clone(),
            ipa_code: ipa_code.clone(),
        },
        modified: hour,
        datasets,
    };
    if as_json_ld {
        (
            [(header::CONTENT_TYPE, "application/ld+json")],
            dcat::json_ld(&catalogue),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/turtle; charset=utf-8")],
            dcat::turtle(&catalogue),
        )
            .into_response()
    }
}

/// Each published dataset's name and description; none when the tenant publishes none.
async fn read_datasets(app: &App) -> Result<Vec<(String, Stored)>, super::ReadError> {
    use tokio_postgres::error::SqlState;
    let client = app.database.client().await?;
    let source = super::sql::Source::open(&app.tenant, &app.schema, "catalog");
    let open = source.open.expect("an open source");
    client.batch_execute("BEGIN READ ONLY").await?;
    let rows = match client
        .batch_execute(&format!("SET LOCAL ROLE {}", open.role))
        .await
    {
        Ok(()) => {
            client
                .query(
                    &format!(
                        "SELECT name, metadata::text FROM {} ORDER BY name",
                        open.datasets
                    ),
                    &[],
                )
                .await
        }
        Err(error) => Err(error),
    };
    let _ = client.batch_execute("ROLLBACK").await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error)
            if matches!(
                error.code(),
                // No dataset was ever published (no public role, no open schema).
                Some(code) if *code == SqlState::INVALID_PARAMETER_VALUE
                    || *code == SqlState::INVALID_SCHEMA_NAME
                    || *code == SqlState::UNDEFINED_TABLE
                    || *code == SqlState::INSUFFICIENT_PRIVILEGE
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(error) => return Err(error.into()),
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            let text: String = row.get(1);
            match serde_json::from_str(&text) {
                Ok(stored) => Some((name, stored)),
                Err(error) => {
                    tracing::warn!(dataset = %name, %error, "an open dataset's description does not parse; left out of the catalogue");
                    None
                }
            }
        })
        .collect())
}

/// A value of a vocabulary; `None` (and a warning) for one the catalogue cannot name.
fn known<T: std::str::FromStr>(dataset: &str, field: &str, text: &str) -> Option<T> {
    let value = text.parse().ok();
    if value.is_none() {
        tracing::warn!(%dataset, field, value = text, "an open dataset's description names an unknown value; left out of the catalogue");
    }
    value
}

/// A dataset of the catalogue; `None` (and a warning) for a description with a value
/// the catalogue cannot name.
fn dataset(
    base: &str,
    ipa_code: &str,
    _publisher: &str,
    name: &str,
    stored: Stored,
    hour: Timestamp,
) -> Option<dcat::Dataset> {
    let licence = known(name, "licence", &stored.licence)?;
    let accrual_periodicity = known(name, "updateFrequency", &stored.update_frequency)?;
    let mut themes = Vec::new();
    for theme in &stored.themes {
        themes.push(known(name, "themes", theme)?);
    }
    let retained = stored
        .retention_days
        .map(|days| hour - SignedDuration::from_hours(24 * days));
    let start = match (stored.since, retained) {
        (Some(since), Some(retained)) => Some(since.max(retained)),
        (since, retained) => since.or(retained),
    };
    let uri = format!("{base}/open/{name}");
    let access = format!("{uri}/v2/attrs");
    let distribution = |format: DistributionFormat, suffix: &str, title: &str| dcat::Distribution {
        format,
        access_url: access.clone(),
        download_url: format!(
            "{access}?aggrMethod=avg,min,max,count&aggrPeriod={}&format={suffix}",
            stored.granularity
        ),
        title: title.to_string(),
    };
    Some(dcat::Dataset {
        name: name.to_string(),
        uri: uri.clone(),
        identifier: format!("{ipa_code}:{name}"),
        title: stored.title,
        description: stored.description,
        keywords: stored.keywords,
        themes,
        accrual_periodicity,
        licence,
        contact: dcat::Contact {
            name: stored.contact.name,
            email: stored.contact.email,
        },
        temporal: start.map(|start| (start, hour)),
        modified: hour,
        period: stored.granularity.clone(),
        distributions: vec![
            distribution(
                DistributionFormat::Csv,
                "csv",
                "Aggregati dell'ultimo giorno (CSV)",
            ),
            distribution(
                DistributionFormat::Json,
                "json",
                "Aggregati dell'ultimo giorno (JSON)",
            ),
        ],
    })
}
