//! Resources with exact arithmetic (DESIGN.md "Resources").
//!
//! Scalars are fixed-point with three decimals, held as integers, so that
//! adding and subtracting thousands of task allocations never drifts the
//! way accumulated floats do. `mem` and `disk` are whole MiB.
//!
//! ```
//! use mezzo_proto::resources::Resources;
//! let agent = Resources::parse("cpus:2;mem:1024;ports:[31000-31009]").unwrap();
//! let task = Resources::parse("cpus:0.1;mem:32;ports:[31000-31000]").unwrap();
//! let left = agent.checked_sub(&task).unwrap();
//! assert_eq!(left.to_string(), "cpus:1.9;mem:992;ports:[31001-31009]");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use rangemap::RangeInclusiveSet;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::v1;

/// Largest value of any one scalar resource (a petabyte of MiB is far
/// beyond any machine), so that sums of many of them cannot overflow.
pub const MAX_SCALAR: f64 = 1e12;
/// Largest port number.
pub const MAX_PORT: u64 = 65535;
/// Longest resource name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a resource description was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource has an empty name")]
    EmptyName,
    #[error(
        "resource name {name:?} must be at most {MAX_NAME_LEN} letters, digits, '-', '_', '.' or '/' (a reservation, name(role), is not accepted here)"
    )]
    BadName { name: String },
    #[error("resource {name}: value {value} is not a finite number")]
    NotFinite { name: String, value: f64 },
    #[error("resource {name}: value {value} is negative")]
    Negative { name: String, value: f64 },
    #[error("resource {name}: value must be greater than zero")]
    Zero { name: String },
    #[error("resource {name}: value {value} exceeds the maximum {MAX_SCALAR}")]
    TooLarge { name: String, value: f64 },
    #[error("resource {name}: value {value} is finer than 0.001")]
    TooFine { name: String, value: f64 },
    #[error("resource {name}: value {value} must be a whole number of MiB")]
    Fractional { name: String, value: f64 },
    #[error("resource {name} is given twice")]
    Duplicate { name: String },
    #[error("resource ports: range [{begin}-{end}] is empty, reversed or beyond {MAX_PORT}")]
    BadRange { begin: u64, end: u64 },
    #[error("resource ports: ranges overlap at [{begin}-{end}]")]
    OverlappingRanges { begin: u64, end: u64 },
    #[error("resource ports must be given as ranges, not as a scalar")]
    PortsAsScalar,
    #[error("resource {name} must be a scalar, not ranges")]
    RangesOnScalar { name: String },
    #[error("resource {name}: reserved for role {role:?}, but only unreserved resources are accepted here")]
    Reserved { name: String, role: String },
    #[error("cannot parse resources {text:?}: {why}")]
    Syntax { text: String, why: String },
}

/// Milli-cpus: 1000 = one cpu.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliCpus(pub u64);

/// Mebibytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mib(pub u64);

/// A set of resources on one agent, or asked for by one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpus: MilliCpus,
    pub mem: Mib,
    pub disk: Mib,
    pub ports: RangeInclusiveSet<u64>,
    /// Other named scalars (e.g. `gpus`), in thousandths.
    pub scalars: BTreeMap<String, u64>,
}

