//! Who may do what in the core: the checks that need the core's own state
//! (who owns a framework, which agent id belongs to which credential,
//! counts against the limits), made before a call, subscription or
//! registration is acted on. The rules themselves are
//! [`crate::auth::acl`]; the HTTP routes check theirs at the edge.

use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::security::Kind;
use mezzo_proto::v1;

use super::{ConnId, Effect, Master, OfferOperation};
use crate::auth::Caller;
use crate::auth::acl::{Acl, Action};
use crate::error::MasterError;
use crate::kv::KvCall;

impl Master {
    fn acl(&self) -> &Acl {
        &self.registry.security.acl
    }

    /// The principal that registered a framework ("" on an insecure
    /// cluster, or for an unknown id).
    pub(crate) fn owner_of(&self, id: &FrameworkId) -> &str {
        self.registry
            .frameworks
            .get(id)
            .map(|f| f.principal.as_str())
            .unwrap_or_default()
    }

    /// A subscription: a new framework needs `register_framework` in each
    /// of its roles (and stays within its principal's framework limit); a
    /// known id is its owner's, or needs `take_over_framework`. The
    /// framework's recorded principal is always the caller's own.
    pub fn check_subscribe(
        &self,
        caller: &Caller,
        info: &mut v1::FrameworkInfo,
        id: Option<&FrameworkId>,
    ) -> Result<(), MasterError> {
        if let Some(id) = id {
            let owner = self.owner_of(id).to_owned();
            caller.may_touch(self.acl(), Action::TakeOverFramework, &owner)?;
            // A resumed framework may change its roles and user: new ones
            // need the same rights as at registration.
            if let Some(rec) = self.registry.frameworks.get(id) {
                for role in info.roles.iter().filter(|r| !rec.roles.contains(r)) {
                    caller.may(self.acl(), Action::RegisterFramework, role)?;
                }
                if !info.user.is_empty() && info.user != rec.user {
                    caller.may(self.acl(), Action::RunAs, &info.user)?;
                }
            }
            info.principal = owner;
            return Ok(());
        }
        let roles = if info.roles.is_empty() {
            vec!["*".to_owned()]
        } else {
            info.roles.clone()
        };
        for role in &roles {
            caller.may(self.acl(), Action::RegisterFramework, role)?;
        }
        if !info.user.is_empty() {
            caller.may(self.acl(), Action::RunAs, &info.user)?;
        }
        info.principal = caller.owner();
        self.check_framework_limit(&info.principal)
    }

    /// At most `max_frameworks_per_principal` frameworks per principal
    /// (registered or waiting for their commit).
    fn check_framework_limit(&self, owner: &str) -> Result<(), MasterError> {
        let max = self.cfg.max_frameworks_per_principal;
        if max == 0 || owner.is_empty() || owner == "user:admin" {
            return Ok(());
        }
        let registered = self
            .registry
            .frameworks
            .values()
            .filter(|f| f.principal == owner)
            .count();
        let pending = self
            .pending_frameworks
            .values()
            .filter(|(_, info, _)| info.principal == owner)
            .count();
        if registered + pending >= max {
            return Err(MasterError::ResourceExhausted(format!(
                "{owner} has {} frameworks; at most {max} per principal (--max-frameworks-per-principal); \
                 tear some down first",
                registered + pending
            )));
        }
        Ok(())
    }

    /// A scheduler call on framework `fid`: its owner's, or allowed by a
    /// rule (`action`: kill and teardown have their own, anything else is
    /// `take_over_framework`). Launches also need `run_as` for their user
    /// (the task's, else the framework's).
    pub fn check_call(
        &self,
        caller: &Caller,
        fid: &FrameworkId,
        action: Action,
        operations: &[OfferOperation],
    ) -> Result<(), MasterError> {
        caller.may_touch(self.acl(), action, self.owner_of(fid))?;
        let fw_user = self
            .frameworks
            .get(fid)
            .map(|f| f.info.user.as_str())
            .unwrap_or_default();
        for op in operations {
            if let OfferOperation::Launch(l) = op {
                let user = l.info.command.as_ref().map(|c| c.user.as_str()).unwrap_or_default();
                let user = if user.is_empty() { fw_user } else { user };
                if !user.is_empty() {
                    caller.may(self.acl(), Action::RunAs, user)?;
                }
                for relaxed in l.relaxed_isolation() {
                    caller.may(self.acl(), Action::RelaxIsolation, &relaxed)?;
                }
            }
        }
        Ok(())
    }

    /// A call naming tasks of a priority above 0 (launched or reported):
    /// `prioritize` on the framework's first role, which no framework has
    /// by owning itself (such tasks may preempt others' work).
    pub fn check_priority(&self, caller: &Caller, fid: &FrameworkId, priority: i32) -> Result<(), MasterError> {
        if priority <= 0 {
            return Ok(());
        }
        let role = self
            .frameworks
            .get(fid)
            .and_then(|f| f.info.roles.first())
            .map_or("*", String::as_str);
        caller.may(self.acl(), Action::Prioritize, role)?;
        Ok(())
    }

    /// A key-value call: the owner's, or `framework_kv` by a rule.
    pub fn check_kv(&self, caller: &Caller, fid: &FrameworkId, _call: &KvCall) -> Result<(), MasterError> {
        caller.may_touch(self.acl(), Action::FrameworkKv, self.owner_of(fid))?;
        Ok(())
    }

    /// An agent's registration: only an agent credential registers; an
    /// agent id belongs to the credential's principal that first
    /// registered it; and a new agent must fit under `max_agents`.
    pub fn check_agent(&self, caller: &Caller, id: Option<&AgentId>) -> Result<Option<String>, MasterError> {
        let principal = caller.expect_kind(Kind::Agent)?.map(ToString::to_string);
        match id.and_then(|id| self.registry.agents.get(id).map(|r| (id, r))) {
            Some((id, rec)) => {
                if let (Some(bound), Some(me)) = (&rec.principal, &principal)
                    && bound != me
                {
                    return Err(MasterError::Denied(format!(
                        "agent id {id} belongs to {bound}; {me} may not re-register it"
                    )));
                }
            }
            None => {
                let max = self.cfg.max_agents;
                if max > 0 && self.agents.len() + self.pending_agents.len() >= max {
                    return Err(MasterError::ResourceExhausted(format!(
                        "the cluster has {max} agents (--max-agents)"
                    )));
                }
            }
        }
        Ok(principal)
    }

    /// Remembers which credential opened a stream, so that revoking it
    /// closes the stream.
    pub fn track_credential(&mut self, conn: ConnId, caller: &Caller) {
        if let Some(id) = caller.credential() {
            self.conn_credentials.insert(conn, id.to_owned());
        }
    }

    pub fn forget_credential(&mut self, conn: ConnId) {
        self.conn_credentials.remove(&conn);
    }

    /// A credential was revoked: close every stream it opened.
    pub(crate) fn close_revoked(&mut self, id: &str) {
        let conns: Vec<ConnId> = self
            .conn_credentials
            .iter()
            .filter(|(_, c)| c.as_str() == id)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in conns {
            self.conn_credentials.remove(&conn);
            if self.framework_conns.contains_key(&conn) {
                let err = v1::event::Event::Error(v1::Error {
                    message: format!("credential {id} was revoked"),
                });
                self.emit(Effect::ToFramework(conn, v1::Event { event: Some(err) }));
                self.emit(Effect::CloseFramework(conn));
            } else {
                self.emit(Effect::CloseAgent(conn));
            }
            tracing::warn!(conn, credential = id, "closed a stream whose credential was revoked");
        }
    }
}
