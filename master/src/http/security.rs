//! The security routes: the CA and joining (open: a join token is the
//! credential), the ACL, credentials and join tokens, and secrets. Changes
//! are registry ops, answered once committed (a follower redirects).
//!
//! | Method and path | Body | Needs |
//! |---|---|---|
//! | `GET /api/v1/ca` | | nothing: the CA certificate (PEM) |
//! | `POST /api/v1/join` | [`JoinRequest`] | a join token |
//! | `GET /api/v1/acl` | | `read` |
//! | `PUT /api/v1/acl` | `{"rules": [{"principals", "actions", "objects"}]}` | `manage_acls` |
//! | `GET /api/v1/credentials` | | `manage_credentials` |
//! | `POST /api/v1/credentials` | `{"principal", "csr"?, "token"?, "ttl_secs"?, "description"?}` | `manage_credentials` |
//! | `POST /api/v1/credentials/revoke` | `{"id"}` | `manage_credentials` |
//! | `POST /api/v1/credentials/self` | `{"ttl_secs"?}` | a user credential: a bearer token of the caller's own (the dashboard's sign-in) |
//! | `POST /api/v1/tokens` | `{"kind": "agent"\|"master", "ttl_secs"?, "description"?}` | `manage_credentials` |
//! | `GET /api/v1/secrets` | | `read` (names only) |
//! | `PUT /api/v1/secrets` | `{"role", "name", "value"}` | `manage_secrets` on the role |
//! | `DELETE /api/v1/secrets` | `{"role", "name"}` | `manage_secrets` on the role |

// The checking helpers return the refusal itself, ready to send.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use base64::Engine;
use mezzo_proto::clock::unix_now;
use mezzo_proto::reservation::Role;
use mezzo_proto::security::join::{JoinRequest, JoinResponse};
use mezzo_proto::security::token::{Grant, Token};
use mezzo_proto::security::{Kind, Principal};
use serde::{Deserialize, Serialize};

use super::policy::run;
use super::{HttpState, error_body};
use crate::auth::Caller;
use crate::auth::acl::{Acl, Action};
use crate::auth::seal;
use crate::auth::state::{CredentialKind, CredentialRecord, MAX_SECRET_BYTES, SecretRecord, SecurityOp};
use crate::core::PolicyRequest;
use crate::pki::{Authority, LEAF_VALIDITY};

/// Longest validity a credential may be issued with (ten years).
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn bad(msg: impl std::fmt::Display) -> Response {
    error_body(StatusCode::BAD_REQUEST, msg.to_string())
}

/// The CA, or 404 on an insecure cluster.
fn authority(s: &HttpState) -> Result<&Authority, Response> {
    s.authority
        .as_deref()
        .ok_or_else(|| error_body(StatusCode::NOT_FOUND, "this cluster runs --insecure: it has no CA"))
}

pub(super) async fn ca(State(s): State<HttpState>) -> Response {
    match authority(&s) {
        Ok(a) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            a.cert_pem().to_owned(),
        )
            .into_response(),
        Err(r) => r,
    }
}