/// A name the text and JSON forms carry unchanged: none of their
/// separators (`;`, `:`, `(`, `[`, `,`...), no spaces, bounded.
fn check_name(name: &str) -> Result<(), ResourceError> {
    if name.is_empty() {
        return Err(ResourceError::EmptyName);
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if name.len() > MAX_NAME_LEN || !name.chars().all(ok) {
        return Err(ResourceError::BadName {
            name: name.chars().take(64).collect(),
        });
    }
    Ok(())
}

fn to_milli(name: &str, value: f64) -> Result<u64, ResourceError> {
    let name = name.to_owned();
    if !value.is_finite() {
        return Err(ResourceError::NotFinite { name, value });
    }
    if value < 0.0 {
        return Err(ResourceError::Negative { name, value });
    }
    if value == 0.0 {
        return Err(ResourceError::Zero { name });
    }
    if value > MAX_SCALAR {
        return Err(ResourceError::TooLarge { name, value });
    }
    let milli = (value * 1000.0).round();
    // Within float error of a whole number of thousandths (the decimal
    // text of one is not exact in binary); anything further is finer.
    if milli == 0.0 || ((value * 1000.0) - milli).abs() > 2.0 * f64::EPSILON * milli {
        return Err(ResourceError::TooFine { name, value });
    }
    Ok(milli as u64)
}

fn to_whole(name: &str, value: f64) -> Result<u64, ResourceError> {
    let milli = to_milli(name, value)?;
    if milli % 1000 != 0 {
        return Err(ResourceError::Fractional {
            name: name.to_owned(),
            value,
        });
    }
    Ok(milli / 1000)
}

fn milli_to_f64(m: u64) -> f64 {
    m as f64 / 1000.0
}

impl Resources {
    /// True when nothing at all is held.
    pub fn is_empty(&self) -> bool {
        self.cpus.0 == 0
            && self.mem.0 == 0
            && self.disk.0 == 0
            && self.ports.is_empty()
            && self.scalars.values().all(|v| *v == 0)
    }

    /// Converts and validates API resources. Every entry must be positive
    /// and finite; names may not repeat; ports must be valid ranges.
    pub fn from_proto(list: &[v1::Resource]) -> Result<Resources, ResourceError> {
        let mut r = Resources::default();
        let mut seen = std::collections::BTreeSet::<&str>::new();
        for res in list {
            let name = res.name.trim();
            check_name(name)?;
            if !(res.role.is_empty() || res.role == "*") {
                return Err(ResourceError::Reserved {
                    name: name.to_owned(),
                    role: res.role.clone(),
                });
            }
            if !seen.insert(name) {
                return Err(ResourceError::Duplicate { name: name.to_owned() });
            }
            if name == "ports" {
                if res.scalar != 0.0 {
                    return Err(ResourceError::PortsAsScalar);
                }
                for range in &res.ranges {
                    if range.begin > range.end || range.end > MAX_PORT {
                        return Err(ResourceError::BadRange {
                            begin: range.begin,
                            end: range.end,
                        });
                    }
                    if r.ports.overlaps(&(range.begin..=range.end)) {
                        return Err(ResourceError::OverlappingRanges {
                            begin: range.begin,
                            end: range.end,
                        });
                    }
                    r.ports.insert(range.begin..=range.end);
                }
                if r.ports.is_empty() {
                    return Err(ResourceError::Zero { name: "ports".into() });
                }
                continue;
            }
            if !res.ranges.is_empty() {
                return Err(ResourceError::RangesOnScalar { name: name.to_owned() });
            }
            match name {
                "cpus" => r.cpus = MilliCpus(to_milli(name, res.scalar)?),
                "mem" => r.mem = Mib(to_whole(name, res.scalar)?),
                "disk" => r.disk = Mib(to_whole(name, res.scalar)?),
                other => {
                    r.scalars.insert(other.to_owned(), to_milli(other, res.scalar)?);
                }
            }
        }
        Ok(r)
    }

    /// The API form; zero-valued entries are left out.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        let scalar = |name: &str, v: f64| v1::Resource {
            name: name.to_owned(),
            scalar: v,
            ..Default::default()
        };
        let mut out = Vec::new();
        if self.cpus.0 > 0 {
            out.push(scalar("cpus", milli_to_f64(self.cpus.0)));
        }
        if self.mem.0 > 0 {
            out.push(scalar("mem", self.mem.0 as f64));
        }
        if self.disk.0 > 0 {
            out.push(scalar("disk", self.disk.0 as f64));
        }
        if !self.ports.is_empty() {
            out.push(v1::Resource {
                name: "ports".into(),
                ranges: self
                    .ports
                    .iter()
                    .map(|r| v1::Range {
                        begin: *r.start(),
                        end: *r.end(),
                    })
                    .collect(),
                ..Default::default()
            });
        }
        for (name, v) in &self.scalars {
            if *v > 0 {
                out.push(scalar(name, milli_to_f64(*v)));
            }
        }
        out
    }

    /// Parses the text form `name:value;...`, with ports as
    /// `ports:[31000-31010,31020-31020]`, as used by flags.
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let syntax = |why: &str| ResourceError::Syntax {
            text: text.to_owned(),
            why: why.to_owned(),
        };
        let mut list = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once(':').ok_or_else(|| syntax("expected name:value"))?;
            let (name, value) = (name.trim(), value.trim());
            if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                let mut ranges = Vec::new();
                for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let (b, e) = r.split_once('-').unwrap_or((r, r));
                    let b = b.trim().parse().map_err(|_| syntax("bad range start"))?;
                    let e = e.trim().parse().map_err(|_| syntax("bad range end"))?;
                    ranges.push(v1::Range { begin: b, end: e });
                }
                list.push(v1::Resource {
                    name: name.to_owned(),
                    ranges,
                    ..Default::default()
                });
            } else {
                let scalar: f64 = value.parse().map_err(|_| syntax("bad number"))?;
                list.push(v1::Resource {
                    name: name.to_owned(),
                    scalar,
                    ..Default::default()
                });
            }
        }
        Resources::from_proto(&list)
    }

    /// True when every part of `other` is also in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.disk >= other.disk
            && other.ports.iter().all(|r| self.ports.gaps(r).next().is_none())
            && other
                .scalars
                .iter()
                .all(|(k, v)| self.scalars.get(k).copied().unwrap_or(0) >= *v)
    }

    /// `self - other`, or `None` when `other` is not contained in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        self.contains(other).then(|| self.saturating_sub(other))
    }

    /// `self - other`, each part floored at zero. For bookkeeping where a
    /// mismatch must not wipe out the rest of the count (as a failed
    /// `checked_sub` defaulting to empty would).
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.cpus.0 = r.cpus.0.saturating_sub(other.cpus.0);
        r.mem.0 = r.mem.0.saturating_sub(other.mem.0);
        r.disk.0 = r.disk.0.saturating_sub(other.disk.0);
        for range in other.ports.iter() {
            r.ports.remove(range.clone());
        }
        for (k, v) in &other.scalars {
            if let Some(mine) = r.scalars.get_mut(k) {
                *mine = mine.saturating_sub(*v);
            }
        }
        r.scalars.retain(|_, v| *v > 0);
        r
    }

    /// Adds `other` into `self`. Values are capped far below overflow by
    /// [`MAX_SCALAR`], and sums saturate rather than wrap.
    pub fn add(&mut self, other: &Resources) {
        self.cpus.0 = self.cpus.0.saturating_add(other.cpus.0);
        self.mem.0 = self.mem.0.saturating_add(other.mem.0);
        self.disk.0 = self.disk.0.saturating_add(other.disk.0);
        for range in other.ports.iter() {
            self.ports.insert(range.clone());
        }
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    /// The largest fraction of `total` that `self` holds of any one kind
    /// (DRF's dominant share). Ports are not counted.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let frac = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
        let mut s = frac(self.cpus.0, total.cpus.0)
            .max(frac(self.mem.0, total.mem.0))
            .max(frac(self.disk.0, total.disk.0));
        for (k, v) in &self.scalars {
            s = s.max(frac(*v, total.scalars.get(k).copied().unwrap_or(0)));
        }
        s
    }

    /// Takes the first `count` ports from the set, if there are that many.
    pub fn take_ports(&self, count: usize) -> Option<RangeInclusiveSet<u64>> {
        let mut out = RangeInclusiveSet::new();
        let mut left = count as u64;
        for r in self.ports.iter() {
            if left == 0 {
                break;
            }
            let n = (r.end() - r.start() + 1).min(left);
            out.insert(*r.start()..=*r.start() + n - 1);
            left -= n;
        }
        (left == 0).then_some(out)
    }

    /// Number of ports held.
    pub fn port_count(&self) -> u64 {
        self.ports.iter().map(|r| r.end() - r.start() + 1).sum()
    }
}

