//! The HTTP API: `POST /v1/measurements`, `POST /v2/notify`, `POST /v1/senml`,
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! Order of checks for a write: API key (401), `Fiware-Service` (403), format enabled
//! (404), body size (413), JSON (400 with position), rate quota (429 with Retry-After),
//! then the rows go to the group-commit writer and the answer waits for the commit:
//! 200 when every item was stored, 207 when some were refused (each explained), 400 when
//! none could be, 503 when the database is unavailable (nothing was acknowledged).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

use crate::auth::ApiKeys;
use crate::metrics::Metrics;
use crate::parse::{self, BodyError, Ignored, Parsed, Rejected};
use crate::rate::RateQuota;
use crate::writer::{WriteError, Writer};
pub use smartregion_contract::format::IngestFormat;

pub struct App {
    pub tenant: String,
    pub keys: ApiKeys,
    pub formats: Vec<IngestFormat>,
    pub rate: Arc<RateQuota>,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
}

pub fn router(app: Arc<App>) -> Router {
    let max_body_bytes = app.max_body_bytes;
    Router::new()
        .route(
            IngestFormat::Measurements.endpoint(),
            post(|state, headers, body| write(state, headers, body, IngestFormat::Measurements)),
        )
        .route(
            IngestFormat::NgsiV2.endpoint(),
            post(|state, headers, body| write(state, headers, body, IngestFormat::NgsiV2)),
        )
        .route(
            IngestFormat::SenML.endpoint(),
            post(|state, headers, body| write(state, headers, body, IngestFormat::SenML)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(app)
}

/// What a write answers: how many items were committed and what happened to the others.
#[derive(Serialize)]
struct Report {
    committed: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<Rejected>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<Ignored>,
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn write(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    format: IngestFormat,
) -> Response {
    let received = Timestamp::now();
    let response = handle(&app, &headers, body, format, received).await;
    app.metrics
        .request(format.endpoint(), response.status().as_u16());
    response
}

async fn handle(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    format: IngestFormat,
    received: Timestamp,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !key.is_some_and(|key| app.keys.accepts(key)) {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "a valid API key is needed: Authorization: Bearer <key from the ingest-keys Secret>",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if let Some(service) = headers.get("fiware-service") {
        // Orion sends the service in lower case; tenant names are lower case anyway.
        let named = service.to_str().map(str::to_ascii_lowercase).ok();
        if named.as_deref() != Some(app.tenant.as_str()) {
            return problem(
                StatusCode::FORBIDDEN,
                format!("Fiware-Service must name this tenant ({})", app.tenant),
            );
        }
    }
    if !app.formats.contains(&format) {
        return problem(
            StatusCode::NOT_FOUND,
            format!("this tenant does not accept {format:?} (spec.ingest.formats)"),
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than {} bytes; send smaller batches",
                    app.max_body_bytes
                ),
            );
        }
        Err(rejection) => return problem(rejection.status(), rejection.body_text()),
    };
    let parsed = match format {
        IngestFormat::Measurements => parse::parse_measurements(&body, received),
        IngestFormat::NgsiV2 => parse::parse_ngsi_notification(&body, received).map(|n| n.parsed),
        IngestFormat::SenML => parse::parse_senml(&body, received),
    };
    let Parsed {
        rows,
        rejected,
        ignored,
    } = match parsed {
        Ok(parsed) => parsed,
        Err(error @ BodyError::Json { .. }) => {
            return problem(StatusCode::BAD_REQUEST, error.to_string());
        }
        Err(error @ BodyError::Shape(_)) => {
            return problem(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    app.metrics.rows("rejected", rejected.len());
    app.metrics.rows("ignored", ignored.len());
    if rows.len() > app.writer.max_rows() {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} items in one request; at most {} are accepted at once",
                rows.len(),
                app.writer.max_rows()
            ),
        );
    }
    if let Err(wait) = app.rate.check(rows.len()) {
        return too_many(wait, &app.rate);
    }
    let committed = rows.len();
    match app.writer.submit(rows, received).await {
        Ok(()) => {}
        Err(error @ (WriteError::Unavailable(_) | WriteError::Busy)) => {
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{error}; nothing of this request was stored"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(error @ WriteError::Refused) => {
            return problem(StatusCode::FORBIDDEN, error.to_string());
        }
    }
    app.metrics.rows("committed", committed);
    let status = if rejected.is_empty() {
        StatusCode::OK
    } else if committed > 0 {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::BAD_REQUEST
    };
    let report = Report {
        committed,
        rejected,
        ignored,
    };
    (status, axum::Json(report)).into_response()
}

fn too_many(wait: Option<Duration>, rate: &RateQuota) -> Response {
    match wait {
        Some(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "over the rate quota of {} rows per second; retry after {seconds} s",
                    rate.rows_per_second()
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        None => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "more items in one request than the rate quota allows at once ({}); send smaller batches",
                rate.burst()
            ),
        ),
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.writer.healthy() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not reachable",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}