fn ttl(secs: Option<u64>) -> Result<Duration, Response> {
    match secs {
        None => Ok(LEAF_VALIDITY),
        Some(0) => Err(bad("ttl_secs: must be at least 1")),
        Some(s) if Duration::from_secs(s) > MAX_TTL => Err(bad(format!("ttl_secs: at most {}", MAX_TTL.as_secs()))),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// Records an issued credential (committed before the holder gets it, so
/// it is listed and revocable everywhere).
async fn record(s: &HttpState, rec: CredentialRecord, path: &str) -> Result<(), Response> {
    let resp = run(
        s,
        PolicyRequest::Security(SecurityOp::RecordCredential(rec)),
        path,
        serde_json::Value::Null,
    )
    .await;
    if resp.status().is_success() { Ok(()) } else { Err(resp) }
}

/// An agent's name from its hostname: a DNS label with a random tail, so
/// agents of one host (or of hosts with one name) stay apart.
fn agent_name(hostname: &str) -> Result<String, Response> {
    let mut base: String = hostname
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "agent" } else { base };
    let tail: [u8; 3] = rand::random();
    Ok(format!("{base}-{:02x}{:02x}{:02x}", tail[0], tail[1], tail[2]))
}

pub(super) async fn join(State(s): State<HttpState>, body: Result<Json<JoinRequest>, JsonRejection>) -> Response {
    let Ok(Json(req)) = body else {
        return bad("expected {\"token\", \"csr\", \"hostname\", \"address\"}");
    };
    let ca = match authority(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let token = match Token::parse(&req.token) {
        Ok(t) => t,
        Err(e) => return error_body(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    if let Err(e) = token.verify(ca.data_key(), unix_now() as u64) {
        return error_body(StatusCode::UNAUTHORIZED, format!("join token refused: {e}"));
    }
    if s.raft.auth().revoked.contains(&token.nonce) {
        return error_body(
            StatusCode::UNAUTHORIZED,
            format!("join token {} has been revoked", token.nonce),
        );
    }
    let Grant::Join { kind, .. } = token.grant else {
        return error_body(
            StatusCode::UNAUTHORIZED,
            "a bearer token does not join; use a join token",
        );
    };
    if req.hostname.len() > 253 || req.address.len() > 300 {
        return bad("hostname or address too long");
    }
    let (principal, hosts) = match kind {
        Kind::Agent => {
            let name = match agent_name(&req.hostname) {
                Ok(n) => n,
                Err(r) => return r,
            };
            let host = req
                .address
                .rsplit_once(':')
                .map(|(h, _)| h.to_owned())
                .unwrap_or_default();
            (Principal::new(Kind::Agent, name), vec![req.hostname.clone(), host])
        }
        _ => {
            if !s.raft.members().values().any(|a| *a == req.address) {
                return error_body(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} is not a member of this group; add it first (`mezzo masters add {}`)",
                        req.address, req.address
                    ),
                );
            }
            let ip = req
                .address
                .rsplit_once(':')
                .map(|(h, _)| h.to_owned())
                .unwrap_or_default();
            (
                Principal::new(Kind::Master, req.address.clone()),
                vec![req.hostname.clone(), ip],
            )
        }
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let hosts: Vec<String> = hosts.into_iter().filter(|h| valid_host(h)).collect();
    let issued = match ca.issue(&principal, &req.csr, &hosts, LEAF_VALIDITY) {
        Ok(i) => i,
        Err(e) => return bad(e),
    };
    let rec = CredentialRecord {
        id: issued.info.serial.clone(),
        kind: CredentialKind::Certificate,
        principal: principal.to_string(),
        expires: issued.info.not_after.max(0) as u64,
        issued_at: unix_now(),
        issued_by: format!("join token {}", token.nonce),
        description: format!("joined from {}", req.hostname),
    };
    if kind == Kind::Master {
        // A master joins a group that already counts it as a voter: with
        // two members, nothing commits until it runs. Its record is
        // written when it can be, and the join is not held for it.
        let s2 = s.clone();
        tokio::spawn(async move {
            let _ = record(&s2, rec, "/api/v1/join").await;
        });
    } else if let Err(r) = record(&s, rec, "/api/v1/join").await {
        return r;
    }
    tracing::info!(%principal, hostname = %req.hostname, "issued a certificate to a joining {kind}");
    Json(JoinResponse {
        principal: principal.to_string(),
        cert: issued.cert_pem,
        ca: ca.cert_pem().to_owned(),
        authority: (kind == Kind::Master).then(|| ca.files()),
    })
    .into_response()
}

/// A DNS name or an IP address fit for a certificate.
fn valid_host(h: &str) -> bool {
    if let Ok(ip) = h.parse::<std::net::IpAddr>() {
        return !ip.is_unspecified();
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

pub(super) async fn acl(State(s): State<HttpState>) -> Response {
    Json(s.raft.auth().acl.clone()).into_response()
}

pub(super) async fn set_acl(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Acl>, JsonRejection>,
) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageAcls, "acl") {
        return r;
    }
    let acl = match body {
        Ok(Json(a)) => a,
        Err(e) => {
            return bad(format!(
                "expected {{\"rules\": [{{\"principals\", \"actions\", \"objects\"}}]}}: {e}"
            ));
        }
    };
    if let Err(e) = acl.check() {
        return bad(e);
    }
    let done = serde_json::json!({ "rules": acl.rules.len() });
    run(
        &s,
        PolicyRequest::Security(SecurityOp::SetAcl { acl }),
        "/api/v1/acl",
        done,
    )
    .await
}

/// What `GET /api/v1/credentials` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialList {
    pub credentials: Vec<CredentialRecord>,
    /// Revoked ids with the Unix seconds of their revocation.
    pub revoked: std::collections::BTreeMap<String, f64>,
}

pub(super) async fn credentials(State(s): State<HttpState>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageCredentials, "credentials") {
        return r;
    }
    match s.raft.registry().await {
        Some(r) => Json(CredentialList {
            credentials: r.security.credentials.into_values().collect(),
            revoked: r.security.revoked,
        })
        .into_response(),
        None => error_body(StatusCode::SERVICE_UNAVAILABLE, "raft node stopped"),
    }
}

/// A request for a user's credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueRequest {
    /// `user:NAME` or `NAME`.
    principal: String,
    /// A PEM signing request over the holder's key (for a certificate).
    #[serde(default)]
    csr: Option<String>,
    /// A bearer token instead of a certificate.
    #[serde(default)]
    token: bool,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    description: String,
}

