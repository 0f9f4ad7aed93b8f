//! The job file: TOML with one `[[job]]` table per job.
//!
//! ```toml
//! [[job]]
//! name = "render"            # letters, digits, '-' and '_'
//! command = "render --frame $MEZZO_TASK_INDEX"
//! count = 100                # a task array: 100 copies, index 0..99
//! cpus = 0.5                 # per task (default 0.1)
//! mem = 256                  # MiB per task (default 32)
//! env = { QUALITY = "high" }
//! retries = 2                # extra attempts after a failure (default 0)
//! backoff = "2s"             # before the first retry; doubles, at most 1m
//! timeout = "10m"            # per attempt; a task over it is killed and fails
//! max_parallel = 20          # tasks of this job running at once (0: no limit)
//! on_lost = "requeue"        # a task lost after it may have started: run it
//!                            # again ("requeue", default) or fail the attempt ("fail")
//! depends_on = ["fetch"]     # runs once every listed job has succeeded
//! ```
//!
//! Unknown fields, wrong types and TOML syntax errors are reported by the
//! parser with their line and column; the checks after parsing name the
//! job and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Most tasks in one job array.
pub const MAX_COUNT: u32 = 100_000;
/// Most jobs in one file.
pub const MAX_JOBS: usize = 100;
/// Longest job name.
pub const MAX_NAME: usize = 64;
/// Longest backoff between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a job file was refused. Nothing of a refused file is submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// TOML syntax, an unknown field, or a wrong type (with line and column).
    #[error("job file: {0}")]
    Parse(String),
    /// A value out of range or malformed.
    #[error("job {job:?}: field `{field}`: {why}")]
    Field {
        /// The job's name (or `#N` when the name itself is bad).
        job: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The file holds no jobs, or too many.
    #[error("job file: {0}")]
    Shape(String),
    /// A name used twice, in the file or among submitted jobs.
    #[error("job {0:?} already exists; job names are unique")]
    Duplicate(String),
    /// A dependency on a job that does not exist.
    #[error("job {job:?}: field `depends_on`: unknown job {dep:?}")]
    UnknownDependency {
        /// The depending job.
        job: String,
        /// The missing job.
        dep: String,
    },
    /// The dependencies form a cycle.
    #[error("dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// One job as written in the file, after validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique name.
    pub name: String,
    /// Run by `/bin/sh -c`, with `MEZZO_TASK_INDEX` set.
    pub command: String,
    /// Copies (a task array); each is told its index in `MEZZO_TASK_INDEX`.
    #[serde(default = "one")]
    pub count: u32,
    /// Cpus per task.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory per task, MiB.
    #[serde(default = "default_mem")]
    pub mem: u64,
    /// Disk per task, MiB (0: none).
    #[serde(default)]
    pub disk: u64,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra attempts after a failed one.
    #[serde(default)]
    pub retries: u32,
    /// Pause before the first retry; doubles each time, at most [`MAX_BACKOFF`].
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Longest run of one attempt; `None` for no limit.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Most tasks of this job running at once; 0 for no limit.
    #[serde(default)]
    pub max_parallel: u32,
    /// Jobs that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Its tasks' priority (default 0): the master may preempt tasks of a
    /// lower priority, of roles above their share, for a task of this job
    /// that waits (docs/frameworks.md, "Priority and preemption").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// What a task lost after it may have started (LOST, GONE) does.
    #[serde(default)]
    pub on_lost: OnLost,
    /// Run each task in this OCI image (`HOST/PATH[:TAG]` or `oci:NAME[:TAG]`, docs/images.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull `image` with the credentials (`USER:PASSWORD`) in this secret
    /// of the framework's role (`mezzo secret put ROLE NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<String>,
}

/// What to do with a task that may have run but whose end cannot be known
/// (its agent lost it), like Slurm's `JobRequeue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLost {
    /// Launch it again without spending an attempt, at most
    /// [`MAX_REQUEUES`] times per task (then it counts as a failure). For
    /// commands that may safely run twice.
    #[default]
    Requeue,
    /// Count it as a failed attempt (retried if `retries` allows): for
    /// commands that must not run twice unless the user says so.
    Fail,
}

/// Most times one task is requeued after being lost.
pub const MAX_REQUEUES: u32 = 3;

fn one() -> u32 {
    1
}
fn default_cpus() -> f64 {
    0.1
}
fn default_mem() -> u64 {
    32
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    job: Vec<JobSpec>,
}

impl JobSpec {
    /// The resources of one task in the SDK's text form.
    pub fn resources_text(&self) -> String {
        let mut text = format!("cpus:{};mem:{}", self.cpus, self.mem);
        if self.disk > 0 {
            text.push_str(&format!(";disk:{}", self.disk));
        }
        text
    }

    /// Pause before attempt `attempt` (2 = the first retry).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(16);
        self.backoff.saturating_mul(1 << doublings).min(MAX_BACKOFF)
    }
}

