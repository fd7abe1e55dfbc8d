//! The read API: QuantumLeap's URL shape over the tenant's measurements (and what other
//! tenants share with it), answered in JSON or CSV, streamed, paged by a cursor.
//!
//! - `GET /v2/entities`: the sensor catalogue, each sensor's metrics with the time and
//!   value of its last measurement.
//! - `GET /v2/entities/{id}`, `/v2/entities/{id}/attrs/{attr}`, `/v2/attrs/{attr}`,
//!   `/v2/attrs`: series of one sensor (all or `attrs` metrics), one series, one metric of
//!   several sensors (`id`), any (`id`, `attrs`).
//! - The same under `/shared/{provider}/{share}`: what `provider` shares with this tenant,
//!   read through the share's views, so the database decides what is visible.
//! - The same under `/open/{dataset}`, without a key and rate-limited per client: what the
//!   tenant publishes as open data, in buckets of its granularity or coarser, read as the
//!   tenant's public role through the dataset's function (so the database refuses
//!   anything else). `/open/catalog`: the DCAT-AP_IT catalogue of the open datasets.
//!
//! Every page is one read-only REPEATABLE READ transaction: the key of the first row
//! after the page is found first (so the `Link` header and the body's `next` can say
//! where the next page starts before the rows), then the rows are streamed from the
//! database to the client as they come, a few at a time: what a request holds does not
//! grow with its range.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio_postgres::{Row, RowStream};
use tracing::{debug, warn};

use super::cursor::Cursor;
use super::query::{self, Format, Invalid, Limits, Method, Params, SeriesQuery};
use super::sql::{self, Key, Source};
use super::{Database, ReadError, ReadMetrics};
use crate::auth::ApiKeys;
use crate::http::RequestId;

pub struct App {
    pub tenant: String,
    pub schema: String,
    pub keys: ApiKeys,
    pub database: Database,
    pub limits: Limits,
    pub metrics: ReadMetrics,
    pub open: OpenAccess,
    pub publisher: Publisher,
}

/// Who publishes the open data, as the catalogue names them.
pub struct Publisher {
    pub name: String,
    /// No catalogue without it (DCAT-AP_IT names the publisher by it).
    pub ipa_code: Option<String>,
    /// The base of the URLs the catalogue names.
    pub public_url: String,
}

/// Anonymous access: a rate per client, by its address.
pub struct OpenAccess {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    address_header: Option<axum::http::HeaderName>,
}

impl OpenAccess {
    pub fn new(per_minute: u32, address_header: Option<&str>) -> anyhow::Result<OpenAccess> {
        let per_minute = NonZeroU32::new(per_minute)
            .ok_or_else(|| anyhow::anyhow!("open requests per minute must be above 0"))?;
        let address_header = address_header
            .map(|name| {
                axum::http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| anyhow::anyhow!("{name:?} is not a header name"))
            })
            .transpose()?;
        Ok(OpenAccess {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)),
            address_header,
        })
    }

    /// The client's address: the proxy's header's last entry when configured (and
    /// present and an address), else the connection's peer.
    fn client(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        self.address_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| last.trim().parse().ok())
            .unwrap_or(peer)
    }

    /// 429 with `Retry-After` when the client is over its rate.
    pub(super) fn admit(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        id: RequestId,
    ) -> Option<Response> {
        let client = self.client(headers, peer);
        let not_until = self.limiter.check_key(&client).err()?;
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests for open data from this address: wait as Retry-After says",
            None,
            id,
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header_value(&wait.as_secs().max(1).to_string()),
        );
        Some(response)
    }

    /// Forgets, every minute, the clients whose rate is back to full: the memory held
    /// follows the clients of the last minute, not every address ever seen.
    pub async fn forget_idle_clients(app: Arc<App>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            app.open.limiter.retain_recent();
            app.open.limiter.shrink_to_fit();
        }
    }
}

/// The paths of the API, each under `/v2` and `/shared/{provider}/{share}/v2`; the
/// OpenAPI description lists the same.
pub const SERIES_PATHS: &[&str] = &[
    "/v2/entities/{id}",
    "/v2/entities/{id}/attrs/{attr}",
    "/v2/attrs/{attr}",
    "/v2/attrs",
];
pub const CATALOGUE_PATH: &str = "/v2/entities";
pub const SHARED_PREFIX: &str = "/shared/{provider}/{share}";
pub const OPEN_PREFIX: &str = "/open/{dataset}";
pub const OPEN_CATALOG_PATH: &str = "/open/catalog";

