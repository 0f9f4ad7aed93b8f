//! Placement constraints in the manner of Marathon's: where a group of
//! tasks (one service, one job) may run, judged per offer against where the
//! group already runs.

use std::collections::{BTreeMap, BTreeSet};

use mezzo_proto::v1;
use regex::Regex;

/// One rule for where a task of a group may be placed.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// At most one task of the group per host.
    UniqueHost,
    /// At most this many tasks of the group per host.
    MaxPerHost(usize),
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

    /// Whether one more task of the group may go on `offer`. `known` lists
    /// the other offers at hand (for [`Constraint::Spread`]).
    pub fn check(&self, offer: &v1::Offer, placed: &Placed, known: &[v1::Offer]) -> Result<(), Violation> {
        match self {
            Constraint::UniqueHost => host_limit(offer, placed, 1),
            Constraint::MaxPerHost(n) => host_limit(offer, placed, *n),
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

/// Where a group's tasks already run: counts per host and per attribute
/// value. Fill it from the framework's running tasks (see
/// [`Placed::add`]); [`pack`](crate::offers::pack) adds what it places.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// (attribute name, value) -> tasks. The host is attribute `hostname`.
    counts: BTreeMap<(String, String), usize>,
}

impl Placed {
    /// Records one task placed on the agent of `offer` (host and every
    /// attribute).
    pub fn add(&mut self, offer: &v1::Offer) {
        self.add_on(
            &offer.hostname,
            offer.attributes.iter().map(|a| (a.name.as_str(), a.value.as_str())),
        );
    }

    /// Records one task on `host` with these agent attributes.
    pub fn add_on<'a>(&mut self, host: &str, attributes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        *self.counts.entry(("hostname".into(), host.to_owned())).or_default() += 1;
        for (name, value) in attributes {
            *self.counts.entry((name.to_owned(), value.to_owned())).or_default() += 1;
        }
    }

    /// Forgets one task on `host` with these attributes (it ended).
    pub fn remove_on<'a>(&mut self, host: &str, attributes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut dec = |k: (String, String)| {
            if let Some(n) = self.counts.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(&k);
                }
            }
        };
        dec(("hostname".into(), host.to_owned()));
        for (name, value) in attributes {
            dec((name.to_owned(), value.to_owned()));
        }
    }

    /// Tasks on attribute `name` = `value` (`hostname` for hosts).
    pub fn count(&self, name: &str, value: &str) -> usize {
        self.counts
            .get(&(name.to_owned(), value.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.counts
            .keys()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
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
