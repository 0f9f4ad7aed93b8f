//! Fuzz check of the job file decoder (DESIGN.md "Bad input"; see
//! `docs/fuzzing.md`): any text is refused with a typed error or gives
//! jobs that satisfy every rule of `spec.rs`, store and read back the same,
//! and run through their state machine without panicking. The property
//! tests (`spec_fuzz_tests.rs`) and the coverage-guided target in `fuzz/`
//! call it; [`seeds`] gives valid files to start from.

use mezzo_sdk::{Resources, RetryPolicy, TaskState, WorkQueue, v1};
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::Instant;

use crate::job::{Job, Progress, task_id};
use crate::spec::{self, JobSpec, MAX_BACKOFF, MAX_COUNT, MAX_JOBS};

/// A job file, with one job `old` already submitted.
pub fn job_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let existing: BTreeSet<String> = ["old".to_owned()].into();
    let Ok(jobs) = spec::parse(&text, &existing) else {
        return;
    };
    assert!(!jobs.is_empty() && jobs.len() <= MAX_JOBS);
    let names: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names.len(), jobs.len(), "duplicate names");
    for job in &jobs {
        check_job(job, &names, &existing);
        run(job.clone());
    }
    check_acyclic(&jobs);
}

fn check_job(job: &JobSpec, names: &BTreeSet<&str>, existing: &BTreeSet<String>) {
    assert!(
        spec::valid_name(&job.name) && !existing.contains(&job.name),
        "{:?}",
        job.name
    );
    assert!(!job.command.trim().is_empty() && !job.command.contains('\0'));
    assert!((1..=MAX_COUNT).contains(&job.count));
    assert!(job.cpus.is_finite() && job.cpus > 0.0 && job.mem >= 1);
    let r = Resources::parse(&job.resources_text()).unwrap_or_else(|e| panic!("{e}"));
    mezzo_proto::fuzz::check_resources(&r);
    for (k, v) in &job.env {
        assert!(!k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0') && k != "MEZZO_TASK_INDEX");
    }
    assert!(job.retries <= 100);
    assert!(job.timeout.is_none_or(|t| !t.is_zero()));
    for d in &job.depends_on {
        assert!(
            names.contains(d.as_str()) || existing.contains(d),
            "unknown dependency {d}"
        );
    }
    for attempt in [0, 1, 2, 3, 17, 100, u32::MAX] {
        assert!(job.backoff_before(attempt) <= MAX_BACKOFF);
    }
    // Jobs are stored as JSON in the framework's key-value namespace.
    let json = serde_json::to_vec(job).unwrap_or_default();
    assert_eq!(
        serde_json::from_slice::<JobSpec>(&json).ok().as_ref(),
        Some(job),
        "the stored job reads back differently"
    );
}

/// Runs the job's first tasks through the work queue: each attempt run
/// and failed, with every retry, and their changes recorded.
fn run(spec: JobSpec) {
    let name = spec.name.clone();
    let retries = spec.retries;
    let mut job = Job::new(spec, Progress::default());
    let mut queue = WorkQueue::new("fuzz", RetryPolicy::default());
    let mut now = Instant::now();
    job.feed(&mut queue, 3);
    for index in 0..job.spec.count.min(3) {
        for _ in 0..=retries.min(5) {
            let id = task_id(&name, index, job.next_attempt(index), 1);
            if !job.adopt(&mut queue, index, &id, now) {
                break;
            }
            now += MAX_BACKOFF;
            let failed = v1::TaskStatus {
                task_id: id,
                state: TaskState::Failed.to_proto() as i32,
                exit_code: Some(1),
                ..Default::default()
            };
            if let Some(change) = queue.update(&failed, now) {
                job.record(index, &change);
            }
        }
    }
    let _ = job.snapshot();
    let _ = job.counts(&queue);
}

/// The dependencies within the file have a topological order.
fn check_acyclic(jobs: &[JobSpec]) {
    let mut left: BTreeMap<&str, BTreeSet<&str>> = jobs
        .iter()
        .map(|j| (j.name.as_str(), j.depends_on.iter().map(String::as_str).collect()))
        .collect();
    let local: BTreeSet<&str> = left.keys().copied().collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !local.contains(d) || !left.contains_key(d)))
            .map(|(n, _)| *n)
            .collect();
        assert!(!ready.is_empty(), "an accepted file has a dependency cycle: {left:?}");
        for n in ready {
            left.remove(n);
        }
    }
}

/// Valid job files, the start of the seeds and mutations.
pub const JOB_FILES: &[&str] = &[
    "[[job]]\nname = \"a\"\ncommand = \"true\"\n",
    r#"[[job]]
name = "fetch"
command = "curl -O x"

[[job]]
name = "render"
command = "render --frame $MEZZO_TASK_INDEX"
count = 100
cpus = 0.5
mem = 256
disk = 10
env = { QUALITY = "high" }
retries = 2
backoff = "2s"
timeout = "10m"
max_parallel = 20
depends_on = ["fetch", "old"]
"#,
    "[[job]]\nname = \"x_1\"\ncommand = \"sleep 1\"\ncount = 100000\ncpus = 0.001\nmem = 1\nretries = 100\nbackoff = \"1ms\"\ntimeout = \"1ns\"\n",
];

/// The fields of a `[[job]]` table.
pub const JOB_KEYS: &[&str] = &[
    "name",
    "command",
    "count",
    "cpus",
    "mem",
    "disk",
    "env",
    "retries",
    "backoff",
    "timeout",
    "max_parallel",
    "depends_on",
];

/// Valid inputs for each target of this crate: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    JOB_FILES
        .iter()
        .map(|f| ("batch_job_file", f.as_bytes().to_vec()))
        .collect()
}
