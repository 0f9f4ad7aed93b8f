//! Roles and reserved resources (DESIGN.md "Resources", "Allocator").
//!
//! A [`Role`] is a path in the role tree (`eng/batch`); `*` is the default
//! role every framework is in unless it names others. [`ReservedResources`]
//! is one agent's (or one offer's, or one task's) [`Resources`] split into
//! the unreserved part and one part per role it is reserved for. The text
//! form is Mesos': `cpus:4;mem:8192;cpus(eng):2;mem(eng):1024`.
//!
//! ```
//! use mezzo_proto::reservation::{ReservedResources, Role};
//! let agent = ReservedResources::parse("cpus:4;mem:4096;cpus(eng):2;mem(eng):1024").unwrap();
//! let eng = Role::parse("eng").unwrap();
//! assert_eq!(agent.reserved[&eng].to_string(), "cpus:2;mem:1024");
//! assert_eq!(agent.total().to_string(), "cpus:6;mem:5120");
//! assert_eq!(ReservedResources::parse(&agent.to_string()).unwrap(), agent);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::resources::{ResourceError, Resources};
use crate::v1;

/// Longest role name, in bytes.
pub const MAX_ROLE_LEN: usize = 128;
/// Deepest role tree (`a/b/c/...`).
pub const MAX_ROLE_DEPTH: usize = 8;

/// Why a role name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("role name is empty")]
    Empty,
    #[error("role {role:?} is {len} bytes long (at most {MAX_ROLE_LEN})")]
    TooLong { role: String, len: usize },
    #[error("role {role:?} is more than {MAX_ROLE_DEPTH} levels deep")]
    TooDeep { role: String },
    #[error(
        "role {role:?}: each part between '/' must be 1 or more of letters, digits, '-', '_', '.', may not start with '.' and may not be '*' (only the whole role may be '*')"
    )]
    BadPart { role: String },
}

