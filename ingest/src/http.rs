//! The HTTP API: `POST /v1/measurements`, `POST /v2/notify`, `POST /v1/senml`,
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! Order of checks for a write: API key (401), `Fiware-Service` (403), format enabled
//! (404), body size (413), memory for the body (503 with Retry-After), the body's
//! deadline (408), memory for parsing it (503, or 413 when it could never fit), JSON (400
//! with position), rate quota (429 with Retry-After), then the rows go to the
//! group-commit writer and the answer waits for the commit: 200 when every item was
//! stored, 207 when some were refused (each explained), 400 when none could be, 422 when
//! PostgreSQL refused the request's data, 403 when the writer was seen to lack INSERT
//! (suspension, storage quota), 503 when the database is unavailable (nothing was
//! acknowledged).
//!
//! Every write answer carries an `X-Request-Id`; a refusal says what happened in a stable
//! sentence with that id (`{"error": ..., "id": ...}`), and the detail behind it (what
//! PostgreSQL said) goes to the log under the same id, never to the sender.
//!
//! Every write holds a [`Reservation`] of the pod's memory budget ([`crate::memory`]) for
//! the bytes it can hold at its peak, taken before it holds them: the body's first 256
//! KiB, then, once more arrives, its whole declared length (so a slow sender holds no
//! more than the first step), then what parsing it can take
//! ([`parse::cost`]), kept until the answer. A body must arrive at a minimum rate after a
//! grace period ([`BodyDeadline`]): a sender that trickles is answered 408 and its
//! connection closed. A body refused for size or memory is still read to its end, within
//! the same deadline (and dropped as it arrives), so the sender gets the answer rather
//! than a reset connection.

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
use tracing::{debug, warn};

use crate::auth::ApiKeys;
use crate::memory::{Budget, Reservation, Shortage};
use crate::metrics::Metrics;
use crate::parse::{self, BodyError, Format, Ignored, Limits, Parsed, Rejected, Window};
use crate::rate::RateQuota;
use crate::writer::{Store, WriteError};
pub use smartregion_contract::format::IngestFormat;

pub struct App {
    pub tenant: String,
    pub keys: ApiKeys,
    pub formats: Vec<IngestFormat>,
    pub rate: Arc<RateQuota>,
    pub writer: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub memory: Budget,
    /// How long a request waits for its share of `memory` before a 503.
    pub memory_wait: Duration,
    /// How fast a body must arrive.
    pub body_deadline: BodyDeadline,
    /// The times items may carry.
    pub window: Window,
}

/// How long a body may take: `grace` plus the time its bytes take at `min_rate` bytes per
/// second. Measured against the bytes received so far, so a body of any size arriving
/// at least at the minimum rate always makes it, and one that stalls is cut off at most
/// `grace` after its last progress that was owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDeadline {
    pub grace: Duration,
    pub min_rate: u32,
}

impl BodyDeadline {
    /// When a body of which `bytes` have arrived, started at `started`, must have sent
    /// more.
    fn after(&self, started: tokio::time::Instant, bytes: usize) -> tokio::time::Instant {
        started
            + self.grace
            + Duration::from_secs_f64(bytes as f64 / f64::from(self.min_rate.max(1)))
    }
}