fn fmt_ranges(ports: &RangeInclusiveSet<u64>) -> String {
    let parts: Vec<String> = ports
        .iter()
        .map(|r: &RangeInclusive<u64>| format!("{}-{}", r.start(), r.end()))
        .collect();
    format!("[{}]", parts.join(","))
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.cpus.0 > 0 {
            parts.push(format!("cpus:{}", milli_to_f64(self.cpus.0)));
        }
        if self.mem.0 > 0 {
            parts.push(format!("mem:{}", self.mem.0));
        }
        if self.disk.0 > 0 {
            parts.push(format!("disk:{}", self.disk.0));
        }
        if !self.ports.is_empty() {
            parts.push(format!("ports:{}", fmt_ranges(&self.ports)));
        }
        for (k, v) in &self.scalars {
            parts.push(format!("{k}:{}", milli_to_f64(*v)));
        }
        f.write_str(&parts.join(";"))
    }
}

/// JSON form for `/state`: `{"cpus": 1.5, "mem": 128, "disk": 0, "ports": "[31000-31009]"}`.
impl Serialize for Resources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("cpus", &milli_to_f64(self.cpus.0))?;
        m.serialize_entry("mem", &self.mem.0)?;
        m.serialize_entry("disk", &self.disk.0)?;
        m.serialize_entry("ports", &fmt_ranges(&self.ports))?;
        for (k, v) in &self.scalars {
            m.serialize_entry(k, &milli_to_f64(*v))?;
        }
        m.end()
    }
}