/// Parses and checks a job file. `existing` names the jobs already
/// submitted (dependencies may point at them; new names may not reuse
/// them).
pub fn parse(text: &str, existing: &BTreeSet<String>) -> Result<Vec<JobSpec>, SpecError> {
    let file: File = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string().trim_end().to_owned()))?;
    let jobs = file.job;
    if jobs.is_empty() {
        return Err(SpecError::Shape("no [[job]] tables".into()));
    }
    if jobs.len() > MAX_JOBS {
        return Err(SpecError::Shape(format!(
            "{} jobs; at most {MAX_JOBS} per file",
            jobs.len()
        )));
    }
    let mut names = BTreeSet::new();
    for (i, job) in jobs.iter().enumerate() {
        check_job(i, job)?;
        if existing.contains(&job.name) || !names.insert(job.name.clone()) {
            return Err(SpecError::Duplicate(job.name.clone()));
        }
    }
    for job in &jobs {
        for dep in &job.depends_on {
            if !names.contains(dep) && !existing.contains(dep) {
                return Err(SpecError::UnknownDependency {
                    job: job.name.clone(),
                    dep: dep.clone(),
                });
            }
        }
    }
    check_acyclic(&jobs)?;
    Ok(jobs)
}

fn field(job: &JobSpec, field: &'static str, why: impl Into<String>) -> SpecError {
    SpecError::Field {
        job: job.name.clone(),
        field,
        why: why.into(),
    }
}

/// True for a valid job name: it becomes part of task ids and KV keys.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_job(i: usize, job: &JobSpec) -> Result<(), SpecError> {
    if !valid_name(&job.name) {
        return Err(SpecError::Field {
            job: format!("#{}", i + 1),
            field: "name",
            why: format!("{:?}: 1 to {MAX_NAME} letters, digits, '-' or '_'", job.name),
        });
    }
    if job.command.trim().is_empty() {
        return Err(field(job, "command", "must not be empty"));
    }
    if job.command.contains('\0') {
        return Err(field(job, "command", "contains a NUL byte"));
    }
    if job.count == 0 || job.count > MAX_COUNT {
        return Err(field(job, "count", format!("{} is not in 1..={MAX_COUNT}", job.count)));
    }
    if !(job.cpus.is_finite() && job.cpus > 0.0) {
        return Err(field(job, "cpus", format!("{} must be a positive number", job.cpus)));
    }
    if job.mem == 0 {
        return Err(field(job, "mem", "must be at least 1 MiB"));
    }
    mezzo_sdk::Resources::parse(&job.resources_text()).map_err(|e| field(job, "cpus", e.to_string()))?;
    for (k, v) in &job.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(field(job, "env", format!("bad variable {k:?}")));
        }
        if k == "MEZZO_TASK_INDEX" {
            return Err(field(job, "env", "MEZZO_TASK_INDEX is set by the framework"));
        }
    }
    if job.retries > 100 {
        return Err(field(job, "retries", format!("{} is more than 100", job.retries)));
    }
    if job.timeout.is_some_and(|t| t.is_zero()) {
        return Err(field(job, "timeout", "must be positive"));
    }
    if job.depends_on.contains(&job.name) {
        return Err(SpecError::Cycle(vec![job.name.clone(), job.name.clone()]));
    }
    if let Some(image) = &job.image {
        mezzo_sdk::ImageRef::parse(image).map_err(|e| field(job, "image", e.to_string()))?;
    }
    if let Some(secret) = &job.image_credentials {
        mezzo_sdk::check_image_credentials(job.image.as_deref(), secret)
            .map_err(|e| field(job, "image_credentials", e))?;
    }
    Ok(())
}

/// Depth-first search for a cycle among the file's jobs (jobs submitted
/// earlier cannot depend on new ones, so no cycle passes through them).
fn check_acyclic(jobs: &[JobSpec]) -> Result<(), SpecError> {
    let deps: BTreeMap<&str, &[String]> = jobs
        .iter()
        .map(|j| (j.name.as_str(), j.depends_on.as_slice()))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), SpecError> {
        match marks.get(n) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Open) => {
                let start = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(n.to_owned());
                return Err(SpecError::Cycle(cycle));
            }
            None => {}
        }
        marks.insert(n, Mark::Open);
        path.push(n);
        for d in deps.get(n).copied().unwrap_or_default() {
            if deps.contains_key(d.as_str()) {
                visit(d, deps, marks, path)?;
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    for j in jobs {
        visit(&j.name, &deps, &mut marks, &mut Vec::new())?;
    }
    Ok(())
}

mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::parse_duration(d)
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::duration_text(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn parse_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    duration_text(&text).map_err(serde::de::Error::custom)
}

fn duration_text(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("bad duration {text:?}: {e} (use e.g. 500ms, 10s, 2m)"))
}

#[cfg(test)]
#[path = "spec_fuzz_tests.rs"]
mod fuzz_tests;

