//! The request path: strip what clients may not send, verify, authorize,
//! forward to the app, stream the answer back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::auth::{Authenticator, Identity};
use crate::bearer;
use crate::metrics::Metrics;
use crate::rejection::{Denial, plain};
use crate::routes::{self, Routes};

/// Upstream bodies stream through untouched; the sidecar's own answers are small.
pub type Body = Either<Incoming, Full<Bytes>>;

pub const X_SIGIL_SUBJECT: HeaderName = HeaderName::from_static("x-sigil-subject");
pub const X_SIGIL_SCOPE: HeaderName = HeaderName::from_static("x-sigil-scope");
pub const X_SIGIL_CLIENT_ID: HeaderName = HeaderName::from_static("x-sigil-client-id");
pub const X_SIGIL_CLAIMS: HeaderName = HeaderName::from_static("x-sigil-claims");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub struct ProxyConfig {
    pub upstream: Uri,
    pub routes: Routes,
    pub forward_token: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

pub struct Proxy {
    auth: Arc<Authenticator>,
    routes: Routes,
    client: Client<HttpConnector, Incoming>,
    scheme: Scheme,
    authority: Authority,
    forward_token: bool,
    response_timeout: Duration,
    metrics: Metrics,
}

impl Proxy {
    pub fn new(config: &ProxyConfig, auth: Arc<Authenticator>, metrics: Metrics) -> Result<Proxy, crate::Error> {
        let (Some(scheme), Some(authority)) = (config.upstream.scheme(), config.upstream.authority()) else {
            return Err(crate::Error::Config(format!("--upstream {}: expected http://HOST:PORT", config.upstream)));
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        // The app is on loopback: keep idle connections a while, many of them.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Proxy {
            auth,
            routes: config.routes.clone(),
            client,
            scheme: scheme.clone(),
            authority: authority.clone(),
            forward_token: config.forward_token,
            response_timeout: config.response_timeout,
            metrics,
        })
    }

    pub async fn handle(&self, mut req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        // First, on every request, verified or public: the app must be able to
        // trust that X-Sigil-* came from us.
        strip_sigil_headers(req.headers_mut());
        // Hop-by-hop headers go before anything is added: a client listing
        // `Connection: x-sigil-subject` must not be able to delete what we add.
        let upgrade =
            wants_upgrade(&req).then(|| (req.headers().get(header::UPGRADE).cloned(), hyper::upgrade::on(&mut req)));
        remove_hop_by_hop(req.headers_mut());
        let path = req.uri().path();
        if !routes::is_normalized(path) {
            return self.deny(Denial::BadPath);
        }
        let identity = if self.routes.is_public(path) {
            None
        } else {
            match self.authorize(&req) {
                Ok(identity) => Some(identity),
                Err(denial) => return self.deny(denial),
            }
        };
        if !self.forward_token {
            req.headers_mut().remove(header::AUTHORIZATION);
        }
        if let Some(identity) = &identity {
            insert_identity(req.headers_mut(), identity);
        }
        let outcome = if identity.is_some() { "forwarded" } else { "public" };
        self.forward(req, upgrade, remote, outcome).await
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<Arc<Identity>, Denial> {
        let token = bearer::extract(req.headers(), req.uri().query())?;
        let identity = self.auth.authenticate(token).map_err(Denial::InvalidToken)?;
        let mut required = self.routes.required_scopes(req.uri().path());
        if required.any(|scope| !identity.has_scope(scope)) {
            return Err(Denial::InsufficientScope);
        }
        Ok(identity)
    }

    fn deny(&self, denial: Denial) -> Response<Body> {
        self.metrics.rejection(denial.label());
        match denial {
            Denial::InvalidToken(reason) => tracing::debug!(%reason, "token rejected"),
            Denial::InvalidRequest(reason) => tracing::debug!(reason, "request rejected"),
            other => tracing::debug!(reason = other.label(), "request rejected"),
        }
        denial.response().map(Either::Right)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        upgrade: Option<(Option<HeaderValue>, OnUpgrade)>,
        remote: SocketAddr,
        outcome: &'static str,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 carries the host in :authority; HTTP/1.1 needs Host.
            if let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let client_upgrade = match upgrade {
            Some((Some(protocol), on_upgrade)) => {
                parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol);
                Some(on_upgrade)
            }
            _ => None,
        };
        set_forwarded(&mut parts.headers, remote);
        let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = match Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => return self.deny(Denial::BadPath),
        };
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let mut response = match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let kind = if e.is_connect() { "connect" } else { "request" };
                self.metrics.upstream_error(kind);
                tracing::warn!(kind, error = %crate::error_chain(&e), "upstream request failed");
                return plain(StatusCode::BAD_GATEWAY, "bad gateway\n").map(Either::Right);
            }
            Err(_) => {
                self.metrics.upstream_error("timeout");
                tracing::warn!(timeout = ?self.response_timeout, "upstream did not answer in time");
                return plain(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n").map(Either::Right);
            }
        };
        self.metrics.request(outcome);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                self.metrics.upstream_error("unrequested_upgrade");
                return plain(StatusCode::BAD_GATEWAY, "bad gateway\n").map(Either::Right);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            // Keep Connection/Upgrade: they are the 101's meaning.
            return response.map(|_| Either::Right(Full::default()));
        }
        remove_hop_by_hop(response.headers_mut());
        response.map(Either::Left)
    }
}

fn strip_sigil_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with("x-sigil-")).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

fn insert_identity(headers: &mut HeaderMap, identity: &Identity) {
    for (name, value) in [
        (X_SIGIL_SUBJECT, &identity.subject),
        (X_SIGIL_SCOPE, &identity.scope),
        (X_SIGIL_CLIENT_ID, &identity.client_id),
    ] {
        if let Some(value) = value {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(X_SIGIL_CLAIMS, identity.claims.clone());
}

/// An HTTP/1.1 request asking to switch protocols (e.g. WebSocket).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers).filter_map(|t| HeaderName::try_from(t).ok()).collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Appends the peer to X-Forwarded-For and states the scheme it used.
fn set_forwarded(headers: &mut HeaderMap, remote: SocketAddr) {
    let prior: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let ip = remote.ip().to_string();
    let value = if prior.is_empty() { ip } else { format!("{}, {ip}", prior.join(", ")) };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