/// A validated role: `*` or a `/`-separated path of names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    /// The default role, `*`.
    pub fn star() -> Role {
        Role("*".into())
    }

    pub fn parse(s: &str) -> Result<Role, RoleError> {
        if s.is_empty() {
            return Err(RoleError::Empty);
        }
        if s == "*" {
            return Ok(Role::star());
        }
        let short: String = s.chars().take(64).collect();
        if s.len() > MAX_ROLE_LEN {
            return Err(RoleError::TooLong {
                role: short,
                len: s.len(),
            });
        }
        if s.split('/').count() > MAX_ROLE_DEPTH {
            return Err(RoleError::TooDeep { role: short });
        }
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !s.split('/').all(ok) {
            return Err(RoleError::BadPart { role: short });
        }
        Ok(Role(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_star(&self) -> bool {
        self.0 == "*"
    }

    /// The enclosing role (`eng` for `eng/batch`); `None` at the top.
    pub fn parent(&self) -> Option<Role> {
        self.0.rsplit_once('/').map(|(p, _)| Role(p.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Role {
    type Error = RoleError;
    fn try_from(s: String) -> Result<Role, RoleError> {
        Role::parse(&s)
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.0
    }
}

/// Why a reserved-resources description was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReservationError {
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("resource {name}: reserved for role {role:?} with no closing ')'")]
    Unclosed { name: String, role: String },
}

/// Resources split by reservation. Roles with nothing reserved are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservedResources {
    pub unreserved: Resources,
    pub reserved: BTreeMap<Role, Resources>,
}

impl ReservedResources {
    /// Nothing reserved.
    pub fn unreserved(r: Resources) -> ReservedResources {
        ReservedResources {
            unreserved: r,
            reserved: BTreeMap::new(),
        }
    }

    /// Everything reserved for `role` (or unreserved when `role` is `*`).
    pub fn for_role(role: &Role, r: Resources) -> ReservedResources {
        let mut out = ReservedResources::default();
        out.part_mut(role).add(&r);
        out.normalize();
        out
    }

    /// The part for `role`: the reserved one, or the unreserved one for `*`.
    pub fn part(&self, role: &Role) -> Option<&Resources> {
        if role.is_star() {
            Some(&self.unreserved)
        } else {
            self.reserved.get(role)
        }
    }

    fn part_mut(&mut self, role: &Role) -> &mut Resources {
        if role.is_star() {
            &mut self.unreserved
        } else {
            self.reserved.entry(role.clone()).or_default()
        }
    }

    fn normalize(&mut self) {
        self.reserved.retain(|_, r| !r.is_empty());
    }

    pub fn is_empty(&self) -> bool {
        self.unreserved.is_empty() && self.reserved.values().all(Resources::is_empty)
    }

    /// Every part added together.
    pub fn total(&self) -> Resources {
        let mut t = self.unreserved.clone();
        for r in self.reserved.values() {
            t.add(r);
        }
        t
    }

    /// True when each part of `other` is within the same part of `self`.
    pub fn contains(&self, other: &ReservedResources) -> bool {
        self.unreserved.contains(&other.unreserved)
            && other
                .reserved
                .iter()
                .all(|(role, r)| self.reserved.get(role).is_some_and(|mine| mine.contains(r)) || r.is_empty())
    }

    pub fn add(&mut self, other: &ReservedResources) {
        self.unreserved.add(&other.unreserved);
        for (role, r) in &other.reserved {
            self.reserved.entry(role.clone()).or_default().add(r);
        }
        self.normalize();
    }

    /// Part by part, floored at zero.
    pub fn saturating_sub(&self, other: &ReservedResources) -> ReservedResources {
        let mut out = self.clone();
        out.unreserved = out.unreserved.saturating_sub(&other.unreserved);
        for (role, r) in &other.reserved {
            if let Some(mine) = out.reserved.get_mut(role) {
                *mine = mine.saturating_sub(r);
            }
        }
        out.normalize();
        out
    }

    pub fn checked_sub(&self, other: &ReservedResources) -> Option<ReservedResources> {
        self.contains(other).then(|| self.saturating_sub(other))
    }

    /// Moves `r` from the unreserved part to `role`'s, if it is there.
    pub fn reserve(&self, role: &Role, r: &Resources) -> Option<ReservedResources> {
        let mut out = self.clone();
        out.unreserved = self.unreserved.checked_sub(r)?;
        out.part_mut(role).add(r);
        out.normalize();
        Some(out)
    }

    /// Moves `r` from `role`'s part back to the unreserved one, if it is there.
    pub fn unreserve(&self, role: &Role, r: &Resources) -> Option<ReservedResources> {
        let mut out = self.clone();
        let left = self.reserved.get(role)?.checked_sub(r)?;
        out.reserved.insert(role.clone(), left);
        out.unreserved.add(r);
        out.normalize();
        Some(out)
    }

    /// Takes `want` out of what `role` may use here: resources that name a
    /// reservation come from it; unreserved ones come from the unreserved
    /// part first, then from `role`'s reservation. Returns the split taken.
    pub fn take_for(&self, role: &Role, want: &ReservedResources) -> Option<ReservedResources> {
        let mut taken = ReservedResources::default();
        for (r, part) in &want.reserved {
            if r != role {
                return None;
            }
            taken.reserved.insert(r.clone(), part.clone());
        }
        let w = &want.unreserved;
        let free = &self.unreserved;
        let mut un = Resources {
            cpus: crate::resources::MilliCpus(w.cpus.0.min(free.cpus.0)),
            mem: crate::resources::Mib(w.mem.0.min(free.mem.0)),
            disk: crate::resources::Mib(w.disk.0.min(free.disk.0)),
            ..Default::default()
        };
        for range in w.ports.iter() {
            for overlap in free.ports.overlapping(range) {
                let b = *overlap.start().max(range.start());
                let e = *overlap.end().min(range.end());
                un.ports.insert(b..=e);
            }
        }
        for (k, v) in &w.scalars {
            let have = free.scalars.get(k).copied().unwrap_or(0);
            if have > 0 {
                un.scalars.insert(k.clone(), (*v).min(have));
            }
        }
        let rest = w.saturating_sub(&un);
        taken.unreserved = un;
        if !rest.is_empty() {
            if role.is_star() {
                return None;
            }
            taken.reserved.entry(role.clone()).or_default().add(&rest);
        }
        taken.normalize();
        self.contains(&taken).then_some(taken)
    }

    /// Converts and validates API resources; `role` empty or `*` is
    /// unreserved. A name may repeat across roles but not within one.
    pub fn from_proto(list: &[v1::Resource]) -> Result<ReservedResources, ReservationError> {
        // Most lists reserve nothing (every task a failover re-registers):
        // taken as they are, without a copy grouped by role.
        if list.iter().all(|r| r.role.is_empty() || r.role == "*") {
            return Ok(ReservedResources::unreserved(Resources::from_proto(list)?));
        }
        let mut groups: BTreeMap<Role, Vec<v1::Resource>> = BTreeMap::new();
        for res in list {
            let role = if res.role.is_empty() {
                Role::star()
            } else {
                Role::parse(&res.role)?
            };
            let mut plain = res.clone();
            plain.role.clear();
            plain.reservation_principal.clear();
            groups.entry(role).or_default().push(plain);
        }
        let mut out = ReservedResources::default();
        for (role, items) in groups {
            *out.part_mut(&role) = Resources::from_proto(&items)?;
        }
        out.normalize();
        Ok(out)
    }

    /// The API form: reserved parts carry their role.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        let mut out = self.unreserved.to_proto();
        for (role, r) in &self.reserved {
            out.extend(r.to_proto().into_iter().map(|mut x| {
                x.role = role.to_string();
                x
            }));
        }
        out
    }

    /// Parses `name:value` and `name(role):value` parts separated by `;`.
    pub fn parse(text: &str) -> Result<ReservedResources, ReservationError> {
        let mut groups: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once(':').unwrap_or((part, ""));
            let (name, role) = match name.split_once('(') {
                Some((n, rest)) => {
                    let role = rest.strip_suffix(')').ok_or_else(|| ReservationError::Unclosed {
                        name: n.trim().to_owned(),
                        role: rest.to_owned(),
                    })?;
                    (n.trim(), Role::parse(role.trim())?)
                }
                None => (name.trim(), Role::star()),
            };
            groups.entry(role).or_default().push(format!("{name}:{value}"));
        }
        let mut out = ReservedResources::default();
        for (role, parts) in groups {
            *out.part_mut(&role) = Resources::parse(&parts.join(";"))?;
        }
        out.normalize();
        Ok(out)
    }
}

impl fmt::Display for ReservedResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let un = self.unreserved.to_string();
        if !un.is_empty() {
            parts.push(un);
        }
        for (role, r) in &self.reserved {
            for p in r.to_string().split(';').filter(|p| !p.is_empty()) {
                if let Some((name, value)) = p.split_once(':') {
                    parts.push(format!("{name}({role}):{value}"));
                }
            }
        }
        f.write_str(&parts.join(";"))
    }
}

