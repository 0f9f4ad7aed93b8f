//! The task history's costs (issue 16): the memory a full history holds on
//! every master, its size in a registry snapshot, applying one second's
//! batch of task ends, and encoding it for a snapshot.
//!
//! `cargo bench -p mezzo-master --bench history` (add `-- apply` for one).
//! The shape: the default bounds (1000 tasks per framework, 50 removed
//! frameworks) filled, with 50 registered frameworks as well.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mezzo_master::history::TaskRecord;
use mezzo_master::registry::{FrameworkRecord, Registry, RegistryOp};
use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::Role;
use mezzo_proto::resources::Resources;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const FRAMEWORKS: usize = 50;
const TASKS: usize = 1000;

fn framework(i: usize) -> FrameworkRecord {
    FrameworkRecord {
        id: FrameworkId::parse(&format!("1b4e28ba-2fa1-11d2-883f-{i:012}")).expect("id"),
        name: format!("batch-{i}"),
        user: "nobody".into(),
        principal: "user:alice".into(),
        roles: vec!["eng".into()],
        failover_timeout_secs: 60.0,
        hostname: "host".into(),
        registered_at: 0.0,
    }
}

/// A task end as a batch job's task would leave it.
fn end(fid: &FrameworkId, i: usize) -> TaskRecord {
    TaskRecord {
        id: TaskId::parse(&format!("job-7.{i}.1.0")).expect("id"),
        framework_id: fid.clone(),
        name: format!("job-7[{i}]"),
        agent_id: AgentId::parse("9f8e7d6c-5b4a-4321-8765-0123456789ab-S3").expect("id"),
        role: Role::parse("eng").expect("role"),
        resources: Resources::parse("cpus:1;mem:512").expect("resources"),
        state: "TASK_FINISHED".into(),
        reason: "REASON_COMMAND_EXITED".into(),
        message: "Command exited with status 0".into(),
        exit_code: Some(0),
        launched_at: 1_796_000_000.25,
        ended_at: 1_796_000_010.5,
    }
}

/// 50 frameworks removed and 50 registered, each with 1000 task ends.
fn full() -> Registry {
    let mut r = Registry::default();
    for i in 0..2 * FRAMEWORKS {
        let f = framework(i);
        let records = (0..TASKS).map(|t| end(&f.id, t)).collect();
        r.apply(&RegistryOp::RegisterFramework(f.clone()));
        r.apply(&RegistryOp::RecordTaskEnds { records });
        if i < FRAMEWORKS {
            r.apply(&RegistryOp::RemoveFramework { id: f.id, at: 1.0 });
        }
    }
    r
}

fn bench(c: &mut Criterion) {
    let before = counting::live();
    let registry = full();
    let heap = counting::live() - before;
    let json = serde_json::to_vec(&registry).expect("json").len();
    let h = &registry.history;
    println!(
        "memory: {} task records of {} frameworks ({} removed): {:.1} MiB of heap, {:.1} MiB of snapshot JSON, {:.1} MiB estimated (mezzo_master_history_bytes); {:.0} bytes of heap a record",
        h.task_count(),
        h.tasks.len(),
        h.removed.len(),
        heap as f64 / 1048576.0,
        json as f64 / 1048576.0,
        h.approx_bytes() as f64 / 1048576.0,
        heap as f64 / h.task_count() as f64,
    );

    // One second at 1,000 tasks/s: a batch of 1,000 ends into a full history.
    let registered = framework(FRAMEWORKS).id;
    let batch = RegistryOp::RecordTaskEnds {
        records: (0..TASKS).map(|t| end(&registered, TASKS + t)).collect(),
    };
    println!(
        "log: one second's batch at 1,000 tasks/s is {:.0} KiB of log entry",
        serde_json::to_vec(&batch).expect("json").len() as f64 / 1024.0
    );
    c.bench_function("history/apply 1000 ends to a full history", |b| {
        b.iter_batched_ref(
            || registry.clone(),
            |r| r.apply(black_box(&batch)),
            BatchSize::LargeInput,
        )
    });
    c.bench_function("history/snapshot encode (full history)", |b| {
        b.iter(|| serde_json::to_vec(black_box(&registry)).expect("json").len())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