/// A request's correlation id: in its answer (`X-Request-Id`, and `id` in a refusal) and
/// in every log line about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn new() -> RequestId {
        RequestId(rand::random())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for format in parse::FORMATS {
        router = router.route(
            format.kind().endpoint(),
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

/// Why a write stored nothing: each renders its own problem response (status, a stable
/// message as `{"error": ..., "id": ...}`, and the headers a client needs to act on it).
/// Details that are not the sender's business (what PostgreSQL said) are only logged.
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
    #[error("the body could not be read; nothing of this request was stored")]
    BodyUnreadable(String),
    #[error(
        "the body did not arrive in time (at least {min_rate} bytes per second after the \
         first {grace_seconds} s); nothing of this request was stored"
    )]
    BodyTooSlow { min_rate: u32, grace_seconds: u64 },
    #[error(transparent)]
    Malformed(#[from] BodyError),
    #[error("more than {0} items in one request; send smaller batches")]
    TooManyItems(usize),
    #[error(
        "this request needs {needed} bytes of memory (its body and its parse), more than \
         this pod's whole budget ({budget} bytes); send smaller batches"
    )]
    OverBudget { needed: usize, budget: usize },
    #[error("{0}; nothing of this request was stored")]
    NoMemory(Shortage),
    #[error("over the rate quota of {rate} rows per second; retry after {seconds} s")]
    OverRate { rate: u32, seconds: u64 },
    #[error(
        "more items in one request than the rate quota allows at once ({0}); send smaller batches"
    )]
    OverBurst(u32),
    #[error("the ingest queue is full; nothing of this request was stored; retry shortly")]
    Busy,
    #[error("the database is unavailable; nothing of this request was stored; retry shortly")]
    Unavailable(String),
    #[error(
        "the database refused the data of this request; nothing of it was stored \
         (the service's log has the reason under this request's id)"
    )]
    DataRefused(String),
    #[error(
        "writes are refused: the tenant is over its database storage quota or suspended; \
         see the tenant's WithinQuota condition"
    )]
    Refused,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::WrongService(_) | Refusal::Refused => StatusCode::FORBIDDEN,
            Refusal::FormatNotAccepted(_) => StatusCode::NOT_FOUND,
            Refusal::BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            Refusal::BodyTooLarge(_)
            | Refusal::TooManyItems(_)
            | Refusal::OverBurst(_)
            | Refusal::OverBudget { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyUnreadable(_) | Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::DataRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::OverRate { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable(_) | Refusal::Busy | Refusal::NoMemory(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// What the log gets beyond the answer: the detail kept from the sender.
    fn detail(&self) -> Option<&str> {
        match self {
            Refusal::BodyUnreadable(detail)
            | Refusal::Unavailable(detail)
            | Refusal::DataRefused(detail) => Some(detail),
            _ => None,
        }
    }

    fn into_response(self, id: RequestId) -> Response {
        let status = self.status();
        match self.detail() {
            Some(detail) => warn!(%id, status = status.as_u16(), %detail, "write refused"),
            None => debug!(%id, status = status.as_u16(), reason = %self, "write refused"),
        }
        let mut response = (
            status,
            axum::Json(json!({ "error": self.to_string(), "id": id.to_string() })),
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
            Refusal::Unavailable(_) | Refusal::Busy | Refusal::NoMemory(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<WriteError> for Refusal {
    fn from(error: WriteError) -> Refusal {
        match error {
            WriteError::Refused => Refusal::Refused,
            WriteError::Busy => Refusal::Busy,
            WriteError::Unavailable(detail) => Refusal::Unavailable(detail),
            WriteError::Data(detail) => Refusal::DataRefused(detail),
        }
    }
}

async fn write(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
    format: &'static dyn Format,
) -> Response {
    let received = Timestamp::now();
    let id = RequestId::new();
    let mut response = match handle(&app, &headers, body, format, received).await {
        Ok(report) => report,
        Err(refusal) => refusal.into_response(id),
    };
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    app.metrics
        .request(format.kind().endpoint(), response.status().as_u16());
    response
}

async fn handle(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    format: &'static dyn Format,
    received: Timestamp,
) -> Result<Response, Refusal> {
    authorize(app, headers)?;
    if !app.formats.contains(&format.kind()) {
        return Err(Refusal::FormatNotAccepted(format.kind()));
    }
    let (body, mut reservation) = read_body(app, headers, body).await?;
    let parsed = parse_body(app, format, body, &mut reservation, received).await?;
    app.metrics.rows("rejected", parsed.rejected_count());
    app.metrics.rows("ignored", parsed.ignored_count());
    let Parsed {
        rows,
        rejected,
        ignored,
        unlisted_rejected,
        unlisted_ignored,
    } = parsed;
    take_rate(app, rows.len())?;
    let committed = rows.len();
    app.writer.submit(rows, received).await?;
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

/// An API key of the tenant's, and no other tenant named in `Fiware-Service`.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Refusal> {
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
    Ok(())
}

/// Parses `body` as `format` once `reservation` also holds what the parse can take.
async fn parse_body(
    app: &App,
    format: &'static dyn Format,
    body: Vec<u8>,
    reservation: &mut Reservation,
    received: Timestamp,
) -> Result<Parsed, Refusal> {
    let limits = Limits {
        max_rows: app.writer.max_rows().min(app.rate.burst() as usize),
        window: app.window,
    };
    let needed = format.parse_cost(&body, &limits);
    app.memory
        .grow(reservation, needed, GROW_WAIT)
        .await
        .map_err(|shortage| short_of_memory(shortage, needed + body.len()))?;
    format
        .parse(&body, received, &limits)
        .map_err(|error| match error {
            BodyError::TooManyRows(max) if max == app.writer.max_rows() => {
                Refusal::TooManyItems(max)
            }
            BodyError::TooManyRows(_) => Refusal::OverBurst(app.rate.burst()),
            error => Refusal::Malformed(error),
        })
}

/// The refusal for a request that needs `needed` bytes in all and could not have them.
fn short_of_memory(shortage: Shortage, needed: usize) -> Refusal {
    match shortage {
        Shortage::Never { budget, .. } => Refusal::OverBudget { needed, budget },
        Shortage::Busy => Refusal::NoMemory(shortage),
    }
}

/// Takes `rows` from the tenant's rate quota.
fn take_rate(app: &App, rows: usize) -> Result<(), Refusal> {
    app.rate.check(rows).map_err(|wait| match wait {
        Some(wait) => Refusal::OverRate {
            rate: app.rate.rows_per_second(),
            seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
        },
        None => Refusal::OverBurst(app.rate.burst()),
    })
}

/// How long a request that already holds memory waits for more: short, so two requests
/// each waiting for what the other holds give way quickly.
const GROW_WAIT: Duration = Duration::from_millis(500);

/// The first reservation of a body: a sender that declares a large body holds no more
/// than this until it has sent this much.
const BODY_STEP: usize = 256 * 1024;

/// Reads the body into memory reserved for it as it arrives. Over the size limit: 413; no
/// memory for it in time: 503 (and the rest of the body is read and dropped, so the
/// sender gets the answer); too slow: 408.
async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Reservation), Refusal> {
    let started = tokio::time::Instant::now();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|length| length > app.max_body_bytes) {
        let refusal = Refusal::BodyTooLarge(app.max_body_bytes);
        return Err(drain(app, stream, started, 0, refusal).await);
    }
    let first = declared
        .unwrap_or(BODY_STEP)
        .clamp(1, BODY_STEP.min(app.memory.total()));
    let mut reservation = match app.memory.reserve(first, app.memory_wait).await {
        Ok(reservation) => reservation,
        Err(shortage) => {
            let refusal = short_of_memory(shortage, first);
            return Err(drain(app, stream, started, 0, refusal).await);
        }
    };
    // The buffer never holds more room than is reserved: room allocated ahead (even
    // untouched) ends up scattered over the allocator's free memory once requests fail
    // part way, and that memory stays the process's, outside the budget.
    let mut data = Vec::with_capacity(reservation.bytes());
    loop {
        let chunk = match tokio::time::timeout_at(
            app.body_deadline.after(started, data.len()),
            stream.next(),
        )
        .await
        {
            Err(_) => return Err(too_slow(app)),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(Refusal::BodyUnreadable(error.to_string())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let length = data.len() + chunk.len();
        if length > app.max_body_bytes {
            let refusal = Refusal::BodyTooLarge(app.max_body_bytes);
            return Err(drain(app, stream, started, length, refusal).await);
        }
        if length > reservation.bytes() {
            // Past the first step, a declared length is reserved whole (as many bodies at
            // once as the budget holds, as before any was read); without one, doubling.
            let wanted = match declared {
                Some(declared) if declared >= length => declared,
                _ => length.max(2 * reservation.bytes()),
            };
            let step = wanted - reservation.bytes();
            if let Err(shortage) = app.memory.grow(&mut reservation, step, GROW_WAIT).await {
                let refusal = short_of_memory(shortage, wanted);
                drop(reservation);
                drop(data);
                return Err(drain(app, stream, started, length, refusal).await);
            }
            data.reserve_exact(reservation.bytes() - data.len());
        }
        data.extend_from_slice(&chunk);
    }
    Ok((data, reservation))
}

fn too_slow(app: &App) -> Refusal {
    Refusal::BodyTooSlow {
        min_rate: app.body_deadline.min_rate,
        grace_seconds: app.body_deadline.grace.as_secs(),
    }
}

/// Reads what is left of a refused body without keeping it (at most twice the size
/// limit's worth: a sender still writing when the answer comes would see a broken pipe
/// instead of it; and no longer than its deadline), then hands back the refusal to answer
/// with.
async fn drain(
    app: &App,
    mut stream: axum::body::BodyDataStream,
    started: tokio::time::Instant,
    mut read: usize,
    refusal: Refusal,
) -> Refusal {
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout_at(app.body_deadline.after(started, read), stream.next()).await
    {
        read += chunk.len();
        if read > 2 * app.max_body_bytes {
            break;
        }
    }
    refusal
}

/// 200 while the store takes rows; otherwise 503 with the reason (its cause is logged
/// when the reason changes, see [`crate::health`]).
async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.writer.unready() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(unready) => (StatusCode::SERVICE_UNAVAILABLE, unready.reason).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    openmetrics(app.metrics.encode())
}

/// Metrics as Prometheus scrapes them: `/metrics` of both modes.
pub fn openmetrics(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
