//! Property tests of registry ops and snapshots as they come out of the
//! log or off a peer (DESIGN.md "Durable state", "Bad input";
//! docs/fuzzing.md): `Registry::apply` of any decoded op never panics,
//! replay is deterministic, snapshots read back, and a leader recovers
//! from what they hold. The invariants are [`crate::fuzz`]'s, shared with
//! the coverage-guided targets in `fuzz/`.

use mezzo_proto::mutate::{config, crossover, id, mutated, mutated_text, role, scalar};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::fuzz::{self, seed};

/// Numbers at the JSON and f64 boundaries (no NaN: JSON has none).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(&[0, 1, u64::MAX, u64::MAX - 1, 1 << 53][..]).prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn resources_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["cpus:1;mem:128", "cpus(eng):1", "", "cpus:-1", "gpus:0.5", "x"][..])
            .prop_map(str::to_owned),
        mutated_text(
            Just("cpus:1;mem:64;ports:[31000-31001]".to_owned()),
            mezzo_proto::fuzz::RESOURCE_TOKENS
        ),
    ]
}

/// One op built from the structure: every kind, with ids, roles, numbers
/// and texts from the boundary pools.
fn op() -> impl Strategy<Value = Value> {
    let agent = (id(), resources_text(), number()).prop_map(|(id, resources, since)| {
        json!({"op": "admit_agent", "id": id, "hostname": "h", "http_address": "127.0.0.1:1",
               "resources": resources, "attributes": [], "unreachable_since": since})
    });
    let framework = (id(), prop::collection::vec(role(), 0..2), number()).prop_map(|(id, roles, f)| {
        json!({"op": "register_framework", "id": id, "name": "f", "user": "", "principal": "",
               "roles": roles, "failover_timeout_secs": f, "hostname": ""})
    });
    let kv = (
        prop::sample::select(&["kv_put", "kv_delete"][..]),
        id(),
        prop_oneof![Just("k".to_owned()), "\\PC{0,4}", Just("k".repeat(300))],
        prop_oneof![
            3 => Just(Value::Null),
            3 => Just(json!("aGVsbG8=")),
            1 => Just(json!("!!")),
        ],
        prop::option::of(0u64..20),
    )
        .prop_map(|(op, fw, key, value, expected)| {
            json!({"op": op, "framework": fw, "key": key, "value": value, "expected_version": expected, "request": 1})
        });
    prop_oneof![
        2 => agent,
        2 => framework,
        3 => kv,
        1 => (id(), number()).prop_map(|(id, at)| json!({"op": "mark_agent_unreachable", "id": id, "at": at})),
        1 => id().prop_map(|id| json!({"op": "remove_framework", "id": id})),
        1 => prop::collection::btree_map(role(), number(), 0..3).prop_map(|w| json!({"op": "set_weights", "weights": w})),
        1 => (role(), resources_text(), resources_text()).prop_map(|(role, g, l)| {
            json!({"op": "set_quota", "role": role, "quota": {"guarantee": g, "limit": l}})
        }),
        2 => (prop::sample::select(&["reserve", "unreserve"][..]), id(), role(), resources_text()).prop_map(|(op, agent, role, r)| {
            json!({"op": op, "agent": agent, "role": role, "resources": r, "principal": "p"})
        }),
        1 => (id(), number(), number()).prop_map(|(id, deadline, at)| json!({"op": "drain_agent", "id": id, "deadline": deadline, "at": at})),
        1 => id().prop_map(|id| json!({"op": "reactivate_agent", "id": id})),
        1 => (id(), number()).prop_map(|(id, at)| json!({"op": "mark_agent_gone", "id": id, "at": at})),
    ]
}

fn ops() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(op(), 1..12).prop_map(|ops| {
        let lines: Vec<String> = ops.iter().map(Value::to_string).collect();
        lines.join("\n").into_bytes()
    })
}

/// A snapshot: the registry built by some ops, with any of its fields
/// replaced by a boundary value (a namespace's byte count that does not
/// match its entries, a weight of zero...).
fn snapshot() -> impl Strategy<Value = Vec<u8>> {
    let field = prop::sample::select(
        &[
            "applied",
            "highest_master_id",
            "weights",
            "kv",
            "reservations",
            "gone",
            "masters",
        ][..],
    );
    (seed("registry_snapshot"), prop::option::of((field, number()))).prop_map(|(seed, change)| {
        let mut v: Value = serde_json::from_slice(&seed).unwrap_or_default();
        if let (Some((field, n)), Some(obj)) = (change, v.as_object_mut()) {
            let replacement = match field {
                "weights" => json!({"eng": n}),
                "kv" => json!({"f1": {"entries": {"k": {"value": "dg==", "version": 1}}, "bytes": n}}),
                "reservations" => json!({"a1": "cpus(eng):1;mem(*):5"}),
                "gone" => json!({"a1": n}),
                "masters" => json!({"0": "x", "18446744073709551615": ""}),
                _ => n,
            };
            obj.insert(field.to_owned(), replacement);
        }
        serde_json::to_vec(&v).unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn registry_ops_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::registry_ops(&bytes);
        fuzz::registry_snapshot(&bytes);
    }

    #[test]
    fn registry_ops_from_generated_ops(bytes in ops()) {
        fuzz::registry_ops(&bytes);
    }

    #[test]
    fn registry_ops_from_mutated_ops(bytes in mutated(prop_oneof![seed("registry_ops"), ops()])) {
        fuzz::registry_ops(&bytes);
    }

    #[test]
    fn registry_ops_from_spliced_ops(bytes in crossover(ops(), seed("registry_ops"))) {
        fuzz::registry_ops(&bytes);
    }

    #[test]
    fn registry_snapshot_from_generated_snapshots(bytes in snapshot()) {
        fuzz::registry_snapshot(&bytes);
    }

    #[test]
    fn registry_snapshot_from_mutated_snapshots(bytes in mutated(snapshot())) {
        fuzz::registry_snapshot(&bytes);
    }
}
