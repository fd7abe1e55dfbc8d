//! The HTTP API: `POST /v1/measurements`, `POST /v2/notify`, `POST /v1/senml`,
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! Order of checks for a write: API key (401), `Fiware-Service` (403), format enabled
//! (404), body size (413), memory for the body (503 with Retry-After), memory for parsing
//! it (503, or 413 when it could never fit), JSON (400 with position), rate quota (429
//! with Retry-After), then the rows go to the group-commit writer and the answer waits for
//! the commit: 200 when every item was stored, 207 when some were refused (each
//! explained), 400 when none could be, 503 when the database is unavailable (nothing was
//! acknowledged).
//!
//! Every write holds a [`Reservation`] of the pod's memory budget ([`crate::memory`]) for
//! the bytes it can hold at its peak, taken before it holds them: the body as it is read,
//! then what parsing it can take ([`parse::cost`]), kept until the answer. A body refused
//! for memory is still read to its end (and dropped as it arrives), so the sender gets the
//! answer rather than a reset connection.

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

use crate::auth::ApiKeys;
use crate::memory::{Budget, Reservation, Shortage};
use crate::metrics::Metrics;
use crate::parse::{self, BodyError, Ignored, Limits, Parsed, Rejected};
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
    pub memory: Budget,
    /// How long a request waits for its share of `memory` before a 503.
    pub memory_wait: Duration,
}

pub fn router(app: Arc<App>) -> Router {
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
    /// Explanations beyond the first [`parse::MAX_EXPLANATIONS`], counted, not listed.
    #[serde(skip_serializing_if = "is_zero")]
    unlisted_rejected: usize,
    #[serde(skip_serializing_if = "is_zero")]
    unlisted_ignored: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
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
    #[error("more than {0} items in one request; send smaller batches")]
    TooManyItems(usize),
    #[error(
        "parsing this body needs {needed} bytes of memory, more than this pod's budget \
         ({budget} bytes); send smaller batches"
    )]
    TooBigToParse { needed: usize, budget: usize },
    #[error("{0}; nothing of this request was stored")]
    NoMemory(Shortage),
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
            Refusal::BodyTooLarge(_)
            | Refusal::TooManyItems(_)
            | Refusal::OverBurst(_)
            | Refusal::TooBigToParse { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Body(status, _) => *status,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::OverRate { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable(_) | Refusal::NoMemory(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Refusal::Unavailable(_) | Refusal::NoMemory(_) => {
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
    body: Body,
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
    body: Body,
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
    let (body, mut reservation) = read_body(app, headers, body).await?;
    let limits = Limits {
        max_rows: app.writer.max_rows().min(app.rate.burst() as usize),
    };
    let needed = parse::cost::parse_bytes(&body, &limits);
    app.memory
        .grow(&mut reservation, needed, GROW_WAIT)
        .await
        .map_err(|shortage| match shortage {
            Shortage::Never { .. } => Refusal::TooBigToParse {
                needed: needed + body.len(),
                budget: app.memory.total(),
            },
            Shortage::Busy => Refusal::NoMemory(shortage),
        })?;
    let parsed = match format {
        IngestFormat::Measurements => {
            parse::measurements::parse_measurements_within(&body, received, &limits)
        }
        IngestFormat::NgsiV2 => {
            parse::ngsi::parse_ngsi_notification_within(&body, received, &limits).map(|n| n.parsed)
        }
        IngestFormat::SenML => parse::senml::parse_senml_within(&body, received, &limits),
    };
    drop(body);
    let Parsed {
        rows,
        rejected,
        ignored,
        unlisted_rejected,
        unlisted_ignored,
    } = parsed.map_err(|error| match error {
        BodyError::TooManyRows(max) if max == app.writer.max_rows() => Refusal::TooManyItems(max),
        BodyError::TooManyRows(_) => Refusal::OverBurst(app.rate.burst()),
        error => Refusal::Malformed(error),
    })?;
    app.metrics
        .rows("rejected", rejected.len() + unlisted_rejected);
    app.metrics
        .rows("ignored", ignored.len() + unlisted_ignored);
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
    // The rows are committed and dropped: the memory they held goes back with the answer.
    drop(reservation);
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
        unlisted_rejected,
        unlisted_ignored,
    };
    Ok((status, axum::Json(report)).into_response())
}

/// How long a request that already holds memory waits for more: short, so two requests
/// each waiting for what the other holds give way quickly.
const GROW_WAIT: Duration = Duration::from_millis(500);

/// A body without `Content-Length` (chunked) reserves memory in steps of this size.
const CHUNKED_STEP: usize = 256 * 1024;

/// Reads the body into memory reserved for it first. Over the size limit: 413; no memory
/// for it in time: 503 (and the rest of the body is read and dropped, so the sender
/// gets the answer).
async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Reservation), Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|length| length > app.max_body_bytes) {
        return Err(drain(app, stream, Refusal::BodyTooLarge(app.max_body_bytes)).await);
    }
    let first = declared.unwrap_or(CHUNKED_STEP).max(1);
    let mut reservation = match app.memory.reserve(first, app.memory_wait).await {
        Ok(reservation) => reservation,
        Err(shortage) => return Err(drain(app, stream, Refusal::NoMemory(shortage)).await),
    };
    let mut data = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            Refusal::Body(
                StatusCode::BAD_REQUEST,
                format!("failed to read the body: {error}"),
            )
        })?;
        if data.len() + chunk.len() > app.max_body_bytes {
            return Err(drain(app, stream, Refusal::BodyTooLarge(app.max_body_bytes)).await);
        }
        if data.len() + chunk.len() > reservation.bytes() {
            // Chunked, or longer than declared: memory for the next step first.
            let step = (data.len() + chunk.len() - reservation.bytes()).max(CHUNKED_STEP);
            if let Err(shortage) = app.memory.grow(&mut reservation, step, GROW_WAIT).await {
                drop(reservation);
                drop(data);
                return Err(drain(app, stream, Refusal::NoMemory(shortage)).await);
            }
        }
        data.extend_from_slice(&chunk);
    }
    Ok((data, reservation))
}

/// Reads what is left of a refused body without keeping it (at most twice the size
/// limit's worth: a sender still writing when the answer comes would see a broken pipe
/// instead of it), then hands back the refusal to answer with.
async fn drain(app: &App, mut stream: axum::body::BodyDataStream, refusal: Refusal) -> Refusal {
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > 2 * app.max_body_bytes {
            break;
        }
    }
    refusal
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
