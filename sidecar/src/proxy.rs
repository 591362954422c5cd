//! The request path, stage by stage in the order that matters: sanitise
//! headers, normalise the path, route (public or protected), authenticate,
//! authorise, forward. Each stage is a small pure function in its own module;
//! this one composes them and does the I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use sigil_runtime::client_ip::Cidr;

use crate::auth::{Authenticator, Identity};
use crate::bearer;
use crate::headers::{self, Underscores};
use crate::metrics::Metrics;
use crate::path::{self, NormalPath};
use crate::rejection::{Denial, plain};
use crate::routes::Routes;
use crate::tunnel::{self, Bounds};
use crate::upstream::{PooledBody, Upstream};

/// Upstream bodies stream through untouched; the sidecar's own answers are small.
pub type Body = Either<PooledBody, Full<Bytes>>;

pub struct ProxyConfig {
    pub upstream: Uri,
    pub routes: Routes,
    pub underscores: Underscores,
    pub trusted_proxies: Vec<Cidr>,
    pub tunnels: Bounds,
    pub forward_token: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

pub struct Proxy {
    auth: Arc<Authenticator>,
    routes: Routes,
    underscores: Underscores,
    trusted_proxies: Vec<Cidr>,
    tunnels: Bounds,
    upstream: Arc<Upstream>,
    authority: Authority,
    forward_token: bool,
    response_timeout: Duration,
    metrics: Metrics,
}

impl Proxy {
    pub fn new(config: &ProxyConfig, auth: Arc<Authenticator>, metrics: Metrics) -> Result<Proxy, crate::Error> {
        let plain_http = config.upstream.scheme() == Some(&Scheme::HTTP);
        let (true, Some(authority)) = (plain_http, config.upstream.authority()) else {
            return Err(crate::Error::Config(format!("--upstream {}: expected http://HOST:PORT", config.upstream)));
        };
        Ok(Proxy {
            auth,
            routes: config.routes.clone(),
            underscores: config.underscores,
            trusted_proxies: config.trusted_proxies.clone(),
            tunnels: config.tunnels,
            upstream: Upstream::new(authority, config.connect_timeout),
            authority: authority.clone(),
            forward_token: config.forward_token,
            response_timeout: config.response_timeout,
            metrics,
        })
    }

    pub async fn handle(&self, mut req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        // 1. Headers: before anything reads them, so the app can trust that
        // X-Sigil-* came from us, on public paths too.
        if headers::sanitize(req.headers_mut(), self.underscores).is_err() {
            return self.deny(Denial::UnderscoreHeader);
        }
        let upgrade =
            wants_upgrade(&req).then(|| (req.headers().get(header::UPGRADE).cloned(), hyper::upgrade::on(&mut req)));
        headers::remove_hop_by_hop(req.headers_mut());
        // 2. One spelling of the path for every decision and for the app.
        let uri = req.uri().clone();
        let normal = match path::normalize(uri.path(), self.routes.case_insensitive()) {
            Ok(normal) => normal,
            Err(e) => return self.deny(Denial::BadPath(e)),
        };
        // 3-5. Route, authenticate, authorise.
        let identity = if self.routes.is_public(&normal.route) {
            None
        } else {
            match self.authorize(&req, &normal.route) {
                Ok(identity) => Some(identity),
                Err(denial) => return self.deny(denial),
            }
        };
        // 6. Forward what was decided on.
        if !self.forward_token {
            req.headers_mut().remove(header::AUTHORIZATION);
        }
        if let Some(identity) = &identity {
            headers::insert_identity(req.headers_mut(), identity);
        }
        // No tunnel without a verified token: a public path never upgrades,
        // and a tunnel closes when the token that opened it expires.
        let upgrade = match &identity {
            Some(identity) => upgrade.map(|(protocol, on)| (protocol, on, identity.expires_at)),
            None => None,
        };
        let outcome = if identity.is_some() { "forwarded" } else { "public" };
        let Some(target) = forward_target(&uri, &normal) else {
            return self.deny(Denial::BadPath(path::PathError::NotAbsolute));
        };
        self.forward(req, target, upgrade, remote, outcome).await
    }

    fn authorize(&self, req: &Request<Incoming>, route: &str) -> Result<Arc<Identity>, Denial> {
        let token = bearer::extract(req.headers(), req.uri().query())?;
        let identity = self.auth.authenticate(token).map_err(Denial::InvalidToken)?;
        let mut required = self.routes.required_scopes(route);
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
            Denial::BadPath(reason) => tracing::debug!(%reason, "path rejected"),
            other => tracing::debug!(reason = other.label(), "request rejected"),
        }
        denial.response().map(Either::Right)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        target: PathAndQuery,
        upgrade: Option<(Option<HeaderValue>, OnUpgrade, i64)>,
        remote: SocketAddr,
        outcome: &'static str,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 carries the host in :authority; HTTP/1.1 needs Host,
            // the app's own when the client named none.
            let host = parts.uri.authority().unwrap_or(&self.authority);
            if let Ok(host) = HeaderValue::from_str(host.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let client_upgrade = match upgrade {
            Some((Some(protocol), on_upgrade, expires_at)) => {
                parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol);
                Some((on_upgrade, expires_at))
            }
            _ => None,
        };
        headers::set_forwarded(&mut parts.headers, remote.ip(), &self.trusted_proxies);
        // Origin-form: the app is the server, not a proxy.
        parts.uri = Uri::from(target);
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let mut response = match tokio::time::timeout(self.response_timeout, self.upstream.send(request)).await {
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
            let Some((client_upgrade, expires_at)) = client_upgrade else {
                self.metrics.upstream_error("unrequested_upgrade");
                return plain(StatusCode::BAD_GATEWAY, "bad gateway\n").map(Either::Right);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let bounds = self.tunnels;
            let deadline = tunnel::deadline(bounds, tokio::time::Instant::now(), crate::auth::unix_now(), expires_at);
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                if let Some(closed) = tunnel::relay(client_upgrade, upstream_upgrade, bounds, deadline).await {
                    metrics.tunnel_closed(closed.label());
                }
            });
            // Keep Connection/Upgrade: they are the 101's meaning.
            return response.map(|_| Either::Right(Full::default()));
        }
        headers::remove_hop_by_hop(response.headers_mut());
        response.map(Either::Left)
    }
}

/// The normalised path with the query as received; the request's own target
/// when the path was already normal.
fn forward_target(uri: &Uri, normal: &NormalPath<'_>) -> Option<PathAndQuery> {
    if matches!(normal.path, std::borrow::Cow::Borrowed(_)) {
        return Some(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    let target = match uri.query() {
        Some(query) => format!("{}?{query}", normal.path),
        None => normal.path.clone().into_owned(),
    };
    PathAndQuery::try_from(target).ok()
}

/// An HTTP/1.1 request asking to switch protocols (e.g. WebSocket).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && headers::connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}
