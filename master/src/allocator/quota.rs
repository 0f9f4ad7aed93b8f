//! Quota: a guarantee (set aside for the role and offered to it first)
//! and a limit (never allocated beyond), over scalar resources only.
//!
//! The arithmetic here works kind by kind (cpus, mem, disk, named
//! scalars). A kind a limit does not name is unlimited; a kind a
//! guarantee does not name is not guaranteed.

use mezzo_proto::resources::{Mib, MilliCpus, Resources};
use serde::{Deserialize, Serialize};

/// Why a quota or weight was refused.
/// Largest weight a role may have.
pub const MAX_WEIGHT: f64 = 1e6;
/// Smallest weight a role may have: DRF divides a share (at most 1) by the
/// weight, and a tinier one (a subnormal such as 7.5e-310, found by
/// fuzzing) makes that infinite, which JSON cannot carry.
pub const MIN_WEIGHT: f64 = 1e-6;

/// A weight DRF can divide by: finite, between [`MIN_WEIGHT`] and
/// [`MAX_WEIGHT`].
pub fn valid_weight(w: f64) -> bool {
    w.is_finite() && (MIN_WEIGHT..=MAX_WEIGHT).contains(&w)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    #[error("quota for role {role}: {kind} guarantee {guarantee} is above its limit {limit}")]
    LimitBelowGuarantee {
        role: String,
        kind: String,
        guarantee: String,
        limit: String,
    },
    #[error("quota for role {role}: ports cannot have a quota; use cpus, mem, disk or a named scalar")]
    Ports { role: String },
    #[error("quota for role {role}: unknown resource {name:?}: no agent offers it (known: {known})")]
    UnknownResource { role: String, name: String, known: String },
    #[error("quota for role {role} sets neither a guarantee nor a limit")]
    Empty { role: String },
    #[error("weight of role {role} must be a finite number from 1e-6 to 1e6, got {weight}")]
    BadWeight { role: String, weight: f64 },
    #[error("role * cannot have a quota; set one on a named role")]
    StarQuota,
}

/// A role's quota. Both parts empty means no quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(with = "text")]
    pub guarantee: Resources,
    #[serde(with = "text")]
    pub limit: Resources,
}

/// Resources in their text form inside the registry's JSON.
mod text {
    use mezzo_proto::resources::Resources;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Resources, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&r.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Resources, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(Resources::default());
        }
        Resources::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Quota {
    pub fn is_empty(&self) -> bool {
        self.guarantee.is_empty() && self.limit.is_empty()
    }

    /// Checks a quota for `role`; `known` lists the named scalars some
    /// agent offers (cpus, mem and disk are always known).
    pub fn validate(&self, role: &str, known: &[String]) -> Result<(), QuotaError> {
        let role_s = role.to_owned();
        if role == "*" {
            return Err(QuotaError::StarQuota);
        }
        if self.is_empty() {
            return Err(QuotaError::Empty { role: role_s });
        }
        for r in [&self.guarantee, &self.limit] {
            if !r.ports.is_empty() {
                return Err(QuotaError::Ports { role: role_s });
            }
            for name in r.scalars.keys() {
                if !known.contains(name) {
                    let mut all = vec!["cpus".to_owned(), "mem".into(), "disk".into()];
                    all.extend(known.iter().cloned());
                    return Err(QuotaError::UnknownResource {
                        role: role_s,
                        name: name.clone(),
                        known: all.join(", "),
                    });
                }
            }
        }
        let l = &self.limit;
        let g = &self.guarantee;
        let check = |kind: &str, gv: u64, lv: u64, show: &dyn Fn(u64) -> String| {
            if lv > 0 && gv > lv {
                Err(QuotaError::LimitBelowGuarantee {
                    role: role.to_owned(),
                    kind: kind.to_owned(),
                    guarantee: show(gv),
                    limit: show(lv),
                })
            } else {
                Ok(())
            }
        };
        let milli = |v: u64| format!("{}", v as f64 / 1000.0);
        let whole = |v: u64| v.to_string();
        check("cpus", g.cpus.0, l.cpus.0, &milli)?;
        check("mem", g.mem.0, l.mem.0, &whole)?;
        check("disk", g.disk.0, l.disk.0, &whole)?;
        for (k, gv) in &g.scalars {
            check(k, *gv, l.scalars.get(k).copied().unwrap_or(0), &milli)?;
        }
        Ok(())
    }
}

/// Applies `f(a, b)` to each scalar kind that `a` or `b` holds.
fn zip(a: &Resources, b: &Resources, f: impl Fn(u64, u64) -> u64) -> Resources {
    let mut out = Resources {
        cpus: MilliCpus(f(a.cpus.0, b.cpus.0)),
        mem: Mib(f(a.mem.0, b.mem.0)),
        disk: Mib(f(a.disk.0, b.disk.0)),
        ..Default::default()
    };
    for k in a.scalars.keys().chain(b.scalars.keys()) {
        let v = f(
            a.scalars.get(k).copied().unwrap_or(0),
            b.scalars.get(k).copied().unwrap_or(0),
        );
        if v > 0 {
            out.scalars.insert(k.clone(), v);
        }
    }
    out
}

/// What `held` lacks of `guarantee`, kind by kind.
pub(crate) fn need(guarantee: &Resources, held: &Resources) -> Resources {
    zip(guarantee, held, |g, h| g.saturating_sub(h))
}