/// Bytes gathered before they are sent as one piece of the body.
const CHUNK: usize = 64 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for prefix in ["", SHARED_PREFIX, OPEN_PREFIX] {
        for path in SERIES_PATHS {
            router = router.route(&format!("{prefix}{path}"), get(series));
        }
        router = router.route(&format!("{prefix}{CATALOGUE_PATH}"), get(catalogue));
    }
    router
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    super::openapi::DOCUMENT,
                )
            }),
        )
        .route(OPEN_CATALOG_PATH, get(super::catalog::open_catalog))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            refusal(
                StatusCode::NOT_FOUND,
                "no such resource: see /openapi.json for the API",
                None,
                RequestId::new(),
            )
        })
        .with_state(app)
}

/// A refusal: `{"error", "parameter"?, "id"}`.
pub(super) fn refusal(
    status: StatusCode,
    message: impl Into<String>,
    parameter: Option<&str>,
    id: RequestId,
) -> Response {
    let mut body = json!({ "error": message.into(), "id": id.to_string() });
    if let Some(parameter) = parameter {
        body["parameter"] = json!(parameter);
    }
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-request-id", header_value(&id.to_string()));
    response
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn bad_request(invalid: Invalid, id: RequestId) -> Response {
    refusal(
        StatusCode::BAD_REQUEST,
        invalid.message,
        Some(invalid.parameter),
        id,
    )
}

/// 401 unless the request holds a key of the tenant's `read-keys`.
fn unauthorized(app: &App, headers: &HeaderMap, id: RequestId) -> Option<Response> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if key.is_some_and(|key| app.keys.accepts(key)) {
        return None;
    }
    Some(refusal(
        StatusCode::UNAUTHORIZED,
        "an API key of this tenant's read-keys Secret is needed: Authorization: Bearer <key>",
        None,
        id,
    ))
}

/// Whether the request may go on: open data for anyone within the rate, the rest with a
/// key.
fn admit(
    app: &App,
    path: &HashMap<String, String>,
    headers: &HeaderMap,
    peer: SocketAddr,
    id: RequestId,
) -> Option<Response> {
    if path.contains_key("dataset") {
        app.open.admit(headers, peer.ip(), id)
    } else {
        unauthorized(app, headers, id)
    }
}

/// The tenant's own data, a share of another's, or an open dataset, from the path.
fn source(app: &App, path: &HashMap<String, String>) -> Result<Source, Invalid> {
    if let Some(dataset) = path.get("dataset") {
        if !smartregion_contract::tenant::is_tenant_name(dataset) {
            return Err(Invalid {
                parameter: "dataset",
                message: format!("dataset {dataset:?} is not a dataset name"),
            });
        }
        return Ok(Source::open(&app.tenant, &app.schema, dataset));
    }
    match (path.get("provider"), path.get("share")) {
        (Some(provider), Some(share)) => {
            for (parameter, name) in [("provider", provider), ("share", share)] {
                if !smartregion_contract::tenant::is_tenant_name(name) {
                    return Err(Invalid {
                        parameter,
                        message: format!("{parameter} {name:?} is not a tenant or share name"),
                    });
                }
            }
            Ok(Source::shared(provider, share))
        }
        _ => Ok(Source::own(&app.schema)),
    }
}

