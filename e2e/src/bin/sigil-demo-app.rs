//! The demo's protected app: it answers every request with what the sidecar
//! told it about the caller, so a person (or a test) can see the verified
//! identity arrive. It trusts X-Sigil-* headers only because the sidecar in
//! front of it strips any a client sends.
//!
//! Usage: sigil-demo-app [LISTEN_ADDR]   (default 127.0.0.1:8081)

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("sigil-demo-app listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(answer(&req))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = serde_json::json!({
        "message": "hello from the protected app",
        "path": req.uri().path(),
        "subject": header("x-sigil-subject"),
        "clientId": header("x-sigil-client-id"),
        "scope": header("x-sigil-scope"),
        "authorizationForwarded": req.headers().contains_key("authorization"),
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}
