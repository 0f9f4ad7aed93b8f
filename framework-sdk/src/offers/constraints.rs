//! Placement constraints in the manner of Marathon's: where a group of
//! tasks (one service, one job) may run, judged per offer against where the
//! group already runs ([`Placed`], which follows the group's tasks by id).

use std::collections::{BTreeMap, BTreeSet};

use mezzo_proto::v1;
use regex::Regex;

/// One rule for where a task of a group may be placed.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// At most one task of the group per host.
    UniqueHost,
    /// At most this many tasks of the group per host. Agents that share a
    /// machine often report one host name: then they share the limit (a
    /// warning says so); use [`Constraint::MaxPerAgent`] to count per agent.
    MaxPerHost(usize),
    /// At most one task of the group per agent.
    UniqueAgent,
    /// At most this many tasks of the group per agent.
    MaxPerAgent(usize),
    /// Only on agents whose attribute `name` equals `value`.
    AttributeEquals {
        /// Attribute name (`hostname` matches the agent's host name).
        name: String,
        /// Required value.
        value: String,
    },
    /// Only on agents whose attribute `name` matches the regular expression
    /// (anchored: it must match the whole value).
    AttributeLike {
        /// Attribute name (`hostname` matches the agent's host name).
        name: String,
        /// The anchored pattern.
        pattern: Regex,
    },
    /// Spread evenly over the values of attribute `name`: a value may take
    /// another task only while it has no more tasks than any other value
    /// known (from the offers at hand and the tasks already placed).
    Spread {
        /// Attribute name (`hostname` spreads over hosts).
        name: String,
    },
}

/// A constraint that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The pattern of an attribute-like constraint is not a valid regex.
    #[error("constraint on attribute {name}: bad pattern {pattern:?}: {why}")]
    BadPattern {
        /// Attribute name.
        name: String,
        /// The pattern given.
        pattern: String,
        /// The regex parser's explanation.
        why: String,
    },
    /// `max_per_host` of zero would allow nothing.
    #[error("constraint max_per_host must be at least 1")]
    ZeroPerHost,
    /// `max_per_agent` of zero would allow nothing.
    #[error("constraint max_per_agent must be at least 1")]
    ZeroPerAgent,
}