/// What a failed statement means for the client: a share this tenant may not read (or
/// that does not exist: the two are not told apart) is 404, a database that cannot be
/// reached 503, a query that ran out of time 503 with advice; anything else 500. The
/// server's own words go to the log only.
pub(super) fn database_refusal(error: &ReadError, source: &Source, id: RequestId) -> Response {
    use tokio_postgres::error::SqlState;
    let error = match error {
        ReadError::Database(error) => error,
        ReadError::Refused(invalid) => return bad_request(invalid.clone(), id),
        ReadError::NoDataset => return no_dataset(id),
        ReadError::NoConnection(cause) => {
            warn!(%id, %cause, "a read found no database connection");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not reachable now; try again",
                None,
                id,
            );
        }
    };
    let code = error.code();
    if source.open.is_some()
        && (code == Some(&SqlState::UNDEFINED_FUNCTION)
            || code == Some(&SqlState::UNDEFINED_TABLE)
            || code == Some(&SqlState::INVALID_SCHEMA_NAME)
            || code == Some(&SqlState::UNDEFINED_OBJECT))
    {
        return no_dataset(id);
    }
    if source.provider.is_some()
        && (code == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
            || code == Some(&SqlState::UNDEFINED_TABLE)
            || code == Some(&SqlState::INVALID_SCHEMA_NAME))
    {
        return refusal(
            StatusCode::NOT_FOUND,
            "nothing of that name is shared with this tenant: its status lists what is (sharedWithMe)",
            None,
            id,
        );
    }
    warn!(%id, error = %super::error_text(error), "a read failed");
    if code == Some(&SqlState::QUERY_CANCELED) {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the query took longer than the tenant's statement timeout: ask for a shorter range or fewer rows (limit)",
            None,
            id,
        );
    }
    if code.is_none() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not reachable now; try again",
            None,
            id,
        );
    }
    refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the read failed; the service's log has the cause under this id",
        None,
        id,
    )
}

fn no_dataset(id: RequestId) -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "no open dataset of that name: /open/catalog lists what this tenant publishes",
        None,
        id,
    )
}

fn params(raw: Option<&str>) -> Result<Params, Invalid> {
    serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|error| Invalid {
        parameter: "query",
        message: format!(
            "{error}; the parameters are {}",
            query::PARAMETERS.join(", ")
        ),
    })
}

async fn series(
    State(app): State<Arc<App>>,
    Path(path): Path<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let id = RequestId::new();
    if let Some(refused) = admit(&app, &path, &headers, peer, id) {
        return refused;
    }
    let checked = params(raw.as_deref()).and_then(|params| {
        let source = source(&app, &path)?;
        let query = query::series(
            &params,
            path.get("id").cloned().into_iter().collect(),
            path.get("attr").cloned().into_iter().collect(),
            headers
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok()),
            Timestamp::now(),
            &app.limits,
        )?;
        if source.open.is_some() {
            query::check_open(&query)?;
        }
        Ok((source, query))
    });
    let (source, query) = match checked {
        Ok(checked) => checked,
        Err(invalid) => return bad_request(invalid, id),
    };
    let response = match stream_series(&app, &source, &query, id).await {
        Ok(page) => {
            let mut response = page.into_response(&query, uri.path(), raw.as_deref());
            response
                .headers_mut()
                .insert("x-request-id", header_value(&id.to_string()));
            response
        }
        Err(error) => database_refusal(&error, &source, id),
    };
    app.metrics.request("series", response.status());
    response
}

/// A page about to be streamed: where the next starts, and the rows.
struct Page {
    next: Option<Cursor>,
    provider: Option<String>,
    body: Pin<Box<dyn Stream<Item = Result<Bytes, tokio_postgres::Error>> + Send>>,
}

impl Page {
    fn into_response(self, query: &SeriesQuery, path: &str, raw: Option<&str>) -> Response {
        let content_type = match query.format {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        };
        let mut response = Response::new(Body::from_stream(self.body));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(next) = &self.next {
            headers.insert(
                header::LINK,
                header_value(&format!(
                    "<{path}?{}>; rel=\"next\"",
                    with_cursor(raw, &next.encode())
                )),
            );
        }
        if let Some(provider) = &self.provider {
            headers.insert("x-provider", header_value(provider));
        }
        response
    }
}

/// The query string with `cursor` set to `cursor` (already URL-safe).
fn with_cursor(raw: Option<&str>, cursor: &str) -> String {
    let mut pairs: Vec<&str> = raw
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("cursor="))
        .collect();
    let cursor = format!("cursor={cursor}");
    pairs.push(&cursor);
    pairs.join("&")
}

