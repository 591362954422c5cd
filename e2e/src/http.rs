//! A small HTTP/1.1 client for talking to Sigil's servers on loopback in
//! tests and the demo.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request; `headers` are (name, value) pairs.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client().request(builder.body(Full::new(body.into()))?).await?;
    let (parts, body) = response.into_parts();
    Ok(Reply { status: parts.status, headers: parts.headers, body: body.collect().await?.to_bytes() })
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    send(Method::GET, url, headers, Bytes::new()).await
}

/// POSTs an `application/x-www-form-urlencoded` body (already encoded).
pub async fn post_form(
    url: &str,
    form: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let mut all = vec![(header::CONTENT_TYPE.as_str(), "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    send(Method::POST, url, &all, form.to_owned()).await
}

/// Polls `url` until it answers 200 (a readiness probe), or panics after `timeout`.
pub async fn wait_ok(url: &str, timeout: std::time::Duration) {
    crate::eventually(url, timeout, || async {
        get(url, &[]).await.ok().filter(|r| r.status == StatusCode::OK).map(|_| ())
    })
    .await;
}
