//! The security part of the registry: the ACL, the credentials issued
//! (for audit and listing), the revoked ones, and the sealed secrets. Like
//! every registry change it moves only through committed [`SecurityOp`]s,
//! so every master knows the same revocations and rules.

use std::collections::BTreeMap;

use mezzo_proto::reservation::Role;
use serde::{Deserialize, Serialize};

use super::acl::Acl;

/// What a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Certificate,
    BearerToken,
    JoinToken,
}

/// A credential the masters issued; the secret part is never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// A certificate's serial or a token's nonce.
    pub id: String,
    pub kind: CredentialKind,
    /// Whom it names (`user:ci`, `agent:n1`), or for a join token whom it
    /// admits (`agent`, `master`).
    pub principal: String,
    /// Unix seconds; 0 never.
    pub expires: u64,
    pub issued_at: f64,
    /// Who asked for it (`join` for a certificate obtained with a token).
    pub issued_by: String,
    #[serde(default)]
    pub description: String,
}

/// A secret's sealed value (see [`super::seal`]) and when it was set.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Base64 of the sealed bytes.
    pub sealed: String,
    pub updated_at: f64,
    pub updated_by: String,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// Most credentials kept on record (oldest expired ones go first).
pub const MAX_CREDENTIAL_RECORDS: usize = 200_000;
/// Most secrets, all roles together.
pub const MAX_SECRETS: usize = 10_000;
/// Largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The registry's security state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityState {
    #[serde(default)]
    pub acl: Acl,
    /// By id.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialRecord>,
    /// Revoked credential ids, with the Unix seconds of the revocation.
    #[serde(default)]
    pub revoked: BTreeMap<String, f64>,
    /// Secrets by role, then name.
    #[serde(default)]
    pub secrets: BTreeMap<Role, BTreeMap<String, SecretRecord>>,
}

/// Every change to the security state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SecurityOp {
    /// Replaces the ACL.
    SetAcl {
        acl: Acl,
    },
    /// Records an issued credential.
    RecordCredential(CredentialRecord),
    /// Revokes a credential (a certificate serial or a token nonce, known
    /// or not: a token need not be on record to be revoked).
    Revoke {
        id: String,
        at: f64,
    },
    PutSecret {
        role: Role,
        name: String,
        record: SecretRecord,
    },
    DeleteSecret {
        role: Role,
        name: String,
    },
}

impl SecurityState {
    /// Applies a committed op (never fails; bounds were checked before it
    /// was proposed, and are kept here too so replay agrees).
    pub fn apply(&mut self, op: &SecurityOp) {
        match op {
            SecurityOp::SetAcl { acl } => self.acl = acl.clone(),
            SecurityOp::RecordCredential(rec) => {
                if self.credentials.len() >= MAX_CREDENTIAL_RECORDS {
                    self.forget_oldest_credential();
                }
                self.credentials.insert(rec.id.clone(), rec.clone());
            }
            SecurityOp::Revoke { id, at } => {
                self.revoked.insert(id.clone(), *at);
            }
            SecurityOp::PutSecret { role, name, record } => {
                let known = self.secrets.get(role).is_some_and(|s| s.contains_key(name));
                if known || self.secret_count() < MAX_SECRETS {
                    self.secrets
                        .entry(role.clone())
                        .or_default()
                        .insert(name.clone(), record.clone());
                }
            }
            SecurityOp::DeleteSecret { role, name } => {
                if let Some(s) = self.secrets.get_mut(role) {
                    s.remove(name);
                    if s.is_empty() {
                        self.secrets.remove(role);
                    }
                }
            }
        }
    }

    pub fn secret_count(&self) -> usize {
        self.secrets.values().map(BTreeMap::len).sum()
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    fn forget_oldest_credential(&mut self) {
        let oldest = self
            .credentials
            .values()
            .min_by(|a, b| a.issued_at.total_cmp(&b.issued_at))
            .map(|r| r.id.clone());
        if let Some(id) = oldest {
            self.credentials.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::{Action, Rule};

    fn cred(id: &str, at: f64) -> CredentialRecord {
        CredentialRecord {
            id: id.into(),
            kind: CredentialKind::Certificate,
            principal: "user:ci".into(),
            expires: 0,
            issued_at: at,
            issued_by: "user:admin".into(),
            description: String::new(),
        }
    }

    #[test]
    fn ops_apply_and_replay_through_json() {
        let eng = Role::parse("eng").expect("role");
        let ops = vec![
            SecurityOp::SetAcl {
                acl: Acl {
                    rules: vec![Rule {
                        principals: vec!["user:ci".into()],
                        actions: vec![Action::RegisterFramework],
                        objects: vec!["eng".into()],
                    }],
                },
            },
            SecurityOp::RecordCredential(cred("01ab", 1.0)),
            SecurityOp::Revoke {
                id: "01ab".into(),
                at: 2.0,
            },
            SecurityOp::PutSecret {
                role: eng.clone(),
                name: "db".into(),
                record: SecretRecord {
                    sealed: "AAAA".into(),
                    updated_at: 3.0,
                    updated_by: "user:admin".into(),
                },
            },
            SecurityOp::PutSecret {
                role: eng.clone(),
                name: "gone".into(),
                record: SecretRecord {
                    sealed: "BBBB".into(),
                    updated_at: 3.0,
                    updated_by: "user:admin".into(),
                },
            },
            SecurityOp::DeleteSecret {
                role: eng.clone(),
                name: "gone".into(),
            },
        ];
        let (mut a, mut b) = (SecurityState::default(), SecurityState::default());
        for op in &ops {
            a.apply(op);
            let text = serde_json::to_string(op).expect("ser");
            b.apply(&serde_json::from_str(&text).expect("de"));
        }
        assert_eq!(a, b);
        assert!(a.is_revoked("01ab") && !a.is_revoked("02cd"));
        assert_eq!(a.secret_count(), 1);
        assert_eq!(a.acl.rules.len(), 1);
        let back: SecurityState = serde_json::from_str(&serde_json::to_string(&a).expect("ser")).expect("de");
        assert_eq!(back, a);
        assert!(!format!("{a:?}").contains("AAAA"), "secrets stay out of Debug");
    }

    #[test]
    fn the_credential_record_is_bounded() {
        let mut s = SecurityState::default();
        for i in 0..MAX_CREDENTIAL_RECORDS + 3 {
            s.apply(&SecurityOp::RecordCredential(cred(&format!("{i:x}"), i as f64)));
        }
        assert_eq!(s.credentials.len(), MAX_CREDENTIAL_RECORDS);
        assert!(!s.credentials.contains_key("0") && s.credentials.contains_key("3"));
    }
}