async fn stream_series(
    app: &App,
    source: &Source,
    query: &SeriesQuery,
    id: RequestId,
) -> Result<Page, ReadError> {
    let client = app.database.client().await?;
    let flavour = app.database.flavour(&client).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    if let Some(granularity) = open_session(&client, source).await? {
        query::check_open_granularity(query, granularity).map_err(ReadError::Refused)?;
    }
    let end = sql::page_end(source, &flavour, query);
    let end = client
        .query_opt(&end.text, &end.params().collect::<Vec<_>>())
        .await?
        .map(|row| Key {
            sensor: row.get(0),
            metric: row.get(1),
            time: row.get(2),
        });
    let statement = sql::series(source, &flavour, query, end.as_ref());
    let rows = client
        .query_raw(&statement.text, statement.params())
        .await?;
    let next = end.map(|key| Cursor {
        query: query.fingerprint(),
        sensor: key.sensor,
        metric: key.metric,
        time: key.time,
        from: query.from,
        to: query.to,
    });
    let mut encoder = Encoder::new(query, source.provider.as_deref(), next.as_ref());
    let head = encoder.head();
    let rows_out = app.metrics.rows.clone();
    let body = futures::stream::unfold(
        Some(Streaming {
            client,
            rows: Box::pin(rows),
            encoder,
            head: Some(head),
        }),
        move |state| {
            let rows_out = rows_out.clone();
            async move {
                let mut state = state?;
                let mut chunk = state.head.take().unwrap_or_default();
                loop {
                    match state.rows.next().await {
                        Some(Ok(row)) => {
                            state.encoder.row(&row, &mut chunk);
                            rows_out.inc();
                            if chunk.len() >= CHUNK {
                                return Some((Ok(Bytes::from(chunk)), Some(state)));
                            }
                        }
                        Some(Err(error)) => {
                            // The status line is sent: the body ends unfinished, which
                            // the client sees as a broken transfer, not a short answer.
                            warn!(%id, error = %super::error_text(&error), "a read failed while streaming");
                            return Some((Err(error), None));
                        }
                        None => {
                            state.encoder.tail(&mut chunk);
                            if let Err(error) = state.client.batch_execute("COMMIT").await {
                                debug!(%id, %error, "COMMIT of a read failed");
                            }
                            return Some((Ok(Bytes::from(chunk)), None));
                        }
                    }
                }
            }
        },
    );
    Ok(Page {
        next,
        provider: source.provider.clone(),
        body: Box::pin(body),
    })
}

/// For an open dataset: the transaction takes the tenant's public role (the database
/// refuses it anything but the open datasets), and the dataset's granularity is read.
/// `None` for any other source.
async fn open_session(
    client: &tokio_postgres::Client,
    source: &Source,
) -> Result<Option<jiff::SignedDuration>, ReadError> {
    let Some(open) = &source.open else {
        return Ok(None);
    };
    client
        .batch_execute(&format!("SET LOCAL ROLE {}", open.role))
        .await?;
    let granularity: Option<String> = client
        .query_opt(
            &format!(
                "SELECT metadata->>'granularity' FROM {} WHERE name = $1",
                open.datasets
            ),
            &[&open.dataset],
        )
        .await?
        .and_then(|row| row.get(0));
    let granularity = granularity.ok_or(ReadError::NoDataset)?;
    query::period(&granularity)
        .map(Some)
        .map_err(|_| ReadError::NoDataset)
}

struct Streaming {
    /// Held until the last row: the pool gets the connection back after the COMMIT (or,
    /// when the client went away, rolls back before it is used again).
    client: deadpool_postgres::Object,
    rows: Pin<Box<RowStream>>,
    encoder: Encoder,
    head: Option<Vec<u8>>,
}

/// Writes rows as JSON or CSV.
struct Encoder {
    format: Format,
    methods: Option<Vec<Method>>,
    head: Value,
    first: bool,
}

