//! TLS for Sigil's servers: [`certified_key`] turns a PEM pair into what
//! rustls serves, and [`Stream`] is a server connection that is plain TCP or
//! TLS, one type for both, so one accept loop (`serve::connections`) serves
//! either. The TLS handshake runs
//! inside the connection's task on its first read or write, never in the
//! accept loop, so a slow client cannot hold up others.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

/// What is wrong with a PEM certificate chain and key; never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("not a PEM certificate chain: {0}")]
    Chain(String),
    #[error("holds no CERTIFICATE block")]
    NoCertificate,
    #[error("holds no usable PEM private key: {0}")]
    Key(String),
    /// The key is not the certificate's (e.g. read half-way through a
    /// rotation): such a pair is never served.
    #[error("the key does not match the certificate: {0}")]
    Mismatch(String),
}

impl PairError {
    /// Whether the problem is in the key (else in the certificate).
    pub fn in_key(&self) -> bool {
        matches!(self, PairError::Key(_) | PairError::Mismatch(_))
    }
}

/// A served certificate chain and its key, from PEM, checked to match.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, PairError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PairError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PairError::Key(e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| PairError::Mismatch(e.to_string()))
}

/// An accepted connection: plain, or TLS (handshake first).
pub enum Stream {
    Plain(TcpStream),
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Failed,
}

impl Stream {
    pub fn accept(stream: TcpStream, tls: Option<&tokio_rustls::TlsAcceptor>) -> Stream {
        match tls {
            Some(acceptor) => Stream::Handshaking(Box::new(acceptor.accept(stream))),
            None => Stream::Plain(stream),
        }
    }

    /// Drives the handshake; ready once the stream can carry data.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Stream::Handshaking(accept) = self {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(tls) => *self = Stream::Tls(Box::new(tls)),
                Err(e) => {
                    *self = Stream::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match self {
            Stream::Failed => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "TLS handshake failed"))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_ready(cx))?;
        match &mut *self {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_ready(cx))?;
        match &mut *self {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            _ => Poll::Ready(Ok(0)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_ready(cx))?;
        match &mut *self {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            // Nothing was established: nothing to close politely.
            _ => Poll::Ready(Ok(())),
        }
    }
}
