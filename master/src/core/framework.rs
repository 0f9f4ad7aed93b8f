//! Frameworks: subscribe, resume, disconnect, failover timeout, teardown.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::reservation::Role;
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use super::offer::known_roles;
use super::task_index::Table;
use super::{ConnId, Effect, Framework, Master};
use crate::error::MasterError;
use crate::registry::{FrameworkRecord, RegistryOp};
use mezzo_proto::clock::unix_now;

fn record(id: &FrameworkId, info: &v1::FrameworkInfo, registered_at: f64) -> FrameworkRecord {
    FrameworkRecord {
        registered_at,
        id: id.clone(),
        name: info.name.clone(),
        user: info.user.clone(),
        principal: info.principal.clone(),
        roles: info.roles.clone(),
        failover_timeout_secs: info.failover_timeout_secs,
        hostname: info.hostname.clone(),
    }
}

fn info_of(rec: &FrameworkRecord) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: rec.name.clone(),
        user: rec.user.clone(),
        principal: rec.principal.clone(),
        roles: rec.roles.clone(),
        failover_timeout_secs: rec.failover_timeout_secs,
        hostname: rec.hostname.clone(),
    }
}

/// The framework's roles (validated by the API layer); `*` if none.
pub(crate) fn roles_of(roles: &[String]) -> Vec<Role> {
    let mut out: Vec<Role> = roles.iter().filter_map(|r| Role::parse(r).ok()).collect();
    if out.is_empty() {
        out.push(Role::star());
    }
    out
}

impl Master {
    pub(crate) fn insert_framework(
        &mut self,
        rec: &FrameworkRecord,
        conn: Option<ConnId>,
        disconnected_at: Option<Instant>,
    ) {
        self.frameworks.insert(
            rec.id.clone(),
            Framework {
                id: rec.id.clone(),
                info: info_of(rec),
                conn,
                disconnected_at,
                suppressed_roles: Default::default(),
                tasks: HashMap::new(),
                completed: VecDeque::new(),
                completed_by_id: HashMap::new(),
                offers: HashSet::new(),
                allocated: Resources::default(),
                offered: Resources::default(),
                // Records from before the field have 0: now is all we know.
                registered_at: if rec.registered_at.is_finite() && rec.registered_at > 0.0 {
                    rec.registered_at
                } else {
                    unix_now()
                },
            },
        );
        self.alloc.add_framework(&rec.id, &roles_of(&rec.roles), conn.is_some());
    }

