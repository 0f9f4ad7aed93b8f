//! Authentication: the one layer every request of a master passes, gRPC
//! and HTTP alike. It turns the TLS peer certificate (from the connection,
//! see `mezzo_proto::security::serve`) or a bearer token (the
//! `Authorization` header, or the dashboard's cookie) into a [`Caller`],
//! refuses revoked credentials and callers over their rate, and lets
//! anonymous requests reach only the few routes that need no credential.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use mezzo_proto::clock::unix_now;
use mezzo_proto::security::principal::Principal;
use mezzo_proto::security::serve::Peer;
use mezzo_proto::security::token::{Grant, Token};

use crate::auth::Caller;
use crate::raft::RaftHandle;

/// The dashboard's session cookie.
pub const COOKIE: &str = "mezzo_token";

/// How the master authenticates.
#[derive(Clone)]
pub struct Authenticator {
    /// None: `--insecure`, nobody is authenticated.
    data_key: Option<Arc<[u8; 32]>>,
    raft: RaftHandle,
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    /// `--anonymous-read`: GETs need no credential (each read route
    /// still decides, see [`Caller::may_read`]).
    pub anonymous_read: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("insecure", &self.data_key.is_none())
            .finish_non_exhaustive()
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("credential {0} has been revoked")]
    Revoked(String),
    #[error("bearer token refused: {0}")]
    Token(String),
    #[error(
        "this needs a credential: a client certificate of the cluster's CA, or a bearer token \
         (`Authorization: Bearer mzt.…`); see `mezzo credential issue`"
    )]
    Missing,
    #[error(
        "HTTP Basic: the secret is not a token of principal {0:?} (give the principal a token was issued to, and that token)"
    )]
    Basic(String),
    #[error("{0} is over its rate of calls per second (--max-calls-per-second); slow down")]
    Rate(String),
}

impl Authenticator {
    /// `data_key` None runs insecure; `calls_per_second` 0 sets no rate.
    pub fn new(data_key: Option<[u8; 32]>, raft: RaftHandle, calls_per_second: u32) -> Authenticator {
        let limiter = NonZeroU32::new(calls_per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            Arc::new(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
        });
        Authenticator {
            data_key: data_key.map(Arc::new),
            raft,
            limiter,
            anonymous_read: false,
        }
    }

    pub fn insecure(&self) -> bool {
        self.data_key.is_none()
    }

    /// The caller of a request with these parts.
    pub fn caller(&self, peer: Option<&Peer>, headers: &axum::http::HeaderMap) -> Result<Caller, AuthnError> {
        let Some(key) = &self.data_key else {
            return Ok(Caller::Insecure);
        };
        let view = self.raft.auth();
        if let Some(cert) = peer.and_then(|p| p.cert.as_ref()) {
            if view.revoked.contains(&cert.serial) {
                return Err(AuthnError::Revoked(cert.serial.clone()));
            }
            return Ok(Caller::principal(cert.principal.clone(), cert.serial.clone()));
        }
        let (text, user) = match basic(headers) {
            Some((user, secret)) => (secret, Some(user)),
            None => match bearer(headers).or_else(|| cookie(headers)) {
                Some(t) => (t, None),
                None => return Ok(Caller::Anonymous),
            },
        };
        let token = Token::parse(&text).map_err(|e| AuthnError::Token(e.to_string()))?;
        token
            .verify(key.as_ref(), unix_now() as u64)
            .map_err(|e| AuthnError::Token(e.to_string()))?;
        if view.revoked.contains(&token.nonce) {
            return Err(AuthnError::Revoked(token.nonce));
        }
        match token.grant {
            // A bare Basic user name is a user principal (`alice` is `user:alice`).
            Grant::Bearer(principal)
                if user
                    .as_deref()
                    .is_some_and(|u| u.parse::<Principal>().ok().as_ref() != Some(&principal)) =>
            {
                Err(AuthnError::Basic(user.unwrap_or_default()))
            }
            Grant::Bearer(principal) => Ok(Caller::principal(principal, token.nonce)),
            Grant::Join { .. } => Err(AuthnError::Token(
                "a join token only joins (POST /api/v1/join); it authenticates nothing else".into(),
            )),
        }
    }

    /// Counts a call against its caller's rate (anonymous callers by
    /// address, so guessing join tokens is slow too).
    fn over_rate(&self, caller: &Caller, peer: Option<&Peer>) -> Option<String> {
        let limiter = self.limiter.as_ref()?;
        let key = match caller {
            Caller::Authenticated { principal, .. } => principal.to_string(),
            _ => format!("address {}", peer.map(|p| p.addr.ip().to_string()).unwrap_or_default()),
        };
        limiter.check_key(&key).is_err().then_some(key)
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

/// HTTP Basic (`principal:token`), as Mesos frameworks authenticate:
/// the secret is a bearer token issued to that principal.
fn basic(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}

fn cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_owned))
}

/// Routes an anonymous caller may reach: health, the CA and joining (the
/// join token is checked by the route), and the dashboard's own files
/// (its page asks for a token before it reads anything).
fn open_to_anyone(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET => matches!(path, "/health" | "/version" | "/api/v1/ca" | "/") || path.starts_with("/ui/"),
        Method::POST => matches!(path, "/api/v1/join" | "/ui/login" | "/ui/logout"),
        _ => false,
    }
}

/// Whether `path` is one of the routes of Mesos' API (`crate::mesos`),
/// whose clients authenticate with HTTP Basic.
fn mesos_route(path: &str) -> bool {
    matches!(path, "/api/v1/scheduler" | "/api/v1" | "/state.json" | "/redirect") || path.starts_with("/master/")
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The refusal in the caller's protocol: a gRPC status, or HTTP JSON.
fn refuse(req: &Request, status: StatusCode, message: String) -> Response {
    if is_grpc(req) {
        let s = match status {
            StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted(message),
            _ => tonic::Status::unauthenticated(message),
        };
        return s.into_http::<axum::body::Body>().into_response();
    }
    let mut resp = super::error_body(status, message);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"mezzo\""),
        );
        // Mesos clients answer a Basic challenge with principal and token;
        // only Mesos' routes make it (a browser would prompt for it).
        if mesos_route(req.uri().path()) {
            resp.headers_mut().append(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"mezzo\""),
            );
        }
    }
    resp
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(auth): State<Authenticator>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().cloned();
    let caller = match auth.caller(peer.as_ref(), req.headers()) {
        Ok(c) => c,
        Err(e) => return refuse(&req, StatusCode::UNAUTHORIZED, e.to_string()),
    };
    if caller == Caller::Anonymous
        && !open_to_anyone(req.method(), req.uri().path())
        && !(auth.anonymous_read && req.method() == Method::GET)
    {
        return refuse(&req, StatusCode::UNAUTHORIZED, AuthnError::Missing.to_string());
    }
    if let Some(who) = auth.over_rate(&caller, peer.as_ref()) {
        return refuse(&req, StatusCode::TOO_MANY_REQUESTS, AuthnError::Rate(who).to_string());
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
