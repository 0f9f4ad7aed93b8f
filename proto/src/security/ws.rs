//! WebSocket clients of Mezzo daemons (`mezzo exec`): over TLS verified
//! as for [`super::https`] (the cluster CA, the expected principal's
//! name, this party's certificate or bearer token), HTTP/1.1 only (the
//! upgrade needs it), and no redirect followed: a refusal comes back with
//! its status and `Location` for the caller to decide.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::client_config::Transport;

/// The byte stream under a WebSocket: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket.
pub type Socket = WebSocketStream<Box<dyn Io>>;

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{addr}: TLS: {why}")]
    Tls { addr: String, why: String },
    #[error("{addr}: {source}")]
    Handshake { addr: String, source: tungstenite::Error },
    /// The server answered the upgrade with this status (and body).
    #[error("{addr} answered {status}: {body}")]
    Refused {
        addr: String,
        status: u16,
        body: String,
        location: Option<String>,
    },
}

/// Opens `ws(s)://ADDR/PATH` to a server named `server`; messages of up to
/// `max_message` bytes.
pub async fn connect(
    transport: &Transport,
    addr: &str,
    server: &str,
    path: &str,
    timeout: Duration,
    max_message: usize,
) -> Result<Socket, WsError> {
    super::tls::ensure_provider();
    let connect_err = |source| WsError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let _ = tcp.set_nodelay(true);
    let tls_err = |why: String| WsError::Tls {
        addr: addr.to_owned(),
        why,
    };
    let (io, scheme): (Box<dyn Io>, &str) = match transport.credentials() {
        None => (Box::new(tcp), "ws"),
        Some(creds) => {
            let mut cfg = (*creds.client_config(server).map_err(|e| tls_err(e.to_string()))?).clone();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name =
                rustls::pki_types::ServerName::try_from(server.to_owned()).map_err(|e| tls_err(e.to_string()))?;
            let tls = tokio::time::timeout(
                timeout,
                tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
            )
            .await
            .map_err(|_| tls_err("timed out".into()))?
            .map_err(|e| tls_err(e.to_string()))?;
            (Box::new(tls), "wss")
        }
    };
    let handshake_err = |source| WsError::Handshake {
        addr: addr.to_owned(),
        source,
    };
    let mut request = format!("{scheme}://{addr}{path}")
        .into_client_request()
        .map_err(handshake_err)?;
    if let Some(token) = transport.credentials().and_then(|c| c.token()) {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tls_err("the token is not a valid header value".into()))?;
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    match tokio::time::timeout(
        timeout,
        tokio_tungstenite::client_async_with_config(request, io, Some(config)),
    )
    .await
    {
        Err(_) => Err(handshake_err(tungstenite::Error::Io(
            std::io::ErrorKind::TimedOut.into(),
        ))),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(answer))) => Err(WsError::Refused {
            addr: addr.to_owned(),
            status: answer.status().as_u16(),
            location: answer
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned),
            body: answer
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Ok(Err(e)) => Err(handshake_err(e)),
    }
}