fn is_zero(p: &i32) -> bool {
    *p == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_full_job_parses_with_defaults() {
        let jobs = parse(
            r#"
[[job]]
name = "a"
command = "true"

[[job]]
name = "b"
command = "echo $MEZZO_TASK_INDEX"
count = 10
cpus = 0.5
mem = 64
env = { X = "1" }
retries = 2
backoff = "2s"
timeout = "1m"
max_parallel = 3
depends_on = ["a"]
"#,
            &none(),
        )
        .expect("valid");
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].count, jobs[0].cpus, jobs[0].mem, jobs[0].retries),
            (1, 0.1, 32, 0)
        );
        assert_eq!(jobs[0].timeout, None);
        let b = &jobs[1];
        assert_eq!(b.timeout, Some(Duration::from_secs(60)));
        assert_eq!(b.backoff_before(2), Duration::from_secs(2));
        assert_eq!(b.backoff_before(3), Duration::from_secs(4));
        assert_eq!(b.backoff_before(60), MAX_BACKOFF);
        assert_eq!(b.resources_text(), "cpus:0.5;mem:64");
        // Specs round-trip through JSON (they are stored in the KV).
        for job in &jobs {
            let text = serde_json::to_string(job).expect("ser");
            assert_eq!(&serde_json::from_str::<JobSpec>(&text).expect("de"), job);
        }
    }

    #[test]
    fn bad_files_name_the_line_or_field() {
        let cases: &[(&str, &str)] = &[
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\ncuont = 3\n",
                "unknown field `cuont`",
            ),
            ("[[job]]\nname = \"a\"\ncommand = \"x\"\ncount = \"many\"\n", "line 4"),
            ("[[job]]\nname = \"a\"\n", "missing field `command`"),
            ("[[job]\n", "line 1"),
            ("", "no [[job]] tables"),
            ("[[job]]\nname = \"a b\"\ncommand = \"x\"\n", "field `name`"),
            ("[[job]]\nname = \"a\"\ncommand = \"x\"\ncount = 0\n", "field `count`"),
            ("[[job]]\nname = \"a\"\ncommand = \"x\"\ncpus = -1\n", "field `cpus`"),
            ("[[job]]\nname = \"a\"\ncommand = \"  \"\n", "field `command`"),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\ntimeout = \"soon\"\n",
                "bad duration",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\ndepends_on = [\"zz\"]\n",
                "unknown job \"zz\"",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\n[[job]]\nname = \"a\"\ncommand = \"y\"\n",
                "already exists",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\nenv = { MEZZO_TASK_INDEX = \"1\" }\n",
                "field `env`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\nimage = \"oci:../x\"\n",
                "field `image`",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\nimage_credentials = \"regcreds\"\n",
                "field `image_credentials`: registry credentials need an image",
            ),
            (
                "[[job]]\nname = \"a\"\ncommand = \"x\"\nimage = \"oci:x\"\nimage_credentials = \"regcreds\"\n",
                "is a local layout",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text, &none()).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn cycles_are_found_and_named() {
        let text = r#"
[[job]]
name = "a"
command = "x"
depends_on = ["c"]
[[job]]
name = "b"
command = "x"
depends_on = ["a"]
[[job]]
name = "c"
command = "x"
depends_on = ["b"]
"#;
        let err = parse(text, &none()).expect_err("cycle");
        assert!(matches!(&err, SpecError::Cycle(c) if c.len() == 4), "{err}");
        assert!(err.to_string().contains("a -> c -> b -> a"), "{err}");
        let self_loop = "[[job]]\nname = \"a\"\ncommand = \"x\"\ndepends_on = [\"a\"]\n";
        assert!(matches!(parse(self_loop, &none()), Err(SpecError::Cycle(_))));
    }

    #[test]
    fn existing_jobs_can_be_dependencies_but_not_reused() {
        let existing: BTreeSet<String> = ["old".to_owned()].into();
        let ok = "[[job]]\nname = \"new\"\ncommand = \"x\"\ndepends_on = [\"old\"]\n";
        assert!(parse(ok, &existing).is_ok());
        let dup = "[[job]]\nname = \"old\"\ncommand = \"x\"\n";
        assert_eq!(parse(dup, &existing), Err(SpecError::Duplicate("old".into())));
    }

    #[test]
    fn on_lost_defaults_to_requeue_and_rejects_others() {
        let base = "[[job]]\nname = \"a\"\ncommand = \"x\"\n";
        assert_eq!(parse(base, &none()).expect("default")[0].on_lost, OnLost::Requeue);
        let fail = format!("{base}on_lost = \"fail\"\n");
        assert_eq!(parse(&fail, &none()).expect("fail")[0].on_lost, OnLost::Fail);
        let bad = format!("{base}on_lost = \"retry\"\n");
        let err = parse(&bad, &none()).expect_err("unknown value");
        assert!(err.to_string().contains("requeue"), "{err}");
        // A job saved before the field existed still loads.
        let saved = r#"{"name":"a","command":"x","count":1,"cpus":0.1,"mem":32,"disk":0,"env":{},"retries":0,"backoff":"1s","timeout":null,"max_parallel":0,"depends_on":[]}"#;
        let old: JobSpec = serde_json::from_str(saved).expect("old save");
        assert_eq!(old.on_lost, OnLost::Requeue);
    }
}
