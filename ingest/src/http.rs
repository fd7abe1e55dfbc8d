//! The HTTP API: `POST /v1/measurements`, `POST /v2/notify`, `POST /v1/senml`,
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! Order of checks for a write: API key (401), `Fiware-Service` (403), format enabled
//! (404), body size (413), JSON (400 with position), rate quota (429 with Retry-After),
//! then the rows go to the group-commit writer and the answer waits for the commit:
//! 200 when every item was stored, 207 when some were refused (each explained), 400 when
//! none could be, 503 when the database is unavailable (nothing was acknowledged).

use std::sync::Arc;

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
    let mut router = Router::new();
    for format in IngestFormat::ALL {
        router = router.route(
            format.endpoint(),
            post(move |state, headers, body| write(state, headers, body, format)),
        );
    }
    router
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

/// Why a write stored nothing: each renders its own problem response (status, message
/// as `{"error": ...}`, and the headers a client needs to act on it).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("a valid API key is needed: Authorization: Bearer <key from the ingest-keys Secret>")]
    Unauthorized,
    #[error("Fiware-Service must name this tenant ({0})")]
    WrongService(String),
    #[error("this tenant does not accept {0:?} (spec.ingest.formats)")]
    FormatNotAccepted(IngestFormat),
    #[error("the body is larger than {0} bytes; send smaller batches")]
    BodyTooLarge(usize),
    #[error("{1}")]
    Body(StatusCode, String),
    #[error(transparent)]
    Malformed(#[from] BodyError),
    #[error("{count} items in one request; at most {max} are accepted at once")]
    TooManyItems { count: usize, max: usize },
    #[error("over the rate quota of {rate} rows per second; retry after {seconds} s")]
    OverRate { rate: u32, seconds: u64 },
    #[error(
        "more items in one request than the rate quota allows at once ({0}); send smaller batches"
    )]
    OverBurst(u32),
    #[error("{0}; nothing of this request was stored")]
    Unavailable(WriteError),
    #[error(transparent)]
    Refused(WriteError),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::WrongService(_) | Refusal::Refused(_) => StatusCode::FORBIDDEN,
            Refusal::FormatNotAccepted(_) => StatusCode::NOT_FOUND,
            Refusal::BodyTooLarge(_) | Refusal::TooManyItems { .. } | Refusal::OverBurst(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Refusal::Body(status, _) => *status,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::OverRate { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            axum::Json(json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Refusal::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Refusal::OverRate { seconds, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            Refusal::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

async fn write(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    format: IngestFormat,
) -> Response {
    let received = Timestamp::now();
    let response = match handle(&app, &headers, body, format, received).await {
        Ok(report) => report,
        Err(refusal) => refusal.into_response(),
    };
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
) -> Result<Response, Refusal> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !key.is_some_and(|key| app.keys.accepts(key)) {
        return Err(Refusal::Unauthorized);
    }
    if let Some(service) = headers.get("fiware-service") {
        // Orion sends the service in lower case; tenant names are lower case anyway.
        let named = service.to_str().map(str::to_ascii_lowercase).ok();
        if named.as_deref() != Some(app.tenant.as_str()) {
            return Err(Refusal::WrongService(app.tenant.clone()));
        }
    }
    if !app.formats.contains(&format) {
        return Err(Refusal::FormatNotAccepted(format));
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Refusal::BodyTooLarge(app.max_body_bytes),
        status => Refusal::Body(status, rejection.body_text()),
    })?;
    let Parsed {
        rows,
        rejected,
        ignored,
    } = match format {
        IngestFormat::Measurements => parse::parse_measurements(&body, received),
        IngestFormat::NgsiV2 => parse::parse_ngsi_notification(&body, received).map(|n| n.parsed),
        IngestFormat::SenML => parse::parse_senml(&body, received),
    }?;
    app.metrics.rows("rejected", rejected.len());
    app.metrics.rows("ignored", ignored.len());
    if rows.len() > app.writer.max_rows() {
        return Err(Refusal::TooManyItems {
            count: rows.len(),
            max: app.writer.max_rows(),
        });
    }
    app.rate.check(rows.len()).map_err(|wait| match wait {
        Some(wait) => Refusal::OverRate {
            rate: app.rate.rows_per_second(),
            seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
        },
        None => Refusal::OverBurst(app.rate.burst()),
    })?;
    let committed = rows.len();
    app.writer
        .submit(rows, received)
        .await
        .map_err(|error| match error {
            WriteError::Refused => Refusal::Refused(error),
            WriteError::Unavailable(_) | WriteError::Busy => Refusal::Unavailable(error),
        })?;
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
    Ok((status, axum::Json(report)).into_response())
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