/// JSON form for `/state`: `{"unreserved": {...}, "reserved": {"eng": {...}}}`.
impl Serialize for ReservedResources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("unreserved", &self.unreserved)?;
        let reserved: BTreeMap<&str, &Resources> = self.reserved.iter().map(|(k, v)| (k.as_str(), v)).collect();
        m.serialize_entry("reserved", &reserved)?;
        m.end()
    }
}

/// The inverse of the JSON form, so that clients of `/state` (the CLI)
/// read it back with the same checks as [`Resources`]; a role with
/// nothing reserved is dropped, as the text form drops it.
impl<'de> Deserialize<'de> for ReservedResources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Json {
            #[serde(default)]
            unreserved: Resources,
            #[serde(default)]
            reserved: BTreeMap<String, Resources>,
        }
        let j = Json::deserialize(d)?;
        let mut reserved = BTreeMap::new();
        for (role, r) in j.reserved.into_iter().filter(|(_, r)| !r.is_empty()) {
            reserved.insert(Role::parse(&role).map_err(serde::de::Error::custom)?, r);
        }
        Ok(ReservedResources {
            unreserved: j.unreserved,
            reserved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(s: &str) -> ReservedResources {
        ReservedResources::parse(s).expect(s)
    }

    #[test]
    fn roles_are_checked() {
        for ok in ["*", "eng", "eng/batch", "a.b-c_d/e"] {
            assert!(Role::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("eng//x", "each part"),
            ("/eng", "each part"),
            ("eng/", "each part"),
            ("eng/*", "each part"),
            (".hidden", "each part"),
            ("a b", "each part"),
            ("a/b/c/d/e/f/g/h/i", "levels deep"),
        ] {
            let e = Role::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            Role::parse("eng/batch").ok().and_then(|r| r.parent()),
            Role::parse("eng").ok()
        );
        assert!(Role::star().parent().is_none());
    }

    /// DESIGN.md "Resources": every resource may carry a role.
    #[test]
    fn mesos_syntax_round_trips_through_text_and_proto() {
        let r = rr("cpus:4;mem:4096;cpus(eng):2;mem(eng):1024;ports(eng/web):[80-80]");
        assert_eq!(r.unreserved.to_string(), "cpus:4;mem:4096");
        assert_eq!(r.reserved.len(), 2);
        assert_eq!(ReservedResources::parse(&r.to_string()), Ok(r.clone()));
        assert_eq!(ReservedResources::from_proto(&r.to_proto()), Ok(r.clone()));
        assert_eq!(rr("cpus(*):1"), rr("cpus:1"));
        for (bad, why) in [
            ("cpus(eng:2", "closing"),
            ("cpus(bad role):2", "each part"),
            ("cpus(eng):-1", "negative"),
            ("cpus(eng):1;cpus(eng):2", "twice"),
        ] {
            let e = ReservedResources::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn json_form_round_trips() {
        let r = rr("cpus:4;mem:4096;cpus(eng):2;mem(eng/batch):1024");
        let text = serde_json::to_string(&r).expect("ser");
        assert_eq!(serde_json::from_str::<ReservedResources>(&text).expect("de"), r);
        let bad = r#"{"unreserved": {}, "reserved": {"bad role": {"cpus": 1}}}"#;
        assert!(serde_json::from_str::<ReservedResources>(bad).is_err());
    }

    #[test]
    fn reserve_unreserve_and_take() {
        let eng = Role::parse("eng").expect("role");
        let agent = rr("cpus:4;mem:1000");
        let two = Resources::parse("cpus:2").expect("r");
        let r = agent.reserve(&eng, &two).expect("fits");
        assert_eq!(r, rr("cpus:2;mem:1000;cpus(eng):2"));
        assert!(agent.reserve(&eng, &Resources::parse("cpus:5").expect("r")).is_none());
        assert_eq!(r.unreserve(&eng, &two), Some(agent.clone()));
        assert!(agent.unreserve(&eng, &two).is_none());
        // An unreserved ask takes unreserved first, then the role's reservation.
        let taken = r.take_for(&eng, &rr("cpus:3;mem:10")).expect("fits");
        assert_eq!(taken, rr("cpus:2;mem:10;cpus(eng):1"));
        assert!(r.take_for(&Role::star(), &rr("cpus:3")).is_none());
        assert!(
            r.take_for(&Role::parse("ops").expect("role"), &rr("cpus(eng):1"))
                .is_none()
        );
        assert!(r.take_for(&eng, &rr("cpus:5")).is_none());
    }
}
