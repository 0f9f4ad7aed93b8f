//! Fuzz checks of this crate's decoders (DESIGN.md "Bad input"; see
//! `docs/fuzzing.md`): ids, and resources in their text, protobuf and
//! JSON forms.
//!
//! Each check takes arbitrary bytes as its decoder receives them,
//! decodes them, and panics if the decoder panics or if a value it
//! accepted breaks an invariant; a refusal is a typed error by the
//! decoder's signature. The property tests (`fuzz_tests.rs`) and the
//! coverage-guided targets in `fuzz/` both call these, and [`seeds`]
//! gives each target valid inputs to start from.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use prost::Message;

use crate::ids::{AgentId, FrameworkId, MAX_ID_LEN, OfferId, TaskId};
use crate::reservation::{ReservedResources, Role};
use crate::resources::{MAX_NAME_LEN, MAX_PORT, MAX_SCALAR, Resources};
use crate::v1;

/// Largest value in thousandths that a scalar may hold.
const MAX_MILLI: u64 = (MAX_SCALAR as u64) * 1000;

/// Ids: the four kinds agree, and an accepted id is one plain path
/// component (it names sandbox and checkpoint directories).
pub fn ids(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let accepted = [
        FrameworkId::parse(s).is_ok(),
        AgentId::parse(s).is_ok(),
        OfferId::parse(s).is_ok(),
        TaskId::parse(s).is_ok(),
    ];
    assert!(accepted.iter().all(|a| *a == accepted[0]), "id kinds disagree on {s:?}");
    // The JSON form is checked the same way.
    let json = serde_json::Value::String(s.to_owned());
    assert_eq!(
        serde_json::from_value::<AgentId>(json).is_ok(),
        accepted[0],
        "JSON id {s:?}"
    );
    if let Ok(id) = TaskId::parse(s) {
        check_id(&id);
    }
}

/// An accepted id: 1 to [`MAX_ID_LEN`] bytes, shown as given, and exactly
/// one normal path component.
pub fn check_id(id: &TaskId) {
    let s = id.as_str();
    assert!(!s.is_empty() && s.len() <= MAX_ID_LEN, "id length {}", s.len());
    assert_eq!(id.to_string(), s);
    let mut parts = Path::new(s).components();
    assert_eq!(
        parts.next(),
        Some(Component::Normal(s.as_ref())),
        "id {s:?} is not a plain path component"
    );
    assert!(parts.next().is_none(), "id {s:?} is more than one path component");
    let json = serde_json::to_string(id).unwrap_or_default();
    assert_eq!(serde_json::from_str::<TaskId>(&json).ok().as_ref(), Some(id));
}

/// The text forms: `Resources::parse` and `ReservedResources::parse`.
pub fn resources_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let plain = Resources::parse(&text);
    if let Ok(r) = &plain {
        check_resources(r);
    }
    if let Ok(rr) = ReservedResources::parse(&text) {
        check_reserved(&rr);
    }
    // Unreserved text means the same to both parsers.
    if let Ok(r) = plain {
        assert_eq!(
            ReservedResources::parse(&text).ok(),
            Some(ReservedResources::unreserved(r)),
            "{text:?}"
        );
    }
}

/// The protobuf form, as a `Reserve` operation's list arrives.
pub fn resources_proto(data: &[u8]) {
    let Ok(msg) = v1::Reserve::decode(data) else { return };
    if let Ok(r) = Resources::from_proto(&msg.resources) {
        check_resources(&r);
    }
    if let Ok(rr) = ReservedResources::from_proto(&msg.resources) {
        check_reserved(&rr);
    }
}

/// The JSON form that `/state` writes and its clients read.
pub fn resources_json(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<Resources>(data) {
        check_resources(&r);
        // Each key was one name, not more of the text form smuggled in.
        let keys = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(data).unwrap_or_default();
        keys.keys().for_each(|k| assert_name(k));
    }
    if let Ok(rr) = serde_json::from_slice::<ReservedResources>(data) {
        check_reserved(&rr);
    }
}

/// A resource name carries none of the text form's separators, so it
/// survives the text and JSON forms.
fn assert_name(name: &str) {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    assert!(
        !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(ok),
        "resource name {name:?} does not survive the text form"
    );
}

