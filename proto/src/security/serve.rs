//! Serving HTTP (and gRPC, which is HTTP/2) over TLS, telling every
//! request who is at the other end. Each accepted connection does its TLS
//! handshake (bounded in time), and its peer's address and verified
//! certificate become a [`Peer`] extension on every request it carries,
//! for the authentication layer to read. The master and the agent serve
//! their ports through this one loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::principal::{CertInfo, Kind};

/// The other end of a connection, as the TLS handshake proved it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate, if the client sent one.
    pub cert: Option<Arc<CertInfo>>,
    /// Whether the connection is TLS (false only with `--insecure`).
    pub tls: bool,
}

/// How a port is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// None serves plain text (`--insecure`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open at once; one more waits in the kernel's backlog
    /// until another closes.
    pub max_connections: usize,
    /// A client that has not finished its TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Connections whose client certificate is of this kind are served on
    /// this runtime instead (a master serves its peers' Raft traffic on a
    /// thread of its own, so that a busy master still answers them in time).
    pub dedicated: Option<(Kind, tokio::runtime::Handle)>,
}

impl ServeOptions {
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> ServeOptions {
        ServeOptions {
            tls,
            max_connections: 16_384,
            handshake_timeout: Duration::from_secs(10),
            dedicated: None,
        }
    }
}

type Request = http::Request<Incoming>;

/// Longest an HTTP/1 client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` until the task is dropped.
pub async fn serve<S, B>(listener: TcpListener, opts: ServeOptions, service: S)
where
    S: tower::Service<Request, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let acceptor = acceptor.clone();
        let timeout = opts.handshake_timeout;
        let dedicated = opts.dedicated.clone();
        // The permit is held until the connection ends, wherever it is served.
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let peer = Peer {
                        addr,
                        cert: None,
                        tls: false,
                    };
                    let svc = TowerToHyperService::new(with_peer(service, peer));
                    let _ = connection_builder()
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                }
                Some(acceptor) => {
                    let accepting = acceptor.accept(Movable(Some(tcp)));
                    let mut tls = match tokio::time::timeout(timeout, accepting).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let cert =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(
                            |der| match CertInfo::read(der) {
                                Ok(info) => Some(Arc::new(info)),
                                Err(e) => {
                                    tracing::debug!(%addr, error = %e, "client certificate names no principal");
                                    None
                                }
                            },
                        );
                    let elsewhere =
                        dedicated.filter(|(kind, _)| cert.as_ref().is_some_and(|c| c.principal.kind() == *kind));
                    let peer = Peer { addr, cert, tls: true };
                    let svc = TowerToHyperService::new(with_peer(service, peer));
                    let Some((_, runtime)) = elsewhere else {
                        let _ = connection_builder()
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await;
                        return;
                    };
                    // The socket is registered with this runtime's reactor:
                    // taken out and registered again over there.
                    let Some(std) = tls.get_mut().0.0.take().and_then(|t| t.into_std().ok()) else {
                        return;
                    };
                    runtime.spawn(async move {
                        let _permit = permit;
                        match TcpStream::from_std(std) {
                            Ok(t) => tls.get_mut().0.0 = Some(t),
                            Err(e) => {
                                tracing::warn!(%addr, error = %e, "cannot move a connection to its runtime");
                                return;
                            }
                        }
                        let _ = connection_builder()
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            }
        });
    }
}

/// HTTP/1 and HTTP/2 on one connection, its tasks spawned on the runtime
/// it is served on.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that trickles its headers is dropped.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS)
        .max_pending_accept_reset_streams(MAX_STREAMS as usize);
    builder
}

/// Streams open at once on one HTTP/2 connection (hyper's default), and
/// streams the client may reset before a busy server took them: h2's
/// default of 20 closed whole connections of 100 multiplexed agents whose
/// registrations gave up while a new leader was busy, and every agent on
/// them had to start over (50 times in one failover of 40,000 agents). A
/// window's worth still bounds a "rapid reset" flood (CVE-2023-44487).
const MAX_STREAMS: u32 = 200;

fn with_peer<S, B>(
    service: S,
    peer: Peer,
) -> impl tower::Service<Request, Response = http::Response<B>, Error = Infallible, Future = S::Future> + Clone
where
    S: tower::Service<Request, Response = http::Response<B>, Error = Infallible> + Clone,
{
    tower::ServiceExt::map_request(service, move |mut req: Request| {
        req.extensions_mut().insert(peer.clone());
        req
    })
}

/// A TCP stream that can leave the runtime it was accepted on after its
/// TLS handshake (tokio binds a socket to the reactor that registered it,
/// and a TLS stream cannot be taken apart and put together again).
struct Movable(Option<TcpStream>);

impl Movable {
    fn stream(&mut self) -> std::io::Result<Pin<&mut TcpStream>> {
        match self.0.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for Movable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Movable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