/// The inverse of the JSON form, so that clients of `/state` (frameworks,
/// the CLI) read resources with the same checks as the text form.
impl<'de> Deserialize<'de> for Resources {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Number(f64),
            Ranges(String),
        }
        let map = BTreeMap::<String, Value>::deserialize(d)?;
        // A key is one name, never more of the text form.
        for k in map.keys() {
            check_name(k).map_err(serde::de::Error::custom)?;
        }
        // The JSON form writes every kind, zero and empty ones too; the
        // text form leaves them out.
        let parts: Vec<String> = map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::Number(0.0) => None,
                Value::Ranges(r) if r.is_empty() || r == "[]" => None,
                Value::Number(n) => Some(format!("{k}:{n}")),
                Value::Ranges(r) => Some(format!("{k}:{r}")),
            })
            .collect();
        Resources::parse(&parts.join(";")).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `/state`'s JSON form reads back to the same resources; bad values
    /// are refused like bad text.
    #[test]
    fn json_form_round_trips() {
        let r = Resources::parse("cpus:1.5;mem:128;disk:10;ports:[31000-31009,31020-31020];gpus:2").expect("parse");
        let back: Resources = serde_json::from_value(serde_json::to_value(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
        let empty: Resources =
            serde_json::from_value(serde_json::to_value(Resources::default()).expect("ser")).expect("de");
        assert_eq!(empty, Resources::default());
        assert!(serde_json::from_str::<Resources>(r#"{"cpus": -1}"#).is_err());
        assert!(serde_json::from_str::<Resources>(r#"{"ports": "[9-1]"}"#).is_err());
    }

    fn scalar(name: &str, v: f64) -> v1::Resource {
        v1::Resource {
            name: name.into(),
            scalar: v,
            ..Default::default()
        }
    }

    /// DESIGN.md "Resources": negative, NaN, empty or overflowing values
    /// are refused with a clear error.
    #[test]
    fn bad_values_are_refused() {
        let cases: Vec<(Vec<v1::Resource>, &str)> = vec![
            (vec![scalar("cpus", -1.0)], "negative"),
            (vec![scalar("cpus", f64::NAN)], "not a finite"),
            (vec![scalar("cpus", f64::INFINITY)], "not a finite"),
            (vec![scalar("cpus", 0.0)], "greater than zero"),
            (vec![scalar("cpus", 1e13)], "exceeds"),
            (vec![scalar("cpus", 0.0001)], "finer"),
            (vec![scalar("mem", 1.5)], "whole number"),
            (vec![scalar("", 1.0)], "empty name"),
            (vec![scalar("cpus", 1.0), scalar("cpus", 1.0)], "twice"),
            (
                vec![v1::Resource {
                    name: "ports".into(),
                    ranges: vec![v1::Range { begin: 5, end: 4 }],
                    ..Default::default()
                }],
                "reversed",
            ),
            (
                vec![v1::Resource {
                    name: "ports".into(),
                    ranges: vec![v1::Range { begin: 5, end: 70000 }],
                    ..Default::default()
                }],
                "beyond",
            ),
            (
                vec![v1::Resource {
                    name: "ports".into(),
                    ranges: vec![v1::Range { begin: 5, end: 10 }, v1::Range { begin: 8, end: 12 }],
                    ..Default::default()
                }],
                "overlap",
            ),
            (
                vec![v1::Resource {
                    role: "eng".into(),
                    ..scalar("cpus", 1.0)
                }],
                "reserved",
            ),
        ];
        for (list, want) in cases {
            let err = Resources::from_proto(&list).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn parse_and_display_round_trip() {
        let r =
            Resources::parse("cpus:1.5; mem:256; disk:1024; ports:[31000-31002,31005-31005]; gpus:2").expect("parse");
        assert_eq!(r.cpus, MilliCpus(1500));
        assert_eq!(r.port_count(), 4);
        assert_eq!(Resources::parse(&r.to_string()), Ok(r.clone()));
        assert_eq!(Resources::from_proto(&r.to_proto()), Ok(r));
        assert!(Resources::parse("cpus=1").is_err());
    }

    /// Found by fuzzing (docs/fuzzing.md): a name holding the text form's
    /// separators (or a reservation given where only unreserved resources
    /// go) was taken as a named scalar whose text form did not parse back,
    /// so a reservation or quota stored as text changed or vanished.
    #[test]
    fn names_that_would_not_survive_the_text_form_are_refused() {
        for text in ["cpus(eng):2", "a(b:1", "x]:1", "g\u{e9}:1"] {
            let err = Resources::parse(text).expect_err(text);
            assert!(matches!(err, ResourceError::BadName { .. }), "{text}: {err}");
        }
        for name in ["a;b", "a:b", "a b", "x,y", &"n".repeat(MAX_NAME_LEN + 1)] {
            let err = Resources::from_proto(&[scalar(name, 1.0)]).expect_err(name);
            assert!(matches!(err, ResourceError::BadName { .. }), "{name:?}: {err}");
        }
        assert!(serde_json::from_str::<Resources>(r#"{"cpus:1;mem": 5}"#).is_err());
        let r = Resources::parse("gpu/a100:1;net-bandwidth.mbps:0.5").expect("valid names");
        assert_eq!(Resources::parse(&r.to_string()), Ok(r));
    }

    /// Found by fuzzing: the float tolerance grew with the value, so from
    /// 500 up a finer value was rounded instead of refused.
    #[test]
    fn finer_values_are_refused_at_any_magnitude() {
        for text in ["cpus:500.0004", "gpus:123456789.0001", "cpus:99999999999.9996"] {
            let err = Resources::parse(text).expect_err(text);
            assert!(matches!(err, ResourceError::TooFine { .. }), "{text}: {err}");
        }
        let r = Resources::parse("cpus:999999999999.999;gpus:0.001").expect("exact");
        assert_eq!(r.cpus, MilliCpus(999_999_999_999_999));
        assert_eq!(r.scalars.get("gpus"), Some(&1));
    }

    #[test]
    fn take_ports_picks_from_the_front() {
        let r = Resources::parse("ports:[10-11,20-25]").expect("parse");
        let p = r.take_ports(3).expect("3 ports");
        assert_eq!(fmt_ranges(&p), "[10-11,20-20]");
        assert!(r.take_ports(9).is_none());
    }

    fn arb() -> impl Strategy<Value = Resources> {
        (
            0u64..8000,
            0u64..4096,
            0u64..4096,
            proptest::collection::vec((1000u64..1100, 0u64..5), 0..4),
        )
            .prop_map(|(c, m, d, ranges)| {
                let mut r = Resources {
                    cpus: MilliCpus(c),
                    mem: Mib(m),
                    disk: Mib(d),
                    ..Default::default()
                };
                for (b, len) in ranges {
                    r.ports.insert(b..=b + len);
                }
                r
            })
    }

    proptest! {
        /// Adding then subtracting gives back exactly what we had: no drift.
        #[test]
        fn add_sub_is_exact(a in arb(), mut b in arb()) {
            // Ports are a set: only disjoint port sets add up.
            for r in a.ports.iter() { b.ports.remove(r.clone()); }
            let mut sum = a.clone();
            sum.add(&b);
            prop_assert!(sum.contains(&a) && sum.contains(&b));
            let back = sum.checked_sub(&b).expect("contained");
            prop_assert!(back.contains(&a));
            prop_assert_eq!(back.cpus, a.cpus);
            prop_assert_eq!(back.mem, a.mem);
        }

        #[test]
        fn saturating_sub_equals_checked_sub_when_contained(a in arb(), b in arb()) {
            if let Some(exact) = a.checked_sub(&b) {
                prop_assert_eq!(a.saturating_sub(&b), exact);
            }
        }

        #[test]
        fn sub_fails_iff_not_contained(a in arb(), b in arb()) {
            prop_assert_eq!(a.checked_sub(&b).is_some(), a.contains(&b));
        }

        /// A thousand tasks of 0.1 cpu add up to exactly 100 cpus.
        #[test]
        fn many_small_adds_do_not_drift(n in 1usize..2000) {
            let t = Resources::parse("cpus:0.1").expect("parse");
            let mut sum = Resources::default();
            for _ in 0..n { sum.add(&t); }
            prop_assert_eq!(sum.cpus, MilliCpus(100 * n as u64));
        }
    }
}