/// What any accepted [`Resources`] satisfies: finite, bounded values,
/// names that survive the text form, valid ports, and the same value back
/// through the text, protobuf and JSON forms.
pub fn check_resources(r: &Resources) {
    assert!(r.cpus.0 <= MAX_MILLI, "cpus {}", r.cpus.0);
    assert!(r.mem.0 <= MAX_SCALAR as u64 && r.disk.0 <= MAX_SCALAR as u64, "{r:?}");
    for (name, v) in &r.scalars {
        assert!(*v > 0 && *v <= MAX_MILLI, "{name}: {v}");
        assert!(
            !matches!(name.as_str(), "cpus" | "mem" | "disk" | "ports"),
            "{name} among the named scalars"
        );
        assert_name(name);
    }
    assert!(r.ports.iter().all(|p| *p.end() <= MAX_PORT), "{r:?}");
    let text = r.to_string();
    assert_eq!(Resources::parse(&text).as_ref(), Ok(r), "text form {text:?}");
    assert_eq!(Resources::from_proto(&r.to_proto()).as_ref(), Ok(r), "protobuf form");
    let json = serde_json::to_string(r).unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<Resources>(&json).ok().as_ref(),
        Some(r),
        "JSON form {json}"
    );
}

/// What any accepted [`ReservedResources`] satisfies: valid roles with
/// something reserved, valid parts, and the same value back through the
/// text, protobuf and JSON forms.
pub fn check_reserved(rr: &ReservedResources) {
    check_resources(&rr.unreserved);
    for (role, r) in &rr.reserved {
        assert!(!role.is_star(), "'*' among the reserved roles");
        assert_eq!(Role::parse(role.as_str()).as_ref(), Ok(role));
        assert!(!r.is_empty(), "empty part for role {role}");
        check_resources(r);
    }
    let text = rr.to_string();
    assert_eq!(ReservedResources::parse(&text).as_ref(), Ok(rr), "text form {text:?}");
    assert_eq!(
        ReservedResources::from_proto(&rr.to_proto()).as_ref(),
        Ok(rr),
        "protobuf form"
    );
    let json = serde_json::to_string(rr).unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<ReservedResources>(&json).ok().as_ref(),
        Some(rr),
        "JSON form {json}"
    );
}

/// Valid resource texts, the start of the resource seeds and mutations.
pub const RESOURCE_TEXTS: &[&str] = &[
    "cpus:1",
    "cpus:0.1;mem:32",
    "cpus:2;mem:1024;disk:4096;ports:[31000-31009,31020-31020];gpus:2",
    "cpus:4;mem:4096;cpus(eng):2;mem(eng):1024;ports(eng/web):[80-80]",
    "mem(a/b/c):1;fpga(ops):0.5;cpus(*):3;gpu/a100(ops):1",
    "cpus:1000000000000;mem:1000000000000;ports:[0-65535]",
    "cpus:0.001;net-bandwidth.mbps:0.125",
];

/// Grammar tokens of the resource text form, spliced in by mutations.
pub const RESOURCE_TOKENS: &[&str] = &[
    ";",
    ":",
    "(",
    ")",
    "[",
    "]",
    "-",
    ",",
    "*",
    "/",
    "cpus",
    "mem",
    "disk",
    "ports",
    "(eng)",
    "(*)",
    "0",
    "-1",
    "0.0005",
    "1e12",
    "1e308",
    "NaN",
    "inf",
    "18446744073709551615",
    "65536",
    " ",
    "\0",
    "é",
];

/// Valid inputs for each target of this crate: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for id in ["t-1", "job.3", "a:b@c_d", "..a", "0123456789abcdef0123456789abcdef"] {
        out.push(("ids", id.as_bytes().to_vec()));
    }
    for text in RESOURCE_TEXTS {
        out.push(("resources_text", text.as_bytes().to_vec()));
        if let Ok(rr) = ReservedResources::parse(text) {
            let msg = v1::Reserve {
                resources: rr.to_proto(),
            };
            out.push(("resources_proto", msg.encode_to_vec()));
            if let Ok(json) = serde_json::to_vec(&rr) {
                out.push(("resources_json", json));
            }
            if let Ok(json) = serde_json::to_vec(&rr.unreserved) {
                out.push(("resources_json", json));
            }
        }
    }
    out
}

/// Writes `seeds` under `$MEZZO_FUZZ_SEEDS/<target>/seed-<n>`, the
/// starting corpus `scripts/fuzz` hands to each target; without that
/// variable it does nothing. Every crate's `write_fuzz_seeds` test calls it.
pub fn write_seeds(seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    let Some(root) = std::env::var_os("MEZZO_FUZZ_SEEDS") else {
        return Ok(());
    };
    for (n, (target, input)) in seeds.iter().enumerate() {
        let dir = Path::new(&root).join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{n}")), input)?;
    }
    Ok(())
}
