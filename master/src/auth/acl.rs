//! Authorization: one function over (principal, action, object), in the
//! manner of Mesos' `Authorizer` and Kubernetes' RBAC authorizer. The rules
//! live in the registry and change at runtime (`mezzo acl`); what no rule
//! allows is denied. Three grants are built in, so a cluster is usable
//! before anyone writes a rule and nobody can lock the administrator out:
//!
//! - `user:admin` (the credential a new cluster creates) may do anything;
//! - a principal may act on its own frameworks (subscribe, kill, tear
//!   down, KV, sandboxes, environments): the object of those actions is the
//!   framework's owner;
//! - masters may read the cluster (a joining master reads `/raft`).
//!
//! Patterns: `*` matches anything, `eng/*` anything starting `eng/`, and
//! anything else only itself. `run_as` is stricter: `*` never matches
//! `root`, which a rule must name.

use std::fmt;

use mezzo_proto::security::{Kind, Principal};
use serde::{Deserialize, Serialize};

/// What a principal may be allowed to do; the comment names the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read the cluster: `/state`, the operator API's reads, the event
    /// stream, metrics, the dashboard (object `cluster`).
    Read,
    /// Register a framework in a role (the role).
    RegisterFramework,
    /// Launch tasks as a Unix user (the user).
    RunAs,
    /// Subscribe to another principal's framework (its owner).
    TakeOverFramework,
    /// Kill a task of a framework (its owner).
    KillTask,
    /// Tear down a framework (its owner).
    TeardownFramework,
    /// Read and write a framework's key-value namespace (its owner).
    FrameworkKv,
    /// Read a task's sandbox and logs (the framework's owner).
    ReadSandbox,
    /// See a task's environment (the framework's owner).
    ViewEnvironment,
    /// Reserve resources for a role (the role).
    Reserve,
    /// Give back a role's reservation (the role).
    Unreserve,
    /// Set a role's quota (the role).
    SetQuota,
    /// Set a role's weight (the role).
    SetWeights,
    /// Drain, reactivate or mark gone an agent (its id).
    DrainAgent,
    /// Write or delete a role's secrets (the role).
    ManageSecrets,
    /// Change the ACL (`acl`).
    ManageAcls,
    /// Issue, list and revoke credentials and join tokens (`credentials`).
    ManageCredentials,
    /// Add or remove masters (`masters`).
    ManageMasters,
    /// Launch a task with less isolation than the default (what it gives
    /// up, e.g. `seccomp:unconfined`).
    RelaxIsolation,
    /// Run a command in a running task's container (`mezzo exec`; the
    /// object is the framework's owner). Not implied by owning the
    /// framework: a rule must grant it.
    ExecTask,
    /// Launch or report tasks of a priority above 0, which may preempt
    /// others and are preempted last (the object is the framework's first
    /// role).
    Prioritize,
    /// Destroy a persistent volume from the operator API, data and all
    /// (the volume's role). Frameworks of the role destroy theirs through
    /// offers, without a rule.
    DestroyVolume,
}

impl Action {
    pub const ALL: [Action; 22] = [
        Action::Read,
        Action::RegisterFramework,
        Action::RunAs,
        Action::TakeOverFramework,
        Action::KillTask,
        Action::TeardownFramework,
        Action::FrameworkKv,
        Action::ReadSandbox,
        Action::ViewEnvironment,
        Action::Reserve,
        Action::Unreserve,
        Action::SetQuota,
        Action::SetWeights,
        Action::DrainAgent,
        Action::ManageSecrets,
        Action::ManageAcls,
        Action::ManageCredentials,
        Action::ManageMasters,
        Action::RelaxIsolation,
        Action::ExecTask,
        Action::Prioritize,
        Action::DestroyVolume,
    ];

    /// Actions whose object is a framework's owner: allowed to the owner.
    fn on_own_framework(self) -> bool {
        matches!(
            self,
            Action::TakeOverFramework
                | Action::KillTask
                | Action::TeardownFramework
                | Action::FrameworkKv
                | Action::ReadSandbox
                | Action::ViewEnvironment
        )
    }

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl std::str::FromStr for Action {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Action, AclError> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| AclError::Action(s.to_owned()))
    }
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unknown action {0:?}; actions: {list}", list = Action::ALL.map(Action::name).join(", "))]
    Action(String),
    #[error("a rule needs at least one principal, one action and one object")]
    Empty,
    #[error("pattern {0:?}: use `*`, `PREFIX*` or an exact name (at most 256 bytes, no spaces)")]
    Pattern(String),
    #[error("at most {MAX_RULES} rules")]
    TooMany,
}

/// Most rules an ACL may hold.
pub const MAX_RULES: usize = 1000;

/// Who may do what to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Principal patterns (`user:ci`, `user:team-*`, `*`).
    pub principals: Vec<String>,
    pub actions: Vec<Action>,
    /// Object patterns (roles, users, owners, agent ids).
    pub objects: Vec<String>,
}

impl Rule {
    pub fn check(&self) -> Result<(), AclError> {
        if self.principals.is_empty() || self.actions.is_empty() || self.objects.is_empty() {
            return Err(AclError::Empty);
        }
        for p in self.principals.iter().chain(&self.objects) {
            let star = p.find('*');
            let ok = !p.is_empty()
                && p.len() <= 256
                && !p.chars().any(char::is_whitespace)
                && star.is_none_or(|i| i == p.len() - 1);
            if !ok {
                return Err(AclError::Pattern(p.clone()));
            }
        }
        Ok(())
    }
}

/// The rules, in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub rules: Vec<Rule>,
}

impl Acl {
    pub fn check(&self) -> Result<(), AclError> {
        if self.rules.len() > MAX_RULES {
            return Err(AclError::TooMany);
        }
        self.rules.iter().try_for_each(Rule::check)
    }
}