/// `a + b - c`, kind by kind, floored at zero.
pub(crate) fn add_sub(a: &Resources, b: &Resources, c: &Resources) -> Resources {
    let ab = zip(a, b, u64::saturating_add);
    zip(&ab, c, u64::saturating_sub)
}

/// True when `r` holds some of a kind that `mask` names.
pub(crate) fn overlaps(r: &Resources, mask: &Resources) -> bool {
    (r.cpus.0 > 0 && mask.cpus.0 > 0)
        || (r.mem.0 > 0 && mask.mem.0 > 0)
        || (r.disk.0 > 0 && mask.disk.0 > 0)
        || r.scalars
            .iter()
            .any(|(k, v)| *v > 0 && mask.scalars.get(k).is_some_and(|m| *m > 0))
}

/// A per-kind ceiling: kinds it names cap at their value, others do not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cap {
    pub at: Resources,
    /// Which kinds are capped (a cap of 0 is a real cap).
    pub named: Resources,
}

impl Cap {
    /// Limits `cap` further to `room` for the kinds that `named` names.
    pub fn tighten(&mut self, room: &Resources, named: &Resources) {
        let min_named = |cur: u64, cur_named: bool, r: u64, n: bool| match (n, cur_named) {
            (false, _) => cur,
            (true, true) => cur.min(r),
            (true, false) => r,
        };
        self.at.cpus.0 = min_named(self.at.cpus.0, self.named.cpus.0 > 0, room.cpus.0, named.cpus.0 > 0);
        self.at.mem.0 = min_named(self.at.mem.0, self.named.mem.0 > 0, room.mem.0, named.mem.0 > 0);
        self.at.disk.0 = min_named(self.at.disk.0, self.named.disk.0 > 0, room.disk.0, named.disk.0 > 0);
        for (k, n) in &named.scalars {
            if *n == 0 {
                continue;
            }
            let r = room.scalars.get(k).copied().unwrap_or(0);
            let cur_named = self.named.scalars.get(k).is_some_and(|v| *v > 0);
            let cur = self.at.scalars.get(k).copied().unwrap_or(0);
            self.at
                .scalars
                .insert(k.clone(), if cur_named { cur.min(r) } else { r });
        }
        self.named = zip(&self.named, named, |a, b| u64::from(a > 0 || b > 0));
    }

    /// Sets the cap of the kinds `named` names to `room`, whatever it was.
    pub fn set(&mut self, room: &Resources, named: &Resources) {
        if named.cpus.0 > 0 {
            self.at.cpus = room.cpus;
        }
        if named.mem.0 > 0 {
            self.at.mem = room.mem;
        }
        if named.disk.0 > 0 {
            self.at.disk = room.disk;
        }
        for (k, n) in &named.scalars {
            if *n > 0 {
                self.at
                    .scalars
                    .insert(k.clone(), room.scalars.get(k).copied().unwrap_or(0));
            }
        }
        self.named = zip(&self.named, named, |a, b| u64::from(a > 0 || b > 0));
    }

    /// `r` cut down to the cap (ports are never capped).
    pub fn apply(&self, r: &Resources) -> Resources {
        let cut = |v: u64, named: u64, at: u64| if named > 0 { v.min(at) } else { v };
        let mut out = r.clone();
        out.cpus.0 = cut(r.cpus.0, self.named.cpus.0, self.at.cpus.0);
        out.mem.0 = cut(r.mem.0, self.named.mem.0, self.at.mem.0);
        out.disk.0 = cut(r.disk.0, self.named.disk.0, self.at.disk.0);
        for (k, v) in out.scalars.iter_mut() {
            let named = self.named.scalars.get(k).copied().unwrap_or(0);
            *v = cut(*v, named, self.at.scalars.get(k).copied().unwrap_or(0));
        }
        out.scalars.retain(|_, v| *v > 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resources {
        Resources::parse(s).expect(s)
    }

    #[test]
    fn bad_quotas_are_refused() {
        let q = |g: &str, l: &str| Quota {
            guarantee: if g.is_empty() { Resources::default() } else { r(g) },
            limit: if l.is_empty() { Resources::default() } else { r(l) },
        };
        let known = vec!["gpus".to_owned()];
        for (quota, role, why) in [
            (q("cpus:4", "cpus:2"), "eng", "above its limit"),
            (q("", ""), "eng", "neither"),
            (q("ports:[1-2]", ""), "eng", "ports"),
            (q("fpgas:1", ""), "eng", "unknown resource"),
            (q("cpus:1", ""), "*", "role *"),
        ] {
            let e = quota.validate(role, &known).expect_err(why).to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(q("cpus:2;gpus:1", "cpus:4").validate("eng", &known).is_ok());
        assert!(q("", "mem:100").validate("eng", &known).is_ok());
    }

    #[test]
    fn caps_cut_only_named_kinds() {
        let mut c = Cap::default();
        c.tighten(&r("cpus:2"), &r("cpus:1"));
        assert_eq!(c.apply(&r("cpus:3;mem:100")), r("cpus:2;mem:100"));
        c.tighten(&r("cpus:1;mem:50"), &r("cpus:1;mem:1"));
        assert_eq!(c.apply(&r("cpus:3;mem:100")), r("cpus:1;mem:50"));
        assert_eq!(need(&r("cpus:2;mem:10"), &r("cpus:1;mem:20")), r("cpus:1"));
    }
}