impl Encoder {
    fn new(query: &SeriesQuery, provider: Option<&str>, next: Option<&Cursor>) -> Encoder {
        let methods = query
            .aggregation
            .as_ref()
            .map(|aggregation| aggregation.methods.clone());
        let head = json!({
            "provider": provider,
            "fromDate": query.from.to_string(),
            "toDate": query.to.to_string(),
            "aggrMethod": methods.as_ref().map(|methods| methods.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "aggrPeriod": query.aggregation.as_ref().map(|aggregation| aggregation.period_text()),
            "next": next.map(Cursor::encode),
        });
        Encoder {
            format: query.format,
            methods,
            head,
            first: true,
        }
    }

    fn head(&mut self) -> Vec<u8> {
        match self.format {
            Format::Json => {
                let mut text = serde_json::to_string(&self.head).expect("JSON");
                text.pop(); // the closing brace: the rows follow
                text.push_str(",\"rows\":[");
                text.into_bytes()
            }
            Format::Csv => {
                let mut columns = vec!["entityId".to_string(), "attrName".into(), "time".into()];
                match &self.methods {
                    None => columns.push("value".into()),
                    Some(methods) => columns.extend(methods.iter().map(ToString::to_string)),
                }
                let mut out = Vec::new();
                self.csv_record(&columns, &mut out);
                out
            }
        }
    }

    /// One CSV record, quoted as CSV needs, appended to `out`.
    fn csv_record(&self, record: &[String], out: &mut Vec<u8>) {
        let mut writer = csv::WriterBuilder::new()
            .buffer_capacity(512)
            .from_writer(out);
        writer.write_record(record).expect("CSV into memory");
        writer.flush().expect("CSV into memory");
    }

    fn values(&self, row: &Row) -> Vec<(String, Value)> {
        match &self.methods {
            None => vec![("value".into(), number(row.get::<_, f64>(3)))],
            Some(methods) => methods
                .iter()
                .enumerate()
                .map(|(index, method)| {
                    let value = match method {
                        Method::Count => json!(row.get::<_, i64>(3 + index)),
                        _ => row
                            .get::<_, Option<f64>>(3 + index)
                            .map_or(Value::Null, number),
                    };
                    (method.to_string(), value)
                })
                .collect(),
        }
    }

    fn row(&mut self, row: &Row, out: &mut Vec<u8>) {
        let sensor: &str = row.get(0);
        let metric: &str = row.get(1);
        let time: Timestamp = row.get(2);
        let values = self.values(row);
        match self.format {
            Format::Json => {
                let mut object = serde_json::Map::new();
                object.insert("entityId".into(), json!(sensor));
                object.insert("attrName".into(), json!(metric));
                object.insert("time".into(), json!(time.to_string()));
                object.extend(values);
                if !self.first {
                    out.push(b',');
                }
                self.first = false;
                serde_json::to_writer(&mut *out, &object).expect("JSON into memory");
            }
            Format::Csv => {
                let mut record = vec![sensor.to_string(), metric.to_string(), time.to_string()];
                record.extend(values.into_iter().map(|(_, value)| match value {
                    Value::Null => String::new(),
                    value => value.to_string(),
                }));
                self.csv_record(&record, out);
            }
        }
    }

    fn tail(&mut self, out: &mut Vec<u8>) {
        if self.format == Format::Json {
            out.extend_from_slice(b"]}");
        }
    }
}

/// A value as JSON: `null` for what JSON cannot write (NaN, infinities).
fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

async fn catalogue(
    State(app): State<Arc<App>>,
    Path(path): Path<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let id = RequestId::new();
    if let Some(refused) = admit(&app, &path, &headers, peer, id) {
        return refused;
    }
    let checked = params(raw.as_deref()).and_then(|params| {
        let source = source(&app, &path)?;
        let format = query::format(
            params.format.as_deref(),
            headers
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok()),
        )?;
        let limit = query::catalogue_limit(&params, &app.limits)?;
        for (name, given) in [
            ("fromDate", &params.from_date),
            ("toDate", &params.to_date),
            ("aggrMethod", &params.aggr_method),
            ("aggrPeriod", &params.aggr_period),
            ("id", &params.id),
            ("attrs", &params.attrs),
        ] {
            if given.is_some() {
                return Err(Invalid {
                    parameter: "query",
                    message: format!("{name} does not apply to the catalogue: it takes limit, cursor and format"),
                });
            }
        }
        let after = match &params.cursor {
            None => None,
            Some(text) => {
                let cursor = Cursor::decode(text).map_err(|message| Invalid {
                    parameter: "cursor",
                    message: message.into(),
                })?;
                if cursor.query != "catalogue" {
                    return Err(Invalid {
                        parameter: "cursor",
                        message: "this cursor belongs to another query: it pages a series, not the catalogue".into(),
                    });
                }
                Some(cursor.sensor)
            }
        };
        Ok((source, format, limit, after))
    });
    let (source, format, limit, after) = match checked {
        Ok(checked) => checked,
        Err(invalid) => return bad_request(invalid, id),
    };
    let response = match read_catalogue(&app, &source, after.as_deref(), limit).await {
        Ok((entries, next)) => {
            catalogue_response(entries, next, &source, format, uri.path(), raw.as_deref())
        }
        Err(error) => database_refusal(&error, &source, id),
    };
    app.metrics.request("catalogue", response.status());
    response
}

