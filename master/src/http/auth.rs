//! The operator token: actions, and reads that show secrets, need
//! `Authorization: Bearer <token>` matching the token the masters were
//! started with (`--operator-token` / `MEZZO_OPERATOR_TOKEN`). With no
//! token configured they are refused outright: an unprotected cluster
//! cannot be torn down over HTTP by accident.
//!
//! Two ways to use it on other routes: [`OperatorAuth::protect`] (a tower
//! layer for a whole router; what [`super::router`] does) or the
//! [`Operator`] extractor in a handler.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The configured token, shared by every route that checks it.
#[derive(Clone, Default)]
pub struct OperatorAuth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for OperatorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAuth")
            .field("configured", &self.token.is_some())
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("operator actions are disabled: start the masters with --operator-token (MEZZO_OPERATOR_TOKEN)")]
    NotConfigured,
    #[error("missing header Authorization: Bearer <operator token>")]
    Missing,
    #[error("the operator token in the Authorization header is wrong")]
    Wrong,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"mezzo-operator\"")],
            self.to_string(),
        )
            .into_response()
    }
}

impl OperatorAuth {
    /// An empty token counts as none.
    pub fn new(token: Option<String>) -> OperatorAuth {
        OperatorAuth {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    /// Checks the request's bearer token.
    pub fn check(&self, headers: &axum::http::HeaderMap) -> Result<(), AuthError> {
        let want = self.token.as_deref().ok_or(AuthError::NotConfigured)?;
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        if constant_time_eq(got.trim().as_bytes(), want.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }

    /// Puts every route of `router` behind the token (a tower
    /// middleware layer; e.g. the allocator's weight and quota routes).
    pub fn protect<S: Clone + Send + Sync + 'static>(&self, router: axum::Router<S>) -> axum::Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(self.clone(), require))
    }
}

async fn require(State(auth): State<OperatorAuth>, req: Request, next: Next) -> Response {
    match auth.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Extractor proving the request carries the operator token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S> FromRequestParts<S> for Operator
where
    OperatorAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        OperatorAuth::from_ref(state).check(&parts.headers).map(|()| Operator)
    }
}

/// Extractor telling whether the request carries the operator token,
/// for reads that show secrets only to operators.
#[derive(Debug, Clone, Copy)]
pub struct MaybeOperator(pub bool);

impl<S> FromRequestParts<S> for MaybeOperator
where
    OperatorAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeOperator(
            OperatorAuth::from_ref(state).check(&parts.headers).is_ok(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn tokens_are_checked() {
        let none = OperatorAuth::new(None);
        assert_eq!(none.check(&headers("Bearer x")), Err(AuthError::NotConfigured));
        assert_eq!(
            OperatorAuth::new(Some(String::new())).check(&headers("Bearer ")),
            Err(AuthError::NotConfigured)
        );
        let auth = OperatorAuth::new(Some("s3cret".into()));
        assert_eq!(auth.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers("Basic s3cret")), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers("Bearer s3cre")), Err(AuthError::Wrong));
        assert_eq!(auth.check(&headers("Bearer s3cret!")), Err(AuthError::Wrong));
        assert_eq!(auth.check(&headers("Bearer s3cret")), Ok(()));
    }
}
