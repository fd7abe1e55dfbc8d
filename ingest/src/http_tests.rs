//! Every answer of the HTTP API, from the router as `server` serves it (through
//! `tower::ServiceExt::oneshot`, no socket), with a stand-in store: each refusal's
//! status, headers and message, and that no detail of the store's reaches the sender.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use jiff::SignedDuration;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::health::{DATABASE_UNREACHABLE, Unready};
use crate::parse::Measurement;

const KEY: &str = "test-key-0123456789abcdef";

/// A store that answers what it is told to, in turn (`Ok` once they run out), and
/// remembers what it was given.
#[derive(Default)]
struct Stand {
    answers: Mutex<VecDeque<Result<(), WriteError>>>,
    submitted: Mutex<Vec<Vec<Measurement>>>,
    unready: Option<Unready>,
}

impl Stand {
    fn answering(answer: Result<(), WriteError>) -> Stand {
        Stand {
            answers: Mutex::new(VecDeque::from([answer])),
            ..Stand::default()
        }
    }

    fn rows(&self) -> usize {
        self.submitted.lock().unwrap().iter().map(Vec::len).sum()
    }
}

impl Store for Stand {
    fn submit(
        &self,
        rows: Vec<Measurement>,
        _received: Timestamp,
    ) -> BoxFuture<'_, Result<(), WriteError>> {
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
        if answer.is_ok() {
            self.submitted.lock().unwrap().push(rows);
        }
        Box::pin(async move { answer })
    }

    fn max_rows(&self) -> usize {
        1000
    }

    fn unready(&self) -> Option<Unready> {
        self.unready.clone()
    }
}

