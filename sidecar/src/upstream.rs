//! The connections to the app: HTTP/1.1 keep-alive, one pool per proxy
//! worker, so a request takes and returns a connection without touching
//! another thread's memory.
//!
//! A connection goes back to the pool the moment its response body has been
//! read to the end (before the client has it all), so the next request can
//! reuse it at once. This replaces hyper-util's general-purpose client, which
//! on every request hashed a pool key, raced a checkout against a connect and
//! spawned a task only to notice when the connection was free again.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per worker; more concurrent requests than this open
/// connections that are closed once answered.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused: the app
/// may have forgotten it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the app was not asked, or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: Box<str>, source: std::io::Error },
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(hyper::Error),
    #[error("request: {0}")]
    Request(hyper::Error),
}

impl UpstreamError {
    /// No connection could be made (as opposed to one failing mid-request).
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. } | UpstreamError::Handshake(_))
    }
}

/// One worker's connections to the app.
pub struct Upstream {
    /// `host:port`, what `TcpStream::connect` takes.
    addr: Box<str>,
    connect_timeout: Duration,
    /// Most recently used last: reuse keeps the warmest connections busy and
    /// lets the rest age out. Only this worker's thread locks it.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

impl Upstream {
    pub fn new(authority: &Authority, connect_timeout: Duration) -> Arc<Upstream> {
        let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)).into_boxed_str();
        Arc::new(Upstream { addr, connect_timeout, idle: Mutex::new(Vec::new()) })
    }

    /// Sends `req` (origin-form target, `Host` set) on an idle connection, or
    /// a new one. A pooled connection the app closed meanwhile hands the
    /// request back unsent; then the next one (or a fresh one) takes it.
    pub async fn send(self: &Arc<Self>, mut req: Request<Incoming>) -> Result<Response<PooledBody>, UpstreamError> {
        while let Some(mut sender) = self.checkout() {
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.pooled(response, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender.send_request(req).await.map_err(UpstreamError::Request)?;
        Ok(self.pooled(response, sender))
    }

    fn checkout(self: &Arc<Self>) -> Option<SendRequest<Incoming>> {
        loop {
            let Idle { mut sender, since } = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            // Still busy, e.g. sending a request body the app answered
            // early: it comes back once free, and this request does not
            // wait behind a slow client's upload.
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.checkin(sender);
                }
            });
        }
    }

    fn checkin(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: Instant::now() });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let connect_error = |source| UpstreamError::Connect { addr: self.addr.clone(), source };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.addr))
            .await
            .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_error)?;
        // Requests and responses are small; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn pooled(self: &Arc<Self>, response: Response<Incoming>, sender: SendRequest<Incoming>) -> Response<PooledBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the tunnel; the sender stays
            // alive until hyper has handed the socket over and closed it.
            let mut sender = sender;
            tokio::spawn(async move {
                let _ = sender.ready().await;
            });
            return response.map(|inner| PooledBody { inner, checkin: None });
        }
        let (parts, inner) = response.into_parts();
        let mut body = PooledBody { inner, checkin: Some((Arc::clone(self), sender)) };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        Response::from_parts(parts, body)
    }
}

/// An upstream response body that returns its connection to the pool once
/// read to the end. Dropped before that, the connection closes with it.
pub struct PooledBody {
    inner: Incoming,
    checkin: Option<(Arc<Upstream>, SendRequest<Incoming>)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((pool, sender)) = self.checkin.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            // A broken response leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