/// Why an offer is refused for a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The host already runs as many tasks of the group as allowed.
    #[error("host {host} already runs {count} task(s) of this group (limit {limit})")]
    HostFull {
        /// The host.
        host: String,
        /// Tasks of the group on it.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The agent already runs as many tasks of the group as allowed.
    #[error("agent {agent} already runs {count} task(s) of this group (limit {limit})")]
    AgentFull {
        /// The agent's id.
        agent: String,
        /// Tasks of the group on it.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The agent lacks the attribute or its value does not match.
    #[error("attribute {name} is {found:?}, wanted {wanted}")]
    Attribute {
        /// Attribute name.
        name: String,
        /// The agent's value, if it has the attribute.
        found: Option<String>,
        /// What was required.
        wanted: String,
    },
    /// Placing here would unbalance the spread.
    #[error("attribute {name}={value} already has {count} task(s); another value has fewer")]
    Unbalanced {
        /// Attribute name.
        name: String,
        /// This offer's value.
        value: String,
        /// Tasks already on that value.
        count: usize,
    },
}

impl Constraint {
    /// An [`Constraint::AttributeLike`], with its pattern anchored and
    /// compiled.
    pub fn like(name: impl Into<String>, pattern: &str) -> Result<Constraint, ConstraintError> {
        let name = name.into();
        let pattern = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| ConstraintError::BadPattern {
            name: name.clone(),
            pattern: pattern.to_owned(),
            why: e.to_string(),
        })?;
        Ok(Constraint::AttributeLike { name, pattern })
    }

    /// A [`Constraint::MaxPerHost`], refusing zero.
    pub fn max_per_host(n: usize) -> Result<Constraint, ConstraintError> {
        if n == 0 {
            return Err(ConstraintError::ZeroPerHost);
        }
        Ok(Constraint::MaxPerHost(n))
    }

    /// A [`Constraint::MaxPerAgent`], refusing zero.
    pub fn max_per_agent(n: usize) -> Result<Constraint, ConstraintError> {
        if n == 0 {
            return Err(ConstraintError::ZeroPerAgent);
        }
        Ok(Constraint::MaxPerAgent(n))
    }

    /// True for the constraints that count per host name.
    pub(crate) fn per_host(&self) -> bool {
        matches!(self, Constraint::UniqueHost | Constraint::MaxPerHost(_))
    }

    /// Whether one more task of the group may go on `offer`. `known` lists
    /// the other offers at hand (for [`Constraint::Spread`]).
    pub fn check(&self, offer: &v1::Offer, placed: &Placed, known: &[v1::Offer]) -> Result<(), Violation> {
        match self {
            Constraint::UniqueHost => host_limit(offer, placed, 1),
            Constraint::MaxPerHost(n) => host_limit(offer, placed, *n),
            Constraint::UniqueAgent => agent_limit(offer, placed, 1),
            Constraint::MaxPerAgent(n) => agent_limit(offer, placed, *n),
            Constraint::AttributeEquals { name, value } => {
                let found = attribute(offer, name);
                if found == Some(value.as_str()) {
                    Ok(())
                } else {
                    Err(Violation::Attribute {
                        name: name.clone(),
                        found: found.map(str::to_owned),
                        wanted: format!("= {value}"),
                    })
                }
            }
            Constraint::AttributeLike { name, pattern } => {
                let found = attribute(offer, name);
                if found.is_some_and(|v| pattern.is_match(v)) {
                    Ok(())
                } else {
                    Err(Violation::Attribute {
                        name: name.clone(),
                        found: found.map(str::to_owned),
                        wanted: format!("like {}", pattern.as_str()),
                    })
                }
            }
            Constraint::Spread { name } => {
                let Some(value) = attribute(offer, name) else {
                    return Err(Violation::Attribute {
                        name: name.clone(),
                        found: None,
                        wanted: "any value (spread)".into(),
                    });
                };
                let count = placed.count(name, value);
                let mut values: BTreeSet<&str> = known.iter().filter_map(|o| attribute(o, name)).collect();
                values.extend(placed.values(name));
                let least = values.iter().map(|v| placed.count(name, v)).min().unwrap_or(0);
                if count <= least {
                    Ok(())
                } else {
                    Err(Violation::Unbalanced {
                        name: name.clone(),
                        value: value.to_owned(),
                        count,
                    })
                }
            }
        }
    }
}

fn host_limit(offer: &v1::Offer, placed: &Placed, limit: usize) -> Result<(), Violation> {
    let count = placed.count("hostname", &offer.hostname);
    if count < limit {
        Ok(())
    } else {
        Err(Violation::HostFull {
            host: offer.hostname.clone(),
            count,
            limit,
        })
    }
}

fn agent_limit(offer: &v1::Offer, placed: &Placed, limit: usize) -> Result<(), Violation> {
    let count = placed.count(AGENT, &offer.agent_id);
    if count < limit {
        Ok(())
    } else {
        Err(Violation::AgentFull {
            agent: offer.agent_id.clone(),
            count,
            limit,
        })
    }
}

/// The key under which [`Placed`] counts tasks per agent id (not an
/// attribute name an agent can have: those are checked to be plain words).
const AGENT: &str = "@agent";

/// The value of attribute `name` on the offer's agent; `hostname` is the
/// host name.
pub(crate) fn attribute<'a>(offer: &'a v1::Offer, name: &str) -> Option<&'a str> {
    if name == "hostname" {
        return Some(offer.hostname.as_str());
    }
    offer
        .attributes
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

/// Where one task runs: its agent, host and the agent's attributes, as an
/// offer tells them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The agent's id.
    pub agent_id: String,
    /// The agent's host name.
    pub hostname: String,
    /// The agent's attributes.
    pub attributes: Vec<(String, String)>,
}

impl Location {
    /// Where a task placed on `offer` runs.
    pub fn of(offer: &v1::Offer) -> Location {
        Location {
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            attributes: offer
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
        }
    }

