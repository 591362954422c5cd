//! Upgraded connections (WebSocket and other `Upgrade` protocols), relayed
//! byte for byte once the app answered 101. A token is checked once, when the
//! tunnel opens, so a tunnel must not outlive it: it closes when the token
//! expires, after `--upgrade-max-lifetime` at the latest, and after
//! `--upgrade-idle-timeout` with no byte in either direction.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep_until};

/// How long a tunnel may live and sit idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub idle: Duration,
    pub max_lifetime: Duration,
}

/// Why a tunnel was closed by the sidecar rather than by either end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Idle,
    Expired,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::Expired => "expired",
        }
    }
}

/// When a tunnel opened at `now` (unix seconds) for a token expiring at
/// `exp` must close, as an instant.
pub fn deadline(bounds: Bounds, opened: Instant, now: i64, exp: i64) -> Instant {
    let token_left = Duration::from_secs(u64::try_from(exp.saturating_sub(now)).unwrap_or(0));
    opened + token_left.min(bounds.max_lifetime)
}

/// Relays between the client and the app until either end closes or a bound
/// is reached; returns which bound, if one was.
pub async fn relay(client: OnUpgrade, upstream: OnUpgrade, bounds: Bounds, deadline: Instant) -> Option<Closed> {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
    };
    let opened = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Tracked { inner: TokioIo::new(client), activity: Arc::clone(&activity), opened };
    let mut upstream = Tracked { inner: TokioIo::new(upstream), activity: Arc::clone(&activity), opened };
    let watchdog = async {
        loop {
            let last = opened + Duration::from_millis(activity.load(Ordering::Relaxed));
            let idle_at = last + bounds.idle;
            let now = Instant::now();
            if now >= deadline {
                return Closed::Expired;
            }
            if now >= idle_at {
                return Closed::Idle;
            }
            sleep_until(idle_at.min(deadline)).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
            None
        }
        closed = watchdog => {
            tracing::debug!(reason = closed.label(), "upgraded connection closed by the sidecar");
            Some(closed)
        }
    }
}

/// A stream that records when bytes last arrived, in milliseconds since the
/// tunnel opened.
struct Tracked<T> {
    inner: T,
    activity: Arc<AtomicU64>,
    opened: Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.activity.store(millis, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_ends_with_its_token_or_the_lifetime_bound() {
        let bounds = Bounds { idle: Duration::from_secs(60), max_lifetime: Duration::from_secs(3600) };
        let opened = Instant::now();
        assert_eq!(deadline(bounds, opened, 1000, 1300), opened + Duration::from_secs(300));
        assert_eq!(deadline(bounds, opened, 1000, 100_000), opened + Duration::from_secs(3600));
        assert_eq!(deadline(bounds, opened, 1000, 900), opened, "already expired: closes at once");
    }
}
