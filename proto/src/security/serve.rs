//! Serving HTTP (and gRPC, which is HTTP/2) over TLS, telling every
//! request who is at the other end. Each accepted connection does its TLS
//! handshake (bounded in time), and its peer's address and verified
//! certificate become a [`Peer`] extension on every request it carries,
//! for the authentication layer to read. The master and the agent serve
//! their ports through this one loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::principal::CertInfo;

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
}

impl ServeOptions {
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> ServeOptions {
        ServeOptions {
            tls,
            max_connections: 16_384,
            handshake_timeout: Duration::from_secs(10),
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
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A client that trickles its headers is dropped.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            match acceptor {
                None => {
                    let peer = Peer {
                        addr,
                        cert: None,
                        tls: false,
                    };
                    let svc = TowerToHyperService::new(with_peer(service, peer));
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await;
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
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
                    let peer = Peer { addr, cert, tls: true };
                    let svc = TowerToHyperService::new(with_peer(service, peer));
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).await;
                }
            }
        });
    }
}

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
