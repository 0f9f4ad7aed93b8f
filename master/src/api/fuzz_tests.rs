//! Property tests of the API edge over arbitrary and mutated input
//! (DESIGN.md "Bad input"; docs/fuzzing.md): an agent's stream (its
//! `Register`/`Reregister`, then status updates and usage) and sessions of
//! scheduler calls. The invariants are the checks in [`crate::fuzz`],
//! shared with the coverage-guided targets in `fuzz/`; accepted values run
//! on a real core.

use mezzo_proto::mutate::{config, crossover, id, mutated, resources};
use mezzo_proto::v1;
use proptest::prelude::*;
use prost::Message;

use crate::fuzz::{self, encode_call, seed};

fn text(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(pool).prop_map(str::to_owned), 1 => "\\PC{0,12}"]
}

fn state() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..=13, 1 => any::<i32>()]
}

fn agent_info() -> impl Strategy<Value = Option<v1::AgentInfo>> {
    let hostname = prop_oneof![text(&["h1", "", " ", "a\0b"]), Just("h".repeat(256))];
    let address = text(&[
        "127.0.0.1:5051",
        "[::1]:5051",
        "agent-1.example:5051",
        "",
        "host",
        "host:99999",
        "evil@host:1",
        "host:1/x?",
        "h:1#",
        "h :1",
    ]);
    let attributes = prop::collection::vec(
        (text(&["rack", ""]), text(&["r1", ""])).prop_map(|(name, value)| v1::Attribute { name, value }),
        0..3,
    );
    prop::option::weighted(
        0.9,
        (hostname, resources(), attributes, address).prop_map(|(hostname, resources, attributes, http_address)| {
            v1::AgentInfo {
                hostname,
                resources,
                attributes,
                http_address,
            }
        }),
    )
}

fn task_info() -> impl Strategy<Value = v1::TaskInfo> {
    let command = prop::option::weighted(
        0.9,
        (
            text(&["sleep 1", "", "  ", "a\0"]),
            prop::collection::vec(text(&["-c", "x\0"]), 0..2),
            prop::collection::vec(
                (
                    text(&["A", "", "B=C", "D\0"]),
                    text(&["1", "\0"]),
                    text(&["", "db", "a b"]),
                )
                    .prop_map(|(name, value, secret)| v1::EnvVar { name, value, secret }),
                0..2,
            ),
            prop::collection::vec(
                (
                    text(&[
                        "http://127.0.0.1:1/a.tar.gz",
                        "/srv/x",
                        "ftp://h/x",
                        "file:///a/../b",
                        "x\0",
                    ]),
                    any::<(bool, bool, bool)>(),
                    text(&["", "out/x", "../x", "/abs"]),
                    text(&[
                        "",
                        "abc",
                        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    ]),
                )
                    .prop_map(|(value, (executable, extract, cache), output_file, sha256)| {
                        v1::CommandUri {
                            value,
                            executable,
                            extract,
                            cache,
                            output_file,
                            sha256,
                        }
                    }),
                0..3,
            ),
        )
            .prop_map(|(value, arguments, environment, uris)| v1::CommandInfo {
                value,
                arguments,
                environment,
                shell: true,
                user: String::new(),
                secret_files: Vec::new(),
                uris,
            }),
    );
    let grace = prop::option::of(prop_oneof![0u64..10_000, Just(3_600_001), any::<u64>()]);
    (id(), text(&["", "n"]), resources(), command, grace, text(&["", "a1"])).prop_map(
        |(task_id, name, resources, command, kill_grace_period_ms, agent_id)| v1::TaskInfo {
            task_id,
            name,
            resources,
            command,
            kill_grace_period_ms,
            agent_id,
            ..Default::default()
        },
    )
}