/// What an issue answers: the credential, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub principal: String,
    pub id: String,
    pub expires: u64,
    pub ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

pub(super) async fn issue(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<IssueRequest>, JsonRejection>,
) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageCredentials, "credentials") {
        return r;
    }
    let ca = match authority(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return bad(format!(
                "expected {{\"principal\", \"csr\" or \"token\": true, \"ttl_secs\"}}: {e}"
            ));
        }
    };
    let principal = match req.principal.parse::<Principal>() {
        Ok(p) if p.kind() == Kind::User => p,
        Ok(p) => return bad(format!("{p}: agents and masters get certificates by joining, not here")),
        Err(e) => return bad(e),
    };
    let validity = match ttl(req.ttl_secs) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let expires = unix_now() as u64 + validity.as_secs();
    let (id, kind, cert, token) = match (req.token, req.csr.as_deref()) {
        (true, None) => match Token::issue(ca.data_key(), Grant::Bearer(principal.clone()), expires) {
            Ok(t) => (t.nonce.clone(), CredentialKind::BearerToken, None, Some(t.reveal())),
            Err(e) => return error_body(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        (false, Some(csr)) => match ca.issue(&principal, csr, &[], validity) {
            Ok(i) => (
                i.info.serial.clone(),
                CredentialKind::Certificate,
                Some(i.cert_pem),
                None,
            ),
            Err(e) => return bad(e),
        },
        _ => return bad("give either \"csr\" (a certificate) or \"token\": true (a bearer token)"),
    };
    let rec = CredentialRecord {
        id: id.clone(),
        kind,
        principal: principal.to_string(),
        expires,
        issued_at: unix_now(),
        issued_by: caller.owner(),
        description: req.description,
    };
    if let Err(r) = record(&s, rec, "/api/v1/credentials").await {
        return r;
    }
    Json(Issued {
        principal: principal.to_string(),
        id,
        expires,
        ca: ca.cert_pem().to_owned(),
        cert,
        token,
    })
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OwnTokenRequest {
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// Longest a token of one's own lasts (a week): a sign-in, not a service
/// credential.
const OWN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A bearer token for the caller itself (no new rights: the same
/// principal), as the dashboard's sign-in needs.
pub(super) async fn own_token(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Option<Json<OwnTokenRequest>>,
) -> Response {
    let Some(principal) = caller.as_principal().filter(|p| p.kind() == Kind::User).cloned() else {
        return error_body(
            StatusCode::FORBIDDEN,
            "only a user's credential gets a token of its own",
        );
    };
    let ca = match authority(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let ttl = body
        .and_then(|Json(b)| b.ttl_secs)
        .map_or(Duration::from_secs(12 * 3600), Duration::from_secs)
        .clamp(Duration::from_secs(60), OWN_TOKEN_TTL);
    let expires = unix_now() as u64 + ttl.as_secs();
    let token = match Token::issue(ca.data_key(), Grant::Bearer(principal.clone()), expires) {
        Ok(t) => t,
        Err(e) => return error_body(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let rec = CredentialRecord {
        id: token.nonce.clone(),
        kind: CredentialKind::BearerToken,
        principal: principal.to_string(),
        expires,
        issued_at: unix_now(),
        issued_by: principal.to_string(),
        description: "its own token".into(),
    };
    if let Err(r) = record(&s, rec, "/api/v1/credentials/self").await {
        return r;
    }
    Json(Issued {
        principal: principal.to_string(),
        id: token.nonce.clone(),
        expires,
        ca: ca.cert_pem().to_owned(),
        cert: None,
        token: Some(token.reveal()),
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeRequest {
    id: String,
}

pub(super) async fn revoke(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<RevokeRequest>, JsonRejection>,
) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageCredentials, "credentials") {
        return r;
    }
    let Ok(Json(req)) = body else {
        return bad("expected {\"id\": \"<certificate serial or token nonce>\"}");
    };
    let id = req.id.trim().to_ascii_lowercase();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("id: a certificate serial or a token nonce (hex)");
    }
    let done = serde_json::json!({ "revoked": id });
    let op = SecurityOp::Revoke { id, at: unix_now() };
    run(&s, PolicyRequest::Security(op), "/api/v1/credentials/revoke", done).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    /// `agent` or `master`.
    kind: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    description: String,
}

pub(super) async fn join_token(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageCredentials, "credentials") {
        return r;
    }
    let ca = match authority(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(Json(req)) = body else {
        return bad("expected {\"kind\": \"agent\" or \"master\", \"ttl_secs\": N}");
    };
    let kind = match req.kind.as_str() {
        "agent" => Kind::Agent,
        "master" => Kind::Master,
        other => return bad(format!("kind: {other:?} is not agent or master")),
    };
    // Join tokens are short-lived unless asked otherwise (a day).
    let validity = match req.ttl_secs {
        None => Duration::from_secs(24 * 3600),
        some => match ttl(some) {
            Ok(v) => v,
            Err(r) => return r,
        },
    };
    let expires = unix_now() as u64 + validity.as_secs();
    let grant = Grant::Join {
        kind,
        ca_fingerprint: ca.fingerprint().to_owned(),
    };
    let token = match Token::issue(ca.data_key(), grant, expires) {
        Ok(t) => t,
        Err(e) => return error_body(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let rec = CredentialRecord {
        id: token.nonce.clone(),
        kind: CredentialKind::JoinToken,
        principal: kind.to_string(),
        expires,
        issued_at: unix_now(),
        issued_by: caller.owner(),
        description: req.description,
    };
    if let Err(r) = record(&s, rec, "/api/v1/tokens").await {
        return r;
    }
    Json(serde_json::json!({ "token": token.reveal(), "id": token.nonce, "expires": expires })).into_response()
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretEntry {
    pub role: String,
    pub name: String,
    pub updated_at: f64,
    pub updated_by: String,
}

pub(super) async fn secrets(State(s): State<HttpState>) -> Response {
    match s.raft.registry().await {
        Some(r) => {
            let list: Vec<SecretEntry> = r
                .security
                .secrets
                .iter()
                .flat_map(|(role, names)| {
                    names.iter().map(move |(name, rec)| SecretEntry {
                        role: role.to_string(),
                        name: name.clone(),
                        updated_at: rec.updated_at,
                        updated_by: rec.updated_by.clone(),
                    })
                })
                .collect();
            Json(list).into_response()
        }
        None => error_body(StatusCode::SERVICE_UNAVAILABLE, "raft node stopped"),
    }
}

use crate::auth::seal::secret_context;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretBody {
    role: String,
    name: String,
    #[serde(default)]
    value: Option<String>,
    /// The value as base64, for bytes that are not UTF-8.
    #[serde(default)]
    value_base64: Option<String>,
}

fn secret_target(b: &SecretBody) -> Result<Role, Response> {
    let role = Role::parse(&b.role).map_err(|e| bad(format!("role: {e}")))?;
    if !mezzo_proto::security::secret::valid_name(&b.name) {
        return Err(bad("name: 1 to 128 letters, digits, '-', '_' or '.'"));
    }
    Ok(role)
}

pub(super) async fn put_secret(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SecretBody>, JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"role\", \"name\", \"value\" (or \"value_base64\")}");
    };
    let role = match secret_target(&b) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = s.check(&caller, Action::ManageSecrets, role.as_str()) {
        return r;
    }
    let ca = match authority(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let value = match (b.value, b.value_base64) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(v)) => match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
            Ok(v) => v,
            Err(e) => return bad(format!("value_base64: {e}")),
        },
        _ => return bad("give exactly one of \"value\" and \"value_base64\""),
    };
    if value.len() > MAX_SECRET_BYTES {
        return bad(format!("a secret holds at most {MAX_SECRET_BYTES} bytes"));
    }
    let sealed = match seal::seal(ca.data_key(), &secret_context(&role, &b.name), &value) {
        Ok(v) => v,
        Err(e) => return error_body(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let record = SecretRecord {
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        updated_at: unix_now(),
        updated_by: caller.owner(),
    };
    let done = serde_json::json!({ "role": role, "name": b.name });
    let op = SecurityOp::PutSecret {
        role,
        name: b.name,
        record,
    };
    run(&s, PolicyRequest::Security(op), "/api/v1/secrets", done).await
}

pub(super) async fn delete_secret(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SecretBody>, JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"role\", \"name\"}");
    };
    let role = match secret_target(&b) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = s.check(&caller, Action::ManageSecrets, role.as_str()) {
        return r;
    }
    let done = serde_json::json!({ "role": role, "name": b.name, "deleted": true });
    let op = SecurityOp::DeleteSecret { role, name: b.name };
    run(&s, PolicyRequest::Security(op), "/api/v1/secrets", done).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_dns_labels_with_a_tail() {
        for host in ["Node_1.example.com", "", "---", &"x".repeat(300)] {
            let n = agent_name(host).expect("name");
            assert!(Principal::new(Kind::Agent, n.clone()).is_ok(), "{n}");
        }
        assert_ne!(agent_name("h").expect("a"), agent_name("h").expect("b"));
    }

    #[test]
    fn hosts_in_certificates_are_checked() {
        assert!(valid_host("10.0.0.1") && valid_host("node-1.example.com"));
        assert!(!valid_host("0.0.0.0") && !valid_host("") && !valid_host("a b") && !valid_host("x/y"));
    }
}