/// One sensor of the catalogue.
#[derive(Debug, serde::Serialize)]
struct Entry {
    id: String,
    name: Option<String>,
    metadata: Value,
    attrs: Vec<Latest>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Latest {
    name: String,
    last_time: Option<String>,
    last_value: Value,
}

async fn read_catalogue(
    app: &App,
    source: &Source,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Entry>, Option<String>), ReadError> {
    let client = app.database.client().await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    open_session(&client, source).await?;
    let end = sql::catalogue_end(source, after, limit);
    let end: Option<String> = client
        .query_opt(&end.text, &end.params().collect::<Vec<_>>())
        .await?
        .map(|row| row.get(0));
    let statement = sql::catalogue(source, after, end.as_deref(), limit);
    let rows = client
        .query(&statement.text, &statement.params().collect::<Vec<_>>())
        .await?;
    client.batch_execute("COMMIT").await?;
    let mut entries: Vec<Entry> = Vec::new();
    for row in rows {
        let id: String = row.get(0);
        if entries.last().is_none_or(|entry| entry.id != id) {
            let metadata: Option<String> = row.get(2);
            entries.push(Entry {
                id,
                name: row.get(1),
                metadata: metadata
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or(Value::Null),
                attrs: Vec::new(),
            });
        }
        if let Some(metric) = row.get::<_, Option<String>>(3) {
            let entry = entries.last_mut().expect("pushed above");
            entry.attrs.push(Latest {
                name: metric,
                last_time: row
                    .get::<_, Option<Timestamp>>(4)
                    .map(|time| time.to_string()),
                last_value: row.get::<_, Option<f64>>(5).map_or(Value::Null, number),
            });
        }
    }
    Ok((entries, end))
}

fn catalogue_response(
    entries: Vec<Entry>,
    end: Option<String>,
    source: &Source,
    format: Format,
    path: &str,
    raw: Option<&str>,
) -> Response {
    let next = end.map(|sensor| {
        Cursor {
            query: "catalogue".into(),
            sensor,
            metric: String::new(),
            time: Timestamp::UNIX_EPOCH,
            from: Timestamp::UNIX_EPOCH,
            to: Timestamp::UNIX_EPOCH,
        }
        .encode()
    });
    let mut response = match format {
        Format::Json => axum::Json(json!({
            "provider": source.provider,
            "next": next,
            "entities": entries,
        }))
        .into_response(),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(Vec::new());
            let _ = csv.write_record(["entityId", "name", "attrName", "lastTime", "lastValue"]);
            for entry in &entries {
                let name = entry.name.clone().unwrap_or_default();
                if entry.attrs.is_empty() {
                    let _ = csv.write_record([entry.id.as_str(), &name, "", "", ""]);
                }
                for latest in &entry.attrs {
                    let value = match &latest.last_value {
                        Value::Null => String::new(),
                        value => value.to_string(),
                    };
                    let _ = csv.write_record([
                        entry.id.as_str(),
                        &name,
                        &latest.name,
                        latest.last_time.as_deref().unwrap_or(""),
                        &value,
                    ]);
                }
            }
            let body = csv.into_inner().unwrap_or_default();
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
        }
    };
    if let Some(next) = next {
        response.headers_mut().insert(
            header::LINK,
            header_value(&format!(
                "<{path}?{}>; rel=\"next\"",
                with_cursor(raw, &next)
            )),
        );
    }
    response
}

/// 200 when a connection to the database answers.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.database.check().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    crate::http::openmetrics(app.metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_replaces_the_cursor_and_keeps_the_rest() {
        assert_eq!(
            with_cursor(Some("fromDate=x&cursor=old&limit=5"), "new"),
            "fromDate=x&limit=5&cursor=new"
        );
        assert_eq!(with_cursor(None, "c"), "cursor=c");
    }
}