/// A register or reregister, then up to four messages of the stream.
fn agent_stream() -> impl Strategy<Value = Vec<u8>> {
    let reported_status = (
        state(),
        0i32..40,
        text(&["exited", "", "x\0"]),
        prop_oneof![Just(f64::NAN), Just(-1.0), 0.0..2e9],
    )
        .prop_map(|(state, reason, message, timestamp)| v1::TaskStatus {
            state,
            reason,
            message,
            timestamp,
            exit_code: Some(reason - 1),
            ..Default::default()
        });
    let launched_at = prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), 0.0..2e9];
    let running = (
        prop::option::weighted(0.9, task_info()),
        id(),
        state(),
        any::<bool>(),
        launched_at,
        prop::collection::vec(reported_status, 0..20),
    )
        .prop_map(
            |(task, framework_id, state, end_unacknowledged, launched_at, statuses)| v1::RunningTask {
                task,
                framework_id,
                state,
                end_unacknowledged,
                launched_at,
                statuses,
            },
        );
    use v1::agent_message::Message as M;
    let first = prop_oneof![
        (agent_info(), "[a-z0-9-]{0,70}|.{0,3}")
            .prop_map(|(agent, registration)| Some(M::Register(v1::Register { agent, registration }))),
        (id(), agent_info(), prop::collection::vec(running, 0..4)).prop_map(|(agent_id, agent, tasks)| Some(
            M::Reregister(v1::Reregister {
                agent_id,
                agent,
                tasks,
                tasks_complete: false,
                executors: Vec::new(),
            })
        )),
        Just(Some(M::Heartbeat(v1::AgentHeartbeat {}))),
        Just(None),
    ];
    let status =
        (id(), state(), prop::collection::vec(any::<u8>(), 0..17)).prop_map(|(task_id, state, uuid)| v1::TaskStatus {
            task_id,
            state,
            uuid,
            ..Default::default()
        });
    let usage =
        (id(), id(), prop_oneof![Just(f64::NAN), Just(-1.0), 0.0..1e6]).prop_map(|(f, t, cpu)| v1::ContainerUsage {
            framework_id: f,
            task_id: t,
            cpu_time_secs: cpu,
            ..Default::default()
        });
    let next = prop_oneof![
        (id(), prop::option::weighted(0.9, status), state()).prop_map(|(framework_id, status, latest_state)| {
            M::StatusUpdate(v1::StatusUpdate {
                framework_id,
                status,
                latest_state,
            })
        }),
        prop::collection::vec(usage, 0..3).prop_map(|containers| M::Usage(v1::UsageReport { containers })),
        Just(M::Heartbeat(v1::AgentHeartbeat {})),
    ];
    (first, prop::collection::vec(next, 0..4)).prop_map(|(first, rest)| {
        let mut out = v1::AgentMessage { message: first }.encode_length_delimited_to_vec();
        for m in rest {
            out.extend(v1::AgentMessage { message: Some(m) }.encode_length_delimited_to_vec());
        }
        out
    })
}

fn offer_ids() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof![3 => Just("o0".to_owned()), 1 => id()], 0..3)
}

fn refuse() -> impl Strategy<Value = Option<v1::Filters>> {
    let secs = prop_oneof![0.0..100.0, Just(f64::NAN), Just(-1.0), Just(1e300), any::<f64>()];
    prop::option::of(prop::option::of(secs).prop_map(|refuse_seconds| v1::Filters { refuse_seconds }))
}

