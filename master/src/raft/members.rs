//! Changing the group at runtime: add a master (by address) or remove one
//! (by id). A change is one Raft conf change whose context carries the
//! member's id and address, so every master's member list (id -> address,
//! kept in the registry snapshot) changes at the same log index.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use serde::{Deserialize, Serialize};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add { address: String },
    Remove { id: u64 },
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("this master is not the leader{}", .0.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader(Option<String>),
    #[error("address {0:?} is not host:port")]
    BadAddress(String),
    #[error("{address} is already master {id}")]
    AlreadyMember { id: u64, address: String },
    #[error("master {0} is not a member of the group")]
    UnknownMember(u64),
    #[error("master {0} is the last member; removing it would leave no group")]
    LastMember(u64),
    #[error("another membership change is still in progress; try again when it is applied")]
    Busy,
    #[error("master {0} leads; leadership is being handed to another master: retry the removal in a moment")]
    IsLeader(u64),
    #[error("raft refused the change: {0}")]
    Raft(String),
}

/// The context stored with a conf change entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChangeContext {
    pub id: u64,
    pub address: Option<String>,
}

/// Checks a change against the current members and builds the conf
/// change and its context; returns the id the change is about.
pub(crate) fn plan(
    change: &MemberChange,
    members: &BTreeMap<u64, String>,
    highest_ever: u64,
) -> Result<(u64, ConfChangeV2, Vec<u8>), MembershipError> {
    let (id, ty, address) = match change {
        MemberChange::Add { address } => {
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(MembershipError::BadAddress(address.clone()));
            }
            if let Some((id, _)) = members.iter().find(|(_, a)| *a == address) {
                return Err(MembershipError::AlreadyMember {
                    id: *id,
                    address: address.clone(),
                });
            }
            // Ids are never reused: a removed master's process must not be
            // taken for a new one.
            let id = members.keys().max().copied().unwrap_or(0).max(highest_ever) + 1;
            (id, ConfChangeType::AddNode, Some(address.clone()))
        }
        MemberChange::Remove { id } => {
            if !members.contains_key(id) {
                return Err(MembershipError::UnknownMember(*id));
            }
            if members.len() == 1 {
                return Err(MembershipError::LastMember(*id));
            }
            (*id, ConfChangeType::RemoveNode, None)
        }
    };
    let mut single = ConfChangeSingle::default();
    single.set_change_type(ty);
    single.node_id = id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    let ctx = serde_json::to_vec(&ChangeContext { id, address }).map_err(|e| MembershipError::Raft(e.to_string()))?;
    Ok((id, cc, ctx))
}

/// Applies a committed change to the member list; returns the highest id
/// it names (to keep ids from being reused).
pub(crate) fn apply(cc: &ConfChangeV2, context: &[u8], members: &mut BTreeMap<u64, String>) -> u64 {
    let ctx: Option<ChangeContext> = serde_json::from_slice(context).ok();
    for change in cc.get_changes() {
        match change.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Some(address) = ctx
                    .as_ref()
                    .filter(|c| c.id == change.node_id)
                    .and_then(|c| c.address.clone())
                {
                    members.insert(change.node_id, address);
                }
            }
            ConfChangeType::RemoveNode => {
                members.remove(&change.node_id);
            }
        }
    }
    cc.get_changes().iter().map(|c| c.node_id).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> BTreeMap<u64, String> {
        (1..=n).map(|i| (i, format!("127.0.0.1:{}", 5000 + i))).collect()
    }

    /// Bad membership requests are refused with the reason; good ones get
    /// the next id and apply to the member list.
    #[test]
    fn plan_and_apply() {
        let m = members(3);
        let cases = [
            (
                MemberChange::Add {
                    address: "nonsense".into(),
                },
                "not host:port",
            ),
            (
                MemberChange::Add {
                    address: "127.0.0.1:5002".into(),
                },
                "already master 2",
            ),
            (MemberChange::Remove { id: 9 }, "not a member"),
        ];
        for (change, want) in cases {
            let err = plan(&change, &m, 0).expect_err(want).to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(matches!(
            plan(&MemberChange::Remove { id: 1 }, &members(1), 0),
            Err(MembershipError::LastMember(1))
        ));

        let mut m = members(3);
        let (id, cc, ctx) = plan(
            &MemberChange::Add {
                address: "127.0.0.1:6000".into(),
            },
            &m,
            0,
        )
        .expect("add");
        assert_eq!(id, 4);
        assert_eq!(apply(&cc, &ctx, &mut m), 4);
        assert_eq!(m.get(&4).map(String::as_str), Some("127.0.0.1:6000"));
        let (_, cc, ctx) = plan(&MemberChange::Remove { id: 2 }, &m, 0).expect("remove");
        apply(&cc, &ctx, &mut m);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4]);
        // A removed id is never handed out again.
        let (_, cc, ctx) = plan(&MemberChange::Remove { id: 4 }, &m, 0).expect("remove");
        apply(&cc, &ctx, &mut m);
        let (id, _, _) = plan(
            &MemberChange::Add {
                address: "127.0.0.1:6001".into(),
            },
            &m,
            4,
        )
        .expect("add");
        assert_eq!(id, 5);
    }
}