/// The service's defaults, scaled down where a test would otherwise wait or allocate.
fn app(store: Arc<Stand>) -> App {
    let rate = NonZeroU32::new(10_000).unwrap();
    App {
        tenant: "prato".into(),
        keys: ApiKeys::parse(KEY).unwrap(),
        formats: IngestFormat::ALL.to_vec(),
        rate: Arc::new(RateQuota::new(rate, rate)),
        writer: store,
        metrics: Arc::new(Metrics::default()),
        max_body_bytes: 64 * 1024,
        memory: Budget::new(16 * 1024 * 1024),
        memory_wait: Duration::from_millis(50),
        body_deadline: BodyDeadline {
            grace: Duration::from_millis(200),
            min_rate: 1024,
        },
        window: Window {
            retention_days: Some(365),
            max_ahead: Some(SignedDuration::from_mins(5)),
        },
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(app: App, request: Request<Body>) -> Answer {
    let response = router(Arc::new(app)).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

fn post(path: &str) -> axum::http::request::Builder {
    Request::post(path).header("authorization", format!("Bearer {KEY}"))
}

fn now() -> String {
    Timestamp::now().to_string()
}

/// A `/v1/measurements` body of `rows` good items.
fn measurements(rows: usize) -> String {
    let items: Vec<Value> = (0..rows)
        .map(|i| json!({"sensor": "s", "metric": "m", "value": i, "time": now()}))
        .collect();
    Value::Array(items).to_string()
}

async fn send(app: App, path: &str, body: String) -> Answer {
    call(app, post(path).body(Body::from(body)).unwrap()).await
}

/// A refusal: its status, a stable message, the request's id in body and header.
fn refused(answer: &Answer, status: StatusCode) -> &str {
    assert_eq!(answer.status, status, "{}", answer.body);
    let id = answer.body["id"].as_str().expect("a correlation id");
    assert_eq!(id.len(), 16);
    assert_eq!(answer.headers["x-request-id"], id);
    answer.body["error"].as_str().expect("a message")
}

#[tokio::test]
async fn items_stored_all_some_or_none_answer_200_207_and_400() {
    let store = Arc::new(Stand::default());
    let all = send(app(store.clone()), "/v1/measurements", measurements(3)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["committed"], 3);
    assert!(all.headers.contains_key("x-request-id"));

    let mixed = json!([
        {"sensor": "s", "metric": "m", "value": 1, "time": now()},
        {"sensor": "s", "metric": "m", "value": 2, "time": "2100-01-01T00:00:00Z"},
    ]);
    let some = send(app(store.clone()), "/v1/measurements", mixed.to_string()).await;
    assert_eq!(some.status, StatusCode::MULTI_STATUS, "{}", some.body);
    assert_eq!(some.body["rejected"][0]["index"], 1);
    assert_eq!(some.body["rejected"][0]["field"], "time");

    let senml = json!([{"bn": "d:", "n": "t", "v": 1, "t": -2.3e11}]).to_string();
    let none = send(app(store.clone()), "/v1/senml", senml).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST, "{}", none.body);
    assert_eq!(none.body["committed"], 0);
    assert_eq!(store.rows(), 4);
}

#[tokio::test]
async fn malformed_json_is_400_with_its_position() {
    let answer = send(app(Arc::default()), "/v2/notify", "{\"data\": [".into()).await;
    let message = refused(&answer, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("malformed JSON at line 1"), "{message}");
}

#[tokio::test]
async fn a_missing_key_is_401_and_another_tenant_403() {
    let request = Request::post("/v1/measurements")
        .body(Body::from(measurements(1)))
        .unwrap();
    let answer = call(app(Arc::default()), request).await;
    refused(&answer, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");

    let request = post("/v2/notify")
        .header("fiware-service", "pisa")
        .body(Body::from("{}"))
        .unwrap();
    let answer = call(app(Arc::default()), request).await;
    assert!(refused(&answer, StatusCode::FORBIDDEN).contains("(prato)"));
}

#[tokio::test]
async fn a_format_the_tenant_does_not_accept_is_404() {
    let mut senml_only = app(Arc::default());
    senml_only.formats = vec![IngestFormat::SenML];
    let answer = send(senml_only, "/v1/measurements", measurements(1)).await;
    assert!(refused(&answer, StatusCode::NOT_FOUND).contains("Measurements"));
}

#[tokio::test]
async fn too_large_too_many_over_the_burst_or_too_big_to_parse_is_413() {
    let request = post("/v1/measurements")
        .header("content-length", "70000")
        .body(Body::from(vec![b' '; 70_000]))
        .unwrap();
    let answer = call(app(Arc::default()), request).await;
    assert!(refused(&answer, StatusCode::PAYLOAD_TOO_LARGE).contains("larger than 65536"));

    // The store takes 1000 rows at most.
    let mut roomy = app(Arc::default());
    roomy.max_body_bytes = 1024 * 1024;
    let answer = send(roomy, "/v1/measurements", measurements(1001)).await;
    assert!(refused(&answer, StatusCode::PAYLOAD_TOO_LARGE).contains("more than 1000 items"));

    let mut small_burst = app(Arc::default());
    let rate = NonZeroU32::new(10).unwrap();
    small_burst.rate = Arc::new(RateQuota::new(rate, NonZeroU32::new(20).unwrap()));
    let answer = send(small_burst, "/v1/measurements", measurements(21)).await;
    assert!(
        refused(&answer, StatusCode::PAYLOAD_TOO_LARGE).contains("rate quota allows at once (20)")
    );

    // The body fits a 300 KiB budget (with its first 256 KiB step), its parse does not.
    let mut tiny = app(Arc::default());
    tiny.memory = Budget::new(300 * 1024);
    let answer = send(tiny, "/v1/measurements", measurements(300)).await;
    let message = refused(&answer, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        message.contains("more than this pod's whole budget (307200 bytes)"),
        "{message}"
    );
    // Nor does a body larger than the whole budget, also one without a length.
    let mut tinier = app(Arc::default());
    tinier.memory = Budget::new(64 * 1024);
    tinier.max_body_bytes = 1024 * 1024;
    let answer = send(tinier, "/v1/measurements", measurements(1000)).await;
    refused(&answer, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_body_that_stalls_is_408() {
    let stalled = futures::stream::iter([Ok::<_, std::io::Error>(bytes_of("[{"))])
        .chain(futures::stream::pending());
    let request = post("/v1/measurements")
        .header("content-length", "1000")
        .body(Body::from_stream(stalled))
        .unwrap();
    let answer = call(app(Arc::default()), request).await;
    let message = refused(&answer, StatusCode::REQUEST_TIMEOUT);
    assert!(
        message.contains("at least 1024 bytes per second"),
        "{message}"
    );
}

fn bytes_of(text: &'static str) -> axum::body::Bytes {
    axum::body::Bytes::from_static(text.as_bytes())
}

#[tokio::test]
async fn over_the_rate_is_429_with_retry_after() {
    let mut slow = app(Arc::default());
    let rate = NonZeroU32::new(10).unwrap();
    slow.rate = Arc::new(RateQuota::new(rate, NonZeroU32::new(20).unwrap()));
    let rate = slow.rate.clone();
    assert_eq!(rate.check(20), Ok(()));
    let answer = send(slow, "/v1/measurements", measurements(10)).await;
    refused(&answer, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "1");
}

#[tokio::test]
async fn the_stores_refusals_map_to_403_422_and_503_without_their_detail() {
    let secret = "ERROR: timestamp out of range at relation t_prato.measurements";
    for (error, status, retry) in [
        (WriteError::Refused, StatusCode::FORBIDDEN, false),
        (
            WriteError::Data(secret.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
        ),
        (
            WriteError::Unavailable(secret.into()),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (WriteError::Busy, StatusCode::SERVICE_UNAVAILABLE, true),
    ] {
        let store = Arc::new(Stand::answering(Err(error.clone())));
        let answer = send(app(store.clone()), "/v1/measurements", measurements(2)).await;
        let message = refused(&answer, status);
        assert!(!message.contains("out of range"), "{error:?}: {message}");
        assert!(!message.contains("t_prato"), "{error:?}: {message}");
        assert_eq!(
            answer.headers.contains_key("retry-after"),
            retry,
            "{error:?}"
        );
        assert_eq!(store.rows(), 0);
    }
}

#[tokio::test]
async fn no_memory_for_a_body_is_503_with_retry_after() {
    let full = app(Arc::default());
    let _everything = full
        .memory
        .reserve(full.memory.total(), Duration::ZERO)
        .await
        .unwrap();
    let answer = send(full, "/v1/measurements", measurements(1)).await;
    refused(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "1");
}

#[tokio::test]
async fn readyz_gives_the_stores_reason() {
    let answer = call(
        app(Arc::default()),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let down = Stand {
        unready: Some(Unready {
            reason: DATABASE_UNREACHABLE,
            cause: "connection refused".into(),
        }),
        ..Stand::default()
    };
    let answer = call(
        app(Arc::new(down)),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, DATABASE_UNREACHABLE);
}