/// One call of a session, encoded as `fuzz::scheduler_calls` reads it.
fn call() -> impl Strategy<Value = Vec<u8>> {
    use v1::operation::Operation as Op;
    let operation = prop_oneof![
        3 => (prop::collection::vec(task_info(), 0..3), any::<bool>())
            .prop_map(|(tasks, group)| Some(Op::Launch(v1::Launch { tasks, group }))),
        1 => resources().prop_map(|resources| Some(Op::Reserve(v1::Reserve { resources }))),
        1 => resources().prop_map(|resources| Some(Op::Unreserve(v1::Unreserve { resources }))),
        1 => Just(None),
    ]
    .prop_map(|operation| v1::Operation { operation });
    let ack = || {
        (id(), id(), prop::collection::vec(any::<u8>(), 0..17)).prop_map(|(agent_id, task_id, uuid)| {
            v1::Acknowledgement {
                agent_id,
                task_id,
                uuid,
            }
        })
    };
    let key = prop_oneof![text(&["jobs/a", "", "a\nb"]), Just("k".repeat(257))];
    let framework = prop::option::weighted(
        0.9,
        (
            text(&["g", "", " "]),
            prop::collection::vec(text(&["eng", "*", "a b"]), 0..2),
            prop_oneof![0.0..100.0, Just(f64::NAN), Just(-1.0), Just(1e30)],
        )
            .prop_map(|(name, roles, failover_timeout_secs)| v1::FrameworkInfo {
                name,
                roles,
                failover_timeout_secs,
                ..Default::default()
            }),
    );
    prop_oneof![
        4 => (offer_ids(), prop::collection::vec(operation, 0..3), refuse()).prop_map(|(offer_ids, operations, filters)| {
            encode_call("accept", &v1::AcceptRequest { offer_ids, operations, filters, ..Default::default() })
        }),
        1 => (offer_ids(), refuse()).prop_map(|(offer_ids, filters)| {
            encode_call("decline", &v1::DeclineRequest { offer_ids, filters, ..Default::default() })
        }),
        1 => (id(), prop::option::of(prop_oneof![0u64..10_000, Just(3_600_001)])).prop_map(|(task_id, kill_grace_period_ms)| {
            encode_call("kill", &v1::KillRequest { task_id, kill_grace_period_ms, ..Default::default() })
        }),
        2 => (ack().prop_map(Some), prop::collection::vec(ack(), 0..3)).prop_map(|(one, acks)| {
            let one = one.unwrap_or_default();
            encode_call("acknowledge", &v1::AcknowledgeRequest {
                agent_id: one.agent_id, task_id: one.task_id, uuid: one.uuid, acks, ..Default::default()
            })
        }),
        1 => prop::collection::vec((id(), prop_oneof![Just(String::new()), id()]), 0..3).prop_map(|tasks| {
            let tasks = tasks.into_iter().map(|(task_id, agent_id)| v1::ReconcileTask { task_id, agent_id }).collect();
            encode_call("reconcile", &v1::ReconcileRequest { tasks, ..Default::default() })
        }),
        1 => (framework, prop_oneof![Just(String::new()), id()], prop::collection::vec(prop_oneof![Just("*".to_owned()), id()], 0..2)).prop_map(|(framework, framework_id, suppressed_roles)| {
            encode_call("subscribe", &v1::SubscribeRequest { framework, framework_id, suppressed_roles })
        }),
        1 => (key, prop::collection::vec(any::<u8>(), 0..8), prop::option::of(0u64..20)).prop_map(|(key, value, expected_version)| {
            encode_call("kv_put", &v1::KvPutRequest { key, value, expected_version, ..Default::default() })
        }),
        1 => prop::collection::vec((id(), resources()), 0..3).prop_map(|tasks| {
            let tasks = tasks.into_iter().map(|(task_id, resources)| v1::PendingTask { task_id, resources, reason: "r".into(), priority: 0 }).collect();
            encode_call("report_pending", &v1::ReportPendingRequest { tasks, ..Default::default() })
        }),
        2 => (id(), id(), state(), prop::sample::select(&[7u8, 8][..])).prop_map(|(framework_id, task_id, state, uuid)| {
            let status = v1::TaskStatus { task_id, state, uuid: vec![uuid; 16], ..Default::default() };
            encode_call("agent_update", &v1::StatusUpdate { framework_id, status: Some(status), latest_state: state })
        }),
        1 => (0u8..15).prop_map(|kind| vec![kind, 0]),
    ]
}

fn session() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(call(), 1..8).prop_map(|calls| calls.concat())
}

proptest! {
    #![proptest_config(config(192))]

    #[test]
    fn agent_stream_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::agent_stream(&bytes);
    }

    /// Built from the structure: every field the edge checks, valid or
    /// not, in any combination.
    #[test]
    fn agent_stream_from_generated_messages(bytes in agent_stream()) {
        fuzz::agent_stream(&bytes);
    }

    #[test]
    fn agent_stream_from_mutated_messages(bytes in mutated(prop_oneof![seed("agent_stream"), agent_stream()])) {
        fuzz::agent_stream(&bytes);
    }

    #[test]
    fn scheduler_calls_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::scheduler_calls(&bytes);
    }

    #[test]
    fn scheduler_calls_from_generated_sessions(bytes in session()) {
        fuzz::scheduler_calls(&bytes);
    }

    #[test]
    fn scheduler_calls_from_mutated_sessions(bytes in mutated(prop_oneof![seed("scheduler_calls"), session()])) {
        fuzz::scheduler_calls(&bytes);
    }

    #[test]
    fn scheduler_calls_from_spliced_sessions(bytes in crossover(session(), seed("scheduler_calls"))) {
        fuzz::scheduler_calls(&bytes);
    }
}

/// Writes this crate's seeds for `scripts/fuzz` (see
/// `mezzo_proto::fuzz::write_seeds`), after checking that each passes.
#[test]
fn write_fuzz_seeds() -> std::io::Result<()> {
    let seeds = fuzz::seeds();
    for (target, input) in &seeds {
        match *target {
            "raft_batch" => fuzz::raft_batch(input),
            "agent_stream" => fuzz::agent_stream(input),
            "scheduler_calls" => fuzz::scheduler_calls(input),
            "registry_ops" => fuzz::registry_ops(input),
            _ => fuzz::registry_snapshot(input),
        }
    }
    mezzo_proto::fuzz::write_seeds(&seeds)
}
