//! Allocator benchmarks in the shapes of Mesos' allocator benchmarks
//! (`src/tests/hierarchical_allocator_benchmarks.cpp`): a full allocation
//! cycle over N agents and M frameworks, with and without quotas and
//! decline filters, and the incremental reallocation after one task ends.
//! The allocator state's memory is printed once per shape (`memory:`
//! lines), measured with a counting global allocator.
//!
//! `cargo bench -p mezzo-master --bench allocator` runs the whole grid;
//! add a filter (e.g. `-- 10000x1000`) for one shape.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use mezzo_master::allocator::{Allocation, Allocator, Quota};
use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Each agent: Mesos' benchmark agent, with a port range.
const AGENT: &str = "cpus:24;mem:98304;disk:1000000;ports:[31000-32000]";

#[derive(Clone, Copy)]
struct Shape {
    agents: usize,
    frameworks: usize,
    quota: bool,
    filters: bool,
    /// Tasks of `cpus:1;mem:1024` running before the cycle (spread over
    /// the agents, each agent's of different frameworks), whose resources
    /// are not offered: the cycle offers what is left around them.
    tasks: usize,
}

impl Shape {
    fn name(&self) -> String {
        let mut n = format!("{}x{}", self.agents, self.frameworks);
        if self.quota {
            n += "/quota";
        }
        if self.filters {
            n += "/filters";
        }
        if self.tasks > 0 {
            n += &format!("/{}-tasks", self.tasks);
        }
        n
    }
}

fn agent(i: usize) -> AgentId {
    AgentId::parse(&format!("agent-{i:06}")).expect("id")
}

fn framework(i: usize) -> FrameworkId {
    FrameworkId::parse(&format!("framework-{i:05}")).expect("id")
}

/// Frameworks in a two-level tree: ten top roles, each with sub-roles of
/// about ten frameworks.
fn role_of(i: usize, frameworks: usize) -> Role {
    let sub = (frameworks / 100).max(1);
    Role::parse(&format!("org{}/team{}", i % 10, (i / 10) % sub)).expect("role")
}

fn build(s: Shape) -> Allocator {
    let mut al = Allocator::new();
    let total = ReservedResources::parse(AGENT).expect("agent resources");
    for i in 0..s.agents {
        al.add_agent(&agent(i), total.clone(), true);
    }
    for i in 0..s.frameworks {
        al.add_framework(&framework(i), &[role_of(i, s.frameworks)], true);
    }
    let task = ReservedResources::parse("cpus:1;mem:1024").expect("task");
    let (agents, frameworks): (Vec<AgentId>, Vec<FrameworkId>) = (
        (0..s.agents).map(agent).collect(),
        (0..s.frameworks).map(framework).collect(),
    );
    let roles: Vec<Role> = (0..s.frameworks).map(|i| role_of(i, s.frameworks)).collect();
    for t in 0..s.tasks {
        // Task t on agent t % agents; an agent's k-th task of framework
        // (agent + 251 k) % frameworks, so each agent hosts several
        // frameworks and each framework's tasks span many agents.
        let (a, k) = (t % s.agents, t / s.agents);
        let f = (a + 251 * k) % s.frameworks;
        al.track_used(&frameworks[f], &roles[f], &agents[a], &task);
    }
    if s.quota {
        // Half the top roles are guaranteed a twentieth of the cluster
        // each and limited to a fifth.
        let part = |d: usize| {
            Resources::parse(&format!("cpus:{};mem:{}", 24 * s.agents / d, 98304 * s.agents / d)).expect("quota")
        };
        for r in 0..5 {
            let quota = Quota {
                guarantee: part(20),
                limit: part(5),
            };
            al.set_quota(&Role::parse(&format!("org{r}")).expect("role"), quota);
        }
    }
    al
}