/// The refusal, naming everything an operator needs to write the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{principal} may not {action} {object:?}: no ACL rule allows it (see `mezzo acl`)", action = action.name())]
pub struct Denied {
    pub principal: String,
    pub action: Action,
    pub object: String,
}

/// The bootstrap administrator's name.
pub const ADMIN: &str = "admin";

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Whether `who` may do `action` to `object`.
pub fn authorize(acl: &Acl, who: &Principal, action: Action, object: &str) -> Result<(), Denied> {
    if builtin(who, action, object) || allowed_by_rule(acl, who, action, object) {
        return Ok(());
    }
    Err(Denied {
        principal: who.to_string(),
        action,
        object: object.to_owned(),
    })
}

fn builtin(who: &Principal, action: Action, object: &str) -> bool {
    match who.kind() {
        Kind::User if who.name() == ADMIN => true,
        Kind::User => action.on_own_framework() && object == who.to_string(),
        Kind::Master => action == Action::Read,
        Kind::Agent => false,
    }
}

fn allowed_by_rule(acl: &Acl, who: &Principal, action: Action, object: &str) -> bool {
    let name = who.to_string();
    acl.rules.iter().any(|r| {
        r.actions.contains(&action)
            && r.principals.iter().any(|p| matches(p, &name))
            && r.objects.iter().any(|o| {
                if action == Action::RunAs && object == "root" {
                    o == "root"
                } else {
                    matches(o, object)
                }
            })
    })
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<String> = self.actions.iter().map(|a| a.name()).collect();
        write!(
            f,
            "{} may {} on {}",
            self.principals.join(","),
            actions.join(","),
            self.objects.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::*;

    fn p(s: &str) -> Principal {
        s.parse().expect("principal")
    }

    fn rule(principals: &[&str], actions: &[Action], objects: &[&str]) -> Rule {
        Rule {
            principals: principals.iter().map(|s| s.to_string()).collect(),
            actions: actions.to_vec(),
            objects: objects.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The ACL matrix: each row is (principal, action, object, allowed).
    #[test]
    fn the_matrix() {
        let acl = Acl {
            rules: vec![
                rule(&["user:ci"], &[RegisterFramework], &["eng", "eng/*"]),
                rule(&["user:ci"], &[RunAs], &["*"]),
                rule(&["user:ops-*"], &[Read, DrainAgent, KillTask], &["*"]),
                rule(&["user:dba"], &[RunAs], &["root", "postgres"]),
                rule(&["*"], &[Read], &["cluster"]),
            ],
        };
        let rows: &[(&str, Action, &str, bool)] = &[
            // The administrator may do anything, root included.
            ("user:admin", ManageAcls, "acl", true),
            ("user:admin", RunAs, "root", true),
            // Rules by exact name and by prefix.
            ("user:ci", RegisterFramework, "eng", true),
            ("user:ci", RegisterFramework, "eng/batch", true),
            ("user:ci", RegisterFramework, "engineering", false),
            ("user:ci", RegisterFramework, "*", false),
            ("user:ci", RunAs, "nobody", true),
            // `*` never reaches root; naming it does.
            ("user:ci", RunAs, "root", false),
            ("user:dba", RunAs, "root", true),
            ("user:dba", RunAs, "nobody", false),
            ("user:ops-alice", DrainAgent, "a1", true),
            ("user:ops-alice", KillTask, "user:ci", true),
            ("user:ops-alice", TeardownFramework, "user:ci", false),
            // Owners act on their own frameworks only.
            ("user:ci", KillTask, "user:ci", true),
            ("user:ci", ReadSandbox, "user:ci", true),
            ("user:ci", KillTask, "user:other", false),
            ("user:ci", ViewEnvironment, "user:other", false),
            ("user:ci", TakeOverFramework, "user:other", false),
            // Deny is the default.
            ("user:nobody", RegisterFramework, "eng", false),
            ("user:nobody", SetQuota, "eng", false),
            ("user:nobody", Read, "cluster", true),
            // Machines are not users.
            ("master:10.0.0.1:5050", Read, "cluster", true),
            ("master:10.0.0.1:5050", ManageAcls, "acl", false),
            ("agent:n1", Read, "cluster", true),
            ("agent:n1", RegisterFramework, "eng", false),
        ];
        for &(who, action, object, allowed) in rows {
            assert_eq!(
                authorize(&acl, &p(who), action, object).is_ok(),
                allowed,
                "{who} {action:?} {object}"
            );
        }
        let empty = Acl::default();
        assert!(authorize(&empty, &p("agent:n1"), Read, "cluster").is_err());
        assert!(authorize(&empty, &p("user:ci"), Read, "cluster").is_err());
    }

    #[test]
    fn a_refusal_names_the_rule_to_write() {
        let e = authorize(&Acl::default(), &p("user:ci"), RegisterFramework, "eng").expect_err("denied");
        assert_eq!(
            e.to_string(),
            "user:ci may not register_framework \"eng\": no ACL rule allows it (see `mezzo acl`)"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert_eq!(rule(&[], &[Read], &["*"]).check(), Err(AclError::Empty));
        assert!(rule(&["user:a*b"], &[Read], &["*"]).check().is_err());
        assert!(rule(&["user:a b"], &[Read], &["*"]).check().is_err());
        assert!(rule(&["user:a"], &[Read], &["x".repeat(300).as_str()]).check().is_err());
        assert!(rule(&["user:a"], &[Read], &["eng/*"]).check().is_ok());
        assert!("frobnicate".parse::<Action>().is_err());
        assert_eq!("run_as".parse::<Action>(), Ok(RunAs));
        for a in Action::ALL {
            assert_eq!(a.name().parse::<Action>(), Ok(a));
        }
    }
}