    /// The (attribute, value) pairs it is counted under.
    fn keys(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let agent = (!self.agent_id.is_empty()).then_some((AGENT, self.agent_id.as_str()));
        std::iter::once(("hostname", self.hostname.as_str()))
            .chain(agent)
            .chain(self.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }
}

/// Where a group's tasks run: counts per agent, per host and per attribute
/// value, and each task's [`Location`] by task id, so that a task's end
/// frees its place ([`Placed::observe`] on every update) and a refused
/// launch gives its place back ([`Placed::release`]). [`pack`](crate::offers::pack)
/// counts what it places; [`Placed::assign`] names those placements once
/// their tasks have ids, and [`Scheduler::launch`](crate::Scheduler::launch)
/// does all of it. Keep one for the life of the group: a fresh one each
/// round forgets every task already running, and the constraints with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// Attribute name -> value -> tasks. The host is attribute
    /// `hostname`, the agent [`AGENT`]. Nested so that a look-up borrows
    /// (a spread plan counts once per task and offer).
    counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Each named task's location.
    tasks: BTreeMap<String, Location>,
    /// Host name -> the first agent seen with it, to notice agents that
    /// share a host name.
    host_agents: BTreeMap<String, String>,
    /// Host names that more than one agent reports.
    shared_hosts: BTreeSet<String>,
    /// The shared-host warning was logged.
    warned: bool,
}

impl Placed {
    /// Counts one task placed on the agent of `offer`, without an id.
    pub fn add(&mut self, offer: &v1::Offer) {
        self.count_in(&Location::of(offer));
    }

    /// Counts one task on `host` with these agent attributes, without an
    /// id or an agent (per-agent constraints do not see it).
    pub fn add_on<'a>(&mut self, host: &str, attributes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.count_in(&location(host, attributes));
    }

    /// Forgets one task counted by [`Placed::add_on`] (it ended).
    pub fn remove_on<'a>(&mut self, host: &str, attributes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.count_out(&location(host, attributes));
    }

    /// Records task `task_id` running at `at` (a task found running, e.g.
    /// after a restart). Recording one id twice counts it once.
    pub fn place(&mut self, task_id: &str, at: Location) {
        if self.tasks.contains_key(task_id) {
            return;
        }
        self.count_in(&at);
        self.tasks.insert(task_id.to_owned(), at);
    }

    /// Names a placement that [`pack`](crate::offers::pack) already counted:
    /// task `task_id` is the one it placed at `at`. Its end, or
    /// [`Placed::release`], then frees that place.
    pub fn assign(&mut self, task_id: &str, at: Location) {
        if let Some(old) = self.tasks.insert(task_id.to_owned(), at) {
            // Named twice: the first place is freed (it was counted too).
            self.count_out(&old);
        }
    }

    /// Frees the place of task `task_id` (it ended, or its launch was
    /// refused). False when the id is not known.
    pub fn release(&mut self, task_id: &str) -> bool {
        self.take(task_id).is_some()
    }

    /// [`Placed::release`], answering where the task was.
    pub(crate) fn take(&mut self, task_id: &str) -> Option<Location> {
        let at = self.tasks.remove(task_id)?;
        self.count_out(&at);
        Some(at)
    }

    /// Follows a task update: a task that ended frees its place. An
    /// unreachable one keeps it: it may still run. Repeated terminal
    /// updates (reconciliation) change nothing.
    pub fn observe(&mut self, status: &v1::TaskStatus) -> bool {
        let ended = crate::task_state(status).is_some_and(|s| s.is_terminal() && s != crate::TaskState::Unreachable);
        ended && self.release(&status.task_id)
    }

    /// Where task `task_id` runs, if it is recorded.
    pub fn location(&self, task_id: &str) -> Option<&Location> {
        self.tasks.get(task_id)
    }

    /// Tasks recorded by id.
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks on attribute `name` = `value` (`hostname` for hosts).
    pub fn count(&self, name: &str, value: &str) -> usize {
        self.counts
            .get(name)
            .and_then(|values| values.get(value))
            .copied()
            .unwrap_or(0)
    }

    /// Tasks on the agent `agent_id`.
    pub fn on_agent(&self, agent_id: &str) -> usize {
        self.count(AGENT, agent_id)
    }

    /// Host names that more than one agent reported in the offers seen.
    pub fn shared_hosts(&self) -> impl Iterator<Item = &str> {
        self.shared_hosts.iter().map(String::as_str)
    }

    /// Notes the agents of `offers`; with a per-host constraint in use,
    /// warns once when two agents report one host name (they then share
    /// its limit, which is rarely meant).
    pub(crate) fn note_agents(&mut self, offers: &[v1::Offer], constraints: &[Constraint]) {
        // Called on every round of offers: nothing is allocated for a host
        // already seen.
        for o in offers.iter().filter(|o| !o.agent_id.is_empty()) {
            match self.host_agents.get(&o.hostname) {
                Some(first) if *first == o.agent_id || self.shared_hosts.contains(&o.hostname) => {}
                Some(_) => {
                    self.shared_hosts.insert(o.hostname.clone());
                }
                None => {
                    self.host_agents.insert(o.hostname.clone(), o.agent_id.clone());
                }
            }
        }
        if !self.warned && !self.shared_hosts.is_empty() && constraints.iter().any(Constraint::per_host) {
            self.warned = true;
            let hosts: Vec<&str> = self.shared_hosts().collect();
            tracing::warn!(
                ?hosts,
                "several agents report the same host name, so a per-host constraint counts them together; give each agent its own --hostname, or use MaxPerAgent/UniqueAgent"
            );
        }
    }

    /// Allocates only for a name or value not counted yet (this runs for
    /// every task placed and every one that ends).
    fn count_in(&mut self, at: &Location) {
        for (name, value) in at.keys() {
            if !self.counts.contains_key(name) {
                self.counts.insert(name.to_owned(), BTreeMap::new());
            }
            let Some(values) = self.counts.get_mut(name) else {
                continue;
            };
            match values.get_mut(value) {
                Some(n) => *n += 1,
                None => {
                    values.insert(value.to_owned(), 1);
                }
            }
        }
    }

    fn count_out(&mut self, at: &Location) {
        for (name, value) in at.keys() {
            let Some(values) = self.counts.get_mut(name) else {
                continue;
            };
            if let Some(n) = values.get_mut(value) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.counts.remove(name);
            }
        }
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.counts
            .get(name)
            .into_iter()
            .flat_map(|values| values.keys().map(String::as_str))
    }
}