/// Takes every allocation back, as declines would (optionally with a
/// long filter), so that the next cycle hands everything out again.
fn recover_all(al: &mut Allocator, got: &[Allocation], filter_until: Option<Instant>) {
    for g in got {
        al.recover_offered(&g.framework, &g.role, &g.agent, &g.resources);
        if let Some(t) = filter_until {
            al.filter(&g.framework, &g.agent, t);
        }
    }
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`), which,
/// unlike wall time, other processes on a busy machine do not add to.
#[allow(unsafe_code)]
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Prints the median on-CPU time of `f` over `n` runs.
fn print_cpu(name: &str, n: usize, mut f: impl FnMut() -> Duration) {
    let mut cpu: Vec<Duration> = (0..n).map(|_| f()).collect();
    cpu.sort();
    println!(
        "cpu: {name}: median {:.4} ms of CPU time per run ({n} runs)",
        cpu[n / 2].as_secs_f64() * 1000.0
    );
}

fn full_cycle(c: &mut Criterion, s: Shape) {
    let before = counting::live();
    let mut al = build(s);
    let now = Instant::now();
    let mut got = al.allocate(now);
    let state = counting::live() - before - (got.capacity() * size_of::<Allocation>()) as isize;
    println!(
        "memory: {} allocator state after one cycle: {:.1} MiB ({} offers)",
        s.name(),
        state as f64 / (1024.0 * 1024.0),
        got.len()
    );
    let mut g = c.benchmark_group("allocator/full_cycle");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(if s.agents >= 20_000 { 3 } else { 1 }));
    let far = now + Duration::from_secs(3600);
    // One measured cycle after everything was given back; returns its
    // wall and on-CPU time.
    let mut cycle = move || {
        recover_all(&mut al, &got, None);
        if s.filters {
            // Every framework declines what it was offered for an hour;
            // the measured cycle must look past the filters.
            for i in 0..s.frameworks {
                al.revive(&framework(i), &[]);
            }
            got = al.allocate(now);
            recover_all(&mut al, &got, Some(far));
        }
        al.mark_all();
        let (t, cpu) = (Instant::now(), cpu_time());
        got = al.allocate(now);
        (t.elapsed(), cpu_time().saturating_sub(cpu))
    };
    g.bench_function(s.name(), |b| b.iter_custom(|iters| (0..iters).map(|_| cycle().0).sum()));
    g.finish();
    print_cpu(&format!("allocator/full_cycle/{}", s.name()), 5, || cycle().1);
}

/// One task of `cpus:1;mem:1024` ends on a cluster where everything is in
/// use; the allocator re-offers just that. With `wanting`, only that many
/// frameworks still want offers, the others suppressed (their work placed,
/// as most of a big cluster's frameworks are at any time).
fn incremental(c: &mut Criterion, agents: usize, frameworks: usize, wanting: Option<usize>) {
    let s = Shape {
        agents,
        frameworks,
        quota: false,
        filters: false,
        tasks: 0,
    };
    let mut al = build(s);
    let now = Instant::now();
    let got = al.allocate(now);
    let task = ReservedResources::parse("cpus:1;mem:1024").expect("task");
    for g in &got {
        al.offer_used(&g.framework, &g.role, &g.agent, &g.resources);
    }
    if let Some(w) = wanting {
        for i in w..frameworks {
            al.suppress(&framework(i), &[]);
        }
    }
    let mut g = c.benchmark_group("allocator/incremental_one_task");
    g.sample_size(50).warm_up_time(Duration::from_millis(300));
    let mut k = 0;
    let mut one = move || {
        let held = &got[k % got.len()];
        k += 1;
        let (t, cpu) = (Instant::now(), cpu_time());
        al.recover_used(&held.framework, &held.role, &held.agent, &task);
        let again = al.allocate(now);
        let spent = (t.elapsed(), cpu_time().saturating_sub(cpu));
        assert_eq!(again.len(), 1);
        // The re-offered resources become the task again.
        for a in &again {
            al.offer_used(&a.framework, &a.role, &a.agent, &a.resources);
        }
        spent
    };
    let mut name = format!("{agents}x{frameworks}");
    if let Some(w) = wanting {
        name += &format!("/{w}-wanting");
    }
    g.bench_function(&name, |b| b.iter_custom(|iters| (0..iters).map(|_| one().0).sum()));
    g.finish();
    print_cpu(&format!("allocator/incremental_one_task/{name}"), 1001, || one().1);
}

fn benches(c: &mut Criterion) {
    let mut shapes = Vec::new();
    for agents in [1_000, 10_000, 50_000] {
        for frameworks in [10, 100, 1_000] {
            for (quota, filters) in [(false, false), (true, false), (false, true)] {
                shapes.push(Shape {
                    agents,
                    frameworks,
                    quota,
                    filters,
                    tasks: 0,
                });
            }
        }
    }
    for (quota, filters) in [(false, false), (true, false), (false, true)] {
        shapes.push(Shape {
            agents: 20_000,
            frameworks: 2_000,
            quota,
            filters,
            tasks: 0,
        });
    }
    // Issue 17's largest cluster: 50,000 agents, 5,000 frameworks, and
    // with 1,000,000 tasks in flight.
    for tasks in [0, 1_000_000] {
        shapes.push(Shape {
            agents: 50_000,
            frameworks: 5_000,
            quota: false,
            filters: false,
            tasks,
        });
    }
    // Criterion filters what it measures, not what we build: skip
    // building (and reporting the memory of) shapes the filter leaves out.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    // Alternatives (`a|b`) as in criterion's regex filter; each a substring.
    let wanted = |name: &str| filters.is_empty() || filters.iter().flat_map(|f| f.split('|')).any(|f| name.contains(f));
    for s in shapes {
        if wanted(&format!("allocator/full_cycle/{}", s.name())) {
            full_cycle(c, s);
        }
    }
    for (a, f, w) in [(10_000, 1_000, None), (20_000, 2_000, None), (20_000, 2_000, Some(100))] {
        let name = match w {
            Some(w) => format!("allocator/incremental_one_task/{a}x{f}/{w}-wanting"),
            None => format!("allocator/incremental_one_task/{a}x{f}"),
        };
        if wanted(&name) {
            incremental(c, a, f, w);
        }
    }
}

criterion_group!(allocator, benches);
criterion_main!(allocator);
