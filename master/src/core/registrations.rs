//! The registration ids agents name in `Register`, so that a registration
//! the agent retries (it stopped waiting, or its answer was lost) finds the
//! agent its first attempt made instead of making another. Kept in memory
//! by the leader, for a while and up to a bound.

use foldhash::HashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mezzo_proto::ids::AgentId;

/// How long a registration id is remembered: longer than an agent keeps
/// retrying before its waits reach their cap.
const KEPT_FOR: Duration = Duration::from_secs(600);
/// At most this many (a storm of bogus ids forgets the oldest first).
const MAX_KEPT: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct Registrations {
    by_id: HashMap<String, Made>,
    /// Registration ids by when they were noted, oldest first, with the
    /// number of their note.
    order: VecDeque<(Instant, u64, String)>,
    notes: u64,
}

#[derive(Debug)]
struct Made {
    agent: AgentId,
    principal: Option<String>,
    /// The number of the note that made this entry.
    note: u64,
    at: Instant,
}

impl Registrations {
    /// The agent a registration with this id made earlier, if the same
    /// principal made it, and when.
    pub(crate) fn earlier(
        &mut self,
        id: Option<&str>,
        principal: Option<&str>,
        now: Instant,
    ) -> Option<(AgentId, Instant)> {
        self.expire(now);
        let made = self.by_id.get(id?)?;
        (made.principal.as_deref() == principal).then(|| (made.agent.clone(), made.at))
    }

    /// Remembers that a registration with this id made `agent`.
    pub(crate) fn note(&mut self, id: Option<&str>, agent: &AgentId, principal: Option<&str>, now: Instant) {
        let Some(id) = id else { return };
        self.notes += 1;
        let made = Made {
            agent: agent.clone(),
            principal: principal.map(str::to_owned),
            note: self.notes,
            at: now,
        };
        self.by_id.insert(id.to_owned(), made);
        self.order.push_back((now, self.notes, id.to_owned()));
        while self.order.len() > MAX_KEPT {
            self.forget_oldest();
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > KEPT_FOR)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, note, id)) = self.order.pop_front()
            // Noted again since (its agent was gone): the newer entry stays.
            && self.by_id.get(&id).is_some_and(|m| m.note == note)
        {
            self.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_for_its_principal_until_it_expires() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        let a = AgentId::generate();
        r.note(Some("reg-1"), &a, Some("agent-x"), t0);
        r.note(None, &AgentId::generate(), Some("agent-x"), t0);
        assert_eq!(r.earlier(Some("reg-1"), Some("agent-x"), t0), Some((a.clone(), t0)));
        assert_eq!(
            r.earlier(Some("reg-1"), Some("agent-y"), t0),
            None,
            "another principal's"
        );
        assert_eq!(r.earlier(Some("reg-2"), Some("agent-x"), t0), None);
        assert_eq!(r.earlier(None, Some("agent-x"), t0), None);
        let later = t0 + KEPT_FOR + Duration::from_secs(1);
        assert_eq!(r.earlier(Some("reg-1"), Some("agent-x"), later), None, "kept too long");
        assert!(r.by_id.is_empty() && r.order.is_empty());
    }

    #[test]
    fn bounded_oldest_first() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        for i in 0..=MAX_KEPT {
            r.note(Some(&format!("reg-{i}")), &AgentId::generate(), None, t0);
        }
        assert_eq!(r.by_id.len(), MAX_KEPT);
        assert_eq!(r.earlier(Some("reg-0"), None, t0), None);
        assert!(r.earlier(Some(&format!("reg-{MAX_KEPT}")), None, t0).is_some());
    }
}