fn location<'a>(host: &str, attributes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Location {
    Location {
        agent_id: String::new(),
        hostname: host.to_owned(),
        attributes: attributes
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
    }
}

/// Checks every constraint; the first violation is returned.
pub(crate) fn check_all(
    constraints: &[Constraint],
    offer: &v1::Offer,
    placed: &Placed,
    known: &[v1::Offer],
) -> Result<(), Violation> {
    constraints.iter().try_for_each(|c| c.check(offer, placed, known))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(host: &str, attrs: &[(&str, &str)]) -> v1::Offer {
        v1::Offer {
            offer_id: format!("o-{host}"),
            hostname: host.into(),
            attributes: attrs
                .iter()
                .map(|(n, v)| v1::Attribute {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn table() {
        let a = offer("a", &[("rack", "r1"), ("os", "debian-12")]);
        let b = offer("b", &[("rack", "r2")]);
        let known = [a.clone(), b.clone()];
        let mut one_on_a = Placed::default();
        one_on_a.add(&a);
        let empty = Placed::default();
        let like = Constraint::like("os", "debian-.*").expect("regex");
        let cases: Vec<(&str, Constraint, &v1::Offer, &Placed, bool)> = vec![
            ("unique host, empty", Constraint::UniqueHost, &a, &empty, true),
            ("unique host, taken", Constraint::UniqueHost, &a, &one_on_a, false),
            ("unique host, other host", Constraint::UniqueHost, &b, &one_on_a, true),
            ("max 2, one there", Constraint::MaxPerHost(2), &a, &one_on_a, true),
            (
                "equals",
                Constraint::AttributeEquals {
                    name: "rack".into(),
                    value: "r1".into(),
                },
                &a,
                &empty,
                true,
            ),
            (
                "equals, other value",
                Constraint::AttributeEquals {
                    name: "rack".into(),
                    value: "r1".into(),
                },
                &b,
                &empty,
                false,
            ),
            ("like", like.clone(), &a, &empty, true),
            ("like, attribute missing", like.clone(), &b, &empty, false),
            (
                "like is anchored",
                Constraint::like("os", "debian").expect("regex"),
                &a,
                &empty,
                false,
            ),
            (
                "hostname is an attribute",
                Constraint::like("hostname", "[ab]").expect("regex"),
                &b,
                &empty,
                true,
            ),
            (
                "spread, empty",
                Constraint::Spread { name: "rack".into() },
                &a,
                &empty,
                true,
            ),
            (
                "spread, r1 ahead",
                Constraint::Spread { name: "rack".into() },
                &a,
                &one_on_a,
                false,
            ),
            (
                "spread, r2 behind",
                Constraint::Spread { name: "rack".into() },
                &b,
                &one_on_a,
                true,
            ),
        ];
        for (name, c, o, placed, ok) in cases {
            assert_eq!(c.check(o, placed, &known).is_ok(), ok, "{name}");
        }
    }

    /// Per-agent limits count agents, not host names: two agents on one
    /// machine each take their share.
    #[test]
    fn per_agent_limits_count_agents() {
        let on = |agent: &str, host: &str| v1::Offer {
            agent_id: agent.into(),
            ..offer(host, &[])
        };
        let (a1, a2) = (on("a1", "box"), on("a2", "box"));
        let mut p = Placed::default();
        p.add(&a1);
        assert!(Constraint::UniqueAgent.check(&a1, &p, &[]).is_err());
        assert!(Constraint::UniqueAgent.check(&a2, &p, &[]).is_ok());
        assert!(Constraint::UniqueHost.check(&a2, &p, &[]).is_err(), "one host name");
        assert!(Constraint::MaxPerAgent(2).check(&a1, &p, &[]).is_ok());
        assert_eq!(p.on_agent("a1"), 1);
        assert_eq!(
            Constraint::max_per_agent(0).expect_err("zero"),
            ConstraintError::ZeroPerAgent
        );
    }

    /// Places follow task ids: an end or a release frees them, once.
    #[test]
    fn places_follow_tasks() {
        let a = v1::Offer {
            agent_id: "a1".into(),
            ..offer("a", &[("rack", "r1")])
        };
        let mut p = Placed::default();
        p.place("t1", Location::of(&a));
        p.place("t1", Location::of(&a));
        assert_eq!((p.count("rack", "r1"), p.on_agent("a1"), p.tasks()), (1, 1, 1));
        let ended = |id: &str, state: crate::TaskState| v1::TaskStatus {
            task_id: id.into(),
            state: state.to_proto() as i32,
            ..Default::default()
        };
        assert!(!p.observe(&ended("t1", crate::TaskState::Running)));
        assert!(
            !p.observe(&ended("t1", crate::TaskState::Unreachable)),
            "it may still run"
        );
        assert!(p.observe(&ended("t1", crate::TaskState::Finished)));
        assert!(!p.observe(&ended("t1", crate::TaskState::Finished)), "a repeated end");
        assert_eq!(p, Placed::default());
        // A counted placement named later, then released.
        p.add(&a);
        p.assign("t2", Location::of(&a));
        assert_eq!(p.count("hostname", "a"), 1);
        assert!(p.release("t2"));
        assert_eq!(p.count("hostname", "a"), 0);
    }

    #[test]
    fn bad_constructors_say_why() {
        let err = Constraint::like("os", "(").expect_err("bad regex");
        assert!(err.to_string().contains("attribute os"), "{err}");
        assert_eq!(
            Constraint::max_per_host(0).expect_err("zero"),
            ConstraintError::ZeroPerHost
        );
    }

    #[test]
    fn remove_undoes_add() {
        let a = offer("a", &[("rack", "r1")]);
        let mut p = Placed::default();
        p.add(&a);
        p.add(&a);
        p.remove_on("a", [("rack", "r1")]);
        assert_eq!(p.count("hostname", "a"), 1);
        p.remove_on("a", [("rack", "r1")]);
        assert_eq!(p, Placed::default());
    }
}