    /// A framework opens its event stream. A new framework is registered
    /// through the registry first; a known id resumes at once.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        info: v1::FrameworkInfo,
        id: Option<FrameworkId>,
        suppressed: Vec<Role>,
        now: Instant,
    ) -> Result<(), MasterError> {
        known_roles(&info, &suppressed)?;
        let Some(id) = id else {
            let id = FrameworkId::generate();
            self.emit(Effect::Propose(RegistryOp::RegisterFramework(record(
                &id,
                &info,
                unix_now(),
            ))));
            self.pending_frameworks.insert(id, (conn, info, suppressed));
            return Ok(());
        };
        let Some(fw) = self.frameworks.get_mut(&id) else {
            return Err(MasterError::UnknownFramework(id.to_string()));
        };
        let old = fw.conn.replace(conn);
        fw.disconnected_at = None;
        fw.suppressed_roles.clear();
        let changed = fw.info != info;
        if let Some(old) = old {
            // Offers went to the old stream; the new one never saw them.
            self.rescind_framework_offers(&id, false);
            self.framework_conns.remove(&old);
            let err = v1::event::Event::Error(v1::Error {
                message: "framework failed over to a newer subscription".into(),
            });
            self.emit(Effect::ToFramework(old, v1::Event { event: Some(err) }));
            self.emit(Effect::CloseFramework(old));
        }
        if changed {
            self.change_info(&id, info)?;
        }
        self.framework_conns.insert(conn, id.clone());
        self.alloc.set_framework_active(&id, true);
        self.alloc.revive(&id, &[]);
        // Suppressed where it says it was (a framework failing over or
        // following a new leader): no offer made only to be rescinded.
        if !suppressed.is_empty() {
            self.set_suppressed(&id, suppressed)?;
        }
        self.send_subscribed(&id);
        self.notify_drains_to(&id);
        // Updates forwarded while it was away and never acknowledged.
        let resend: Vec<(TaskId, v1::TaskStatus)> = self
            .frameworks
            .get(&id)
            .map(|f| {
                (f.tasks.values())
                    .filter_map(|t| Some((t.id.clone(), t.unacked.as_deref()?.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for (tid, status) in resend {
            self.forward_unacked(&id, &tid, status, now);
        }
        self.allocation_needed = true;
        tracing::info!(framework = %id, conn, "framework re-subscribed");
        Ok(())
    }

    /// A registered framework's new info, kept: its roles, failover
    /// timeout, user and host name may change; its name and principal are
    /// fixed.
    fn change_info(&mut self, id: &FrameworkId, mut info: v1::FrameworkInfo) -> Result<(), MasterError> {
        let fw = self
            .frameworks
            .get_mut(id)
            .ok_or_else(|| MasterError::UnknownFramework(id.to_string()))?;
        info.name = fw.info.name.clone();
        fw.info = info.clone();
        let registered_at = fw.registered_at;
        self.alloc.add_framework(id, &roles_of(&info.roles), true);
        self.emit(Effect::Propose(RegistryOp::RegisterFramework(record(
            id,
            &info,
            registered_at,
        ))));
        Ok(())
    }

    /// Mesos' `UPDATE_FRAMEWORK`: a subscribed framework changes its info
    /// without subscribing again (rights checked as for a subscription).
    /// Its offers are rescinded when its roles change, so that none is of
    /// a role it left.
    /// New framework info in place; with `suppressed`, the roles it is
    /// suppressed in from now on (Mesos' `UPDATE_FRAMEWORK` sets them all).
    pub fn update_framework(
        &mut self,
        id: &FrameworkId,
        info: v1::FrameworkInfo,
        suppressed: Option<Vec<Role>>,
    ) -> Result<(), MasterError> {
        self.subscribed(id)?;
        let Some(fw) = self.frameworks.get(id) else {
            return Err(MasterError::UnknownFramework(id.to_string()));
        };
        if let Some(roles) = &suppressed {
            known_roles(&info, roles)?;
        }
        if fw.info != info {
            let roles_changed = fw.info.roles != info.roles;
            self.change_info(id, info)?;
            if let Some(fw) = self.frameworks.get_mut(id) {
                let named = &fw.info.roles;
                fw.suppressed_roles.retain(|r| named.iter().any(|n| n == r.as_str()));
            }
            if roles_changed {
                self.rescind_framework_offers(id, true);
                self.allocation_needed = true;
            }
        }
        if let Some(roles) = suppressed {
            self.set_suppressed(id, roles)?;
        }
        Ok(())
    }

    fn send_subscribed(&mut self, id: &FrameworkId) {
        let ev = v1::event::Event::Subscribed(v1::Subscribed {
            framework_id: id.to_string(),
            heartbeat_interval_secs: self.cfg.heartbeat_interval.as_secs_f64(),
            master_id: self.cfg.master_id.clone(),
        });
        self.send_framework(id, ev);
    }

    pub(crate) fn framework_registered(&mut self, rec: &FrameworkRecord, now: Instant) {
        if self.frameworks.contains_key(&rec.id) {
            return; // an info update of a known framework
        }
        match self.pending_frameworks.remove(&rec.id) {
            Some((conn, _, suppressed)) => {
                self.insert_framework(rec, Some(conn), None);
                self.framework_conns.insert(conn, rec.id.clone());
                if !suppressed.is_empty()
                    && let Err(e) = self.set_suppressed(&rec.id, suppressed)
                {
                    tracing::warn!(framework = %rec.id, "its suppressed roles: {e}");
                }
                self.send_subscribed(&rec.id);
                self.notify_drains_to(&rec.id);
                self.allocation_needed = true;
                self.note_framework_added(&rec.id, &rec.name);
                tracing::info!(framework = %rec.id, name = %rec.name, "framework registered");
            }
            None => self.insert_framework(rec, None, Some(now)),
        }
    }

    /// The framework's event stream closed. Its offers are rescinded; its
    /// tasks keep running until its failover timeout passes.
    pub fn framework_conn_closed(&mut self, conn: ConnId, now: Instant) {
        self.pending_frameworks.retain(|_, (c, _, _)| *c != conn);
        let Some(id) = self.framework_conns.remove(&conn) else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(&id) else { return };
        if fw.conn != Some(conn) {
            return;
        }
        fw.conn = None;
        fw.disconnected_at = Some(now);
        self.alloc.set_framework_active(&id, false);
        tracing::info!(framework = %id, "framework disconnected");
        self.rescind_framework_offers(&id, false);
        // A framework with no failover timeout goes at once; the others are
        // left to the periodic check (no scan of every framework here).
        if fw_timeout_is_zero(self.frameworks.get(&id)) {
            if let Some(fw) = self.frameworks.get_mut(&id) {
                fw.disconnected_at = None;
            }
            self.propose_framework_removal(id);
        }
    }

    pub(crate) fn check_failovers(&mut self, now: Instant) {
        // Once a second is enough for timeouts given in seconds.
        if now.duration_since(self.last_failover_check) < Duration::from_secs(1) {
            return;
        }
        self.last_failover_check = now;
        let expired: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| {
                f.disconnected_at.is_some_and(|at| {
                    let timeout = Duration::try_from_secs_f64(f.info.failover_timeout_secs).unwrap_or(Duration::MAX);
                    now.duration_since(at) >= timeout
                })
            })
            .map(|f| f.id.clone())
            .collect();
        for id in expired {
            if let Some(fw) = self.frameworks.get_mut(&id) {
                fw.disconnected_at = None; // propose once
            }
            tracing::info!(framework = %id, "failover timeout passed; removing framework");
            self.propose_framework_removal(id);
        }
    }

    pub fn teardown(&mut self, id: &FrameworkId) -> Result<(), MasterError> {
        self.subscribed(id)?;
        self.propose_framework_removal(id.clone());
        Ok(())
    }

    /// Returns an error unless `id` holds an open subscription.
    pub(crate) fn subscribed(&self, id: &FrameworkId) -> Result<(), MasterError> {
        match self.frameworks.get(id) {
            Some(f) if f.conn.is_some() => Ok(()),
            _ => Err(MasterError::NotSubscribed(id.to_string())),
        }
    }

    pub(crate) fn framework_removed(&mut self, id: &FrameworkId, _now: Instant) {
        self.rescind_framework_offers(id, false);
        let Some(fw) = self.frameworks.remove(id) else { return };
        if let Some(conn) = fw.conn {
            self.framework_conns.remove(&conn);
            let err = v1::event::Event::Error(v1::Error {
                message: format!("framework {id} was removed"),
            });
            self.emit(Effect::ToFramework(conn, v1::Event { event: Some(err) }));
            self.emit(Effect::CloseFramework(conn));
        }
        for t in fw.tasks.values() {
            self.task_index.remove(t, Table::Active);
        }
        for t in &fw.completed {
            self.task_index.remove(t, Table::Completed);
        }
        let mut agents = HashSet::new();
        for task in fw.tasks.values() {
            if let Some(agent) = self.agents.get_mut(&task.agent_id) {
                agent.tasks.remove(&(id.clone(), task.id.clone()));
                if !task.state.is_terminal() {
                    agent.used = agent.used.saturating_sub(&task.resources.total());
                }
            }
            agents.insert(task.agent_id.clone());
        }
        agents.extend(self.drop_framework_executors(id));
        for agent in agents {
            let msg = v1::master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                framework_id: id.to_string(),
            });
            self.send_agent(&agent, msg);
        }
        self.record_killed_by_removal(fw.tasks.into_values());
        self.alloc.remove_framework(id);
        self.allocation_needed = true;
        self.note_framework_removed(id);
        tracing::info!(framework = %id, "framework removed");
    }
}

fn fw_timeout_is_zero(fw: Option<&Framework>) -> bool {
    fw.is_some_and(|f| f.info.failover_timeout_secs <= 0.0)
}

impl Framework {
    /// Suppressed in every one of its roles: it gets no offers at all.
    pub(super) fn suppressed_everywhere(&self) -> bool {
        !self.suppressed_roles.is_empty()
            && self
                .info
                .roles
                .iter()
                .all(|r| self.suppressed_roles.iter().any(|s| s.as_str() == r))
    }

    /// The roles it suppressed offers in, by name.
    pub(super) fn suppressed_role_names(&self) -> Vec<String> {
        self.suppressed_roles.iter().map(|r| r.to_string()).collect()
    }
}
