//! The one HTTP client of the harness and the tests: plain HTTP/1.1 on loopback, with
//! connections reused as a sensor gateway would.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A plain HTTP/1.1 client (connections are reused, as a sensor gateway would).
#[derive(Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn get(&self, url: &str) -> Result<Answer> {
        let request = http::Request::get(url).body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    /// GETs `url` with the given headers (`Authorization`, `Accept`, ...).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        self.send(Self::get_request(url, headers)?).await
    }

    /// GETs `url` and returns as soon as the headers are in: the body is read by the
    /// caller, at its own pace.
    pub async fn open(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<http::Response<hyper::body::Incoming>> {
        Ok(self.0.request(Self::get_request(url, headers)?).await?)
    }

    fn get_request(url: &str, headers: &[(&str, &str)]) -> Result<http::Request<Full<Bytes>>> {
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.body(Full::new(Bytes::new()))?)
    }

    /// POSTs `body` with the given headers (`Authorization`, `Fiware-Service`, ...).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer> {
        let mut request = http::Request::post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(body.into()))?).await
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<Answer> {
        let response = self.0.request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// GET `path` on a loopback `port`; the body when the answer is 200.
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    let answer = HttpClient::new()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .await?;
    if answer.status != 200 {
        bail!("GET {path}: {}", answer.status);
    }
    Ok(String::from_utf8(answer.body.to_vec())?)
}
