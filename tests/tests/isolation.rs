//! DESIGN.md "Containers" and "Agent recovery": tasks in real cgroups and
//! namespaces (this machine and CI run as root).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mezzo_proto::v1;
use mezzo_sdk::{Resources, TaskBuilder, TaskState, task_state};
use mezzo_tests::{Cluster, ClusterSpec, fw};

fn spec(extra_agent_args: &[&str]) -> ClusterSpec {
    let mut s = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    s.agent_args.extend(extra_agent_args.iter().map(|a| a.to_string()));
    s
}

fn task(id: &str, res: &str, script: &str) -> Result<v1::TaskInfo> {
    Ok(TaskBuilder::new(id)
        .resources(&Resources::parse(res)?)
        .shell(script)
        .build())
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
        {
            out.push(pid);
        }
    }
    out
}

/// A task beyond its memory ends FAILED with the memory-limit reason; the
/// agent and another task are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oom_killed_and_reported() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "oom", None).await?;
        let o = ev.offer().await?;
        let hog = task(
            "hog",
            "cpus:0.2;mem:32",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        )?;
        let calm = task("calm", "cpus:0.1;mem:32", "sleep 1; echo calm")?;
        s.accept(vec![o.offer_id], vec![hog, calm], None).await?;
        let st = ev
            .update("hog", Duration::from_secs(20), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Failed), "{st:?}");
        ensure!(
            st.reason == v1::StatusReason::ReasonContainerLimitationMemory as i32,
            "reason: {st:?}"
        );
        let calm = ev
            .update("calm", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&calm) == Some(TaskState::Finished), "{calm:?}");
        c.agent_state(0).await.context("agent still serving")?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A fork bomb stops at the pids limit; killing the task leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained_and_kill_leaves_nothing() -> Result<()> {
    let c = Cluster::start(spec(&["--pids-limit", "40"])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "bomb", None).await?;
        let o = ev.offer().await?;
        let bomb = task(
            "bomb",
            "cpus:0.2;mem:256",
            "exec bash -c 'for i in $(seq 1 200); do sleep 31.4159 & done 2>/dev/null; exec sleep 31.4159'",
        )?;
        s.accept(vec![o.offer_id], vec![bomb], None).await?;
        ev.update("bomb", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sleeping = processes_with("31.4159").len();
        ensure!(sleeping > 0 && sleeping <= 40, "{sleeping} processes, limit 40");
        let cg = c.task_cgroup(0, "pids", "bomb").context("task cgroup")?;
        let current: u64 = std::fs::read_to_string(cg.join("pids.current"))?.trim().parse()?;
        ensure!(current <= 40, "pids.current {current}");
        s.kill("bomb", Some(Duration::from_millis(200))).await?;
        let st = ev
            .update("bomb", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Killed), "{st:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while (!processes_with("31.4159").is_empty() || cg.exists()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(processes_with("31.4159").is_empty(), "processes left after the kill");
        ensure!(!cg.exists(), "cgroup {} left after the kill", cg.display());
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Inside a task, /proc shows only its own processes, the hostname is its
/// own, and it runs as nobody, with no capability, `no_new_privs` and the
/// seccomp filter (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_sees_its_own_pid_namespace_and_hostname() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "ns", None).await?;
        let o = ev.offer().await?;
        let t = task(
            "peek",
            "cpus:0.1;mem:32",
            "ls /proc | grep -c '^[0-9]'; hostname; id -u; echo $$; \
             grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
        )?;
        s.accept(vec![o.offer_id], vec![t], None).await?;
        let st = ev
            .update("peek", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "{st:?}");
        let out = std::fs::read_to_string(
            c.dir
                .path()
                .join("agent0")
                .join("sandboxes")
                .join(&fid)
                .join("peek")
                .join("stdout"),
        )?;
        let lines: Vec<&str> = out.lines().collect();
        ensure!(lines.len() == 8, "{out}");
        let procs: usize = lines[0].trim().parse()?;
        ensure!(procs <= 5, "the task sees {procs} processes");
        ensure!(lines[1] == "peek", "hostname {:?}", lines[1]);
        ensure!(lines[2] == "65534", "uid {:?}", lines[2]);
        ensure!(lines[3].parse::<u32>()? <= 3, "pid of the task's shell: {}", lines[3]);
        let confinement: Vec<String> = lines[4..]
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        ensure!(
            confinement
                == [
                    "CapEff: 0000000000000000",
                    "CapBnd: 0000000000000000",
                    "NoNewPrivs: 1",
                    "Seccomp: 2"
                ],
            "{confinement:?}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A busy loop with a hard quota of 0.5 cpu uses at most about 0.55 cpu.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_cpu_quota_caps_a_busy_loop() -> Result<()> {
    let c = Cluster::start(spec(&["--cpu-hard-limit"])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "cpu", None).await?;
        let o = ev.offer().await?;
        let t = task("spin", "cpus:0.5;mem:32", "while :; do :; done")?;
        s.accept(vec![o.offer_id], vec![t], None).await?;
        ev.update("spin", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cg = c.task_cgroup(0, "cpuacct", "spin").context("task cgroup")?;
        let file = cg.join("cpuacct.usage");
        let read = || -> Result<u64> {
            Ok(std::fs::read_to_string(&file)
                .with_context(|| file.display().to_string())?
                .trim()
                .parse()?)
        };
        let (u0, t0) = (read()?, Instant::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (u1, t1) = (read()?, Instant::now());
        let cores = (u1 - u0) as f64 / 1e9 / (t1 - t0).as_secs_f64();
        ensure!(cores <= 0.55, "the task used {cores:.3} cpus with a 0.5 quota");
        // Only a sign of life: on a loaded machine the loop may get far less
        // than its quota; the cap above is what this test is about.
        ensure!(cores >= 0.05, "the task used only {cores:.3} cpus: was it running?");
        // Usage shows in the agent's /state and /metrics.
        let st = c.agent_state(0).await?;
        let u = &st["tasks"][0]["usage"];
        ensure!(
            u["cpu_seconds"].as_f64().unwrap_or(0.0) > 1.0 && u["pids"].as_u64().unwrap_or(0) >= 1,
            "usage: {st}"
        );
        let m = c.text(&c.agents[0].addr, "/metrics").await?;
        ensure!(
            m.lines()
                .any(|l| l.starts_with("mezzo_agent_container_cpu_seconds") && l.contains("task_id=\"spin\"")),
            "{m}"
        );
        s.kill("spin", None).await?;
        ev.update("spin", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// SIGKILL the agent while tasks run and start it again: they are still
/// running and finish normally; one that ended while the agent was down is
/// reported with its true exit status, and one whose container's init was
/// killed meanwhile (the OOM killer, an operator) as killed by that signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_an_agent_restart() -> Result<()> {
    survive_a_restart(&[], ("4.0123", "1.0321", "30.0123")).await
}

/// Issue 15: the same with `--user-namespaces`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_in_user_namespaces_survive_an_agent_restart() -> Result<()> {
    survive_a_restart(&["--user-namespaces"], ("4.0124", "1.0322", "30.0124")).await
}

/// [`tasks_survive_an_agent_restart`] on an agent with `extra` flags; the
/// tasks sleep `long`, `short` and `doomed` seconds (markers of their
/// processes).
async fn survive_a_restart(extra: &[&str], (long, short, doomed): (&str, &str, &str)) -> Result<()> {
    let mut c = Cluster::start(spec(extra)).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "survivors", None).await?;
        let o = ev.offer().await?;
        let long_task = task("long", "cpus:0.1;mem:32", &format!("sleep {long}; exit 0"))?;
        let short_task = task("short", "cpus:0.1;mem:32", &format!("sleep {short}; exit 7"))?;
        let doomed_task = task("doomed", "cpus:0.1;mem:32", &format!("sleep {doomed}; exit 0"))?;
        s.accept(vec![o.offer_id], vec![long_task, short_task, doomed_task], None)
            .await?;
        ev.update("long", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        ev.update("short", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        ev.update("doomed", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        // RUNNING means launched: the tasks' own processes must exist before
        // the kill (an agent killed earlier finds them never started).
        let deadline = Instant::now() + Duration::from_secs(10);
        while [long, short, doomed].iter().any(|m| processes_with(m).is_empty()) {
            ensure!(Instant::now() < deadline, "the tasks never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.agents[0].kill().await;
        // The doomed task's init (the parent of its shell) killed while
        // the agent is down: the whole container goes with it.
        let init = processes_with(doomed)
            .into_iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let ppid: i32 = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
                String::from_utf8_lossy(&cmdline)
                    .contains("__container-init")
                    .then_some(ppid)
            })
            .next()
            .context("the doomed task's init")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL)?;
        tokio::time::sleep(Duration::from_millis(1800)).await; // "short" ends meanwhile
        c.restart_agent(0).await?;
        let st = ev
            .update("short", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Failed) && st.exit_code == Some(7),
            "short: {st:?}"
        );
        let st = ev
            .update("doomed", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Failed) && st.exit_code == Some(-9),
            "doomed: {st:?}"
        );
        let st = ev
            .update("long", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Finished) && st.exit_code == Some(0),
            "long: {st:?}"
        );
        c.wait_agent(0, "no pending updates", |s| s["pending_updates"] == 0)
            .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// DESIGN.md "Bad input": a task asking for a user outside the agent's
/// allow-list is an ERROR (it cannot run as given) with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_allow_list_is_refused() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "users", None).await?;
        let o = ev.offer().await?;
        let mut t = task("as-root", "cpus:0.1;mem:32", "id")?;
        if let Some(cmd) = t.command.as_mut() {
            cmd.user = "root".into();
        }
        s.accept(vec![o.offer_id], vec![t], None).await?;
        let st = ev
            .update("as-root", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        // It cannot run as given: an ERROR, not FAILED (it never ran).
        ensure!(task_state(&st) == Some(TaskState::Error), "{st:?}");
        ensure!(
            st.reason == v1::StatusReason::ReasonTaskInvalid as i32 && st.message.contains("root"),
            "{st:?}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Dropping a cluster leaves no cgroup and no task process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_left_behind() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let parent = c.cgroup_parent(0);
    let (s, mut ev, _) = fw::subscribe(&c, "leftovers", None).await?;
    let o = ev.offer().await?;
    s.accept(
        vec![o.offer_id],
        vec![task("linger", "cpus:0.1;mem:32", "sleep 27.1828")?],
        None,
    )
    .await?;
    ev.update("linger", Duration::from_secs(10), |s| s == TaskState::Running)
        .await?;
    s.stop().await;
    drop(c);
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")?
        .flatten()
        .map(|h| h.path().join(&parent))
        .filter(|p| p.exists())
        .collect();
    ensure!(left.is_empty(), "cgroups left: {left:?}");
    ensure!(processes_with("27.1828").is_empty(), "task processes left");
    Ok(())
}

/// A task labelled `mezzo.network=isolated` gets a network namespace with
/// loopback only (and loopback up); others share the host's network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_network_has_only_loopback() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "net", None).await?;
        let o = ev.offer().await?;
        let script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; cat /sys/class/net/lo/operstate 2>/dev/null || true";
        let private = TaskBuilder::new("private")
            .resources(&Resources::parse("cpus:0.1;mem:32")?)
            .shell(script)
            .label("mezzo.network", "isolated")
            .build();
        let shared = task("shared", "cpus:0.1;mem:32", script)?;
        s.accept(vec![o.offer_id], vec![private, shared], None).await?;
        for t in ["private", "shared"] {
            let st = ev.update(t, Duration::from_secs(10), TaskState::is_terminal).await?;
            ensure!(task_state(&st) == Some(TaskState::Finished), "{t}: {st:?}");
        }
        let out = |t: &str| std::fs::read_to_string(c.dir.path().join("agent0").join("sandboxes").join(&fid).join(t).join("stdout"));
        let private = out("private")?;
        ensure!(private.split_whitespace().next() == Some("lo") && !private.contains("eth"), "private: {private:?}");
        let shared = out("shared")?;
        ensure!(shared.split_whitespace().count() > 2, "shared sees only {shared:?}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A sandbox that outgrows the task's disk resource ends the task FAILED
/// with the disk-limit reason; stdout past its size limit is rotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_limit_and_log_rotation() -> Result<()> {
    let c = Cluster::start(spec(&["--disk-check-interval", "500ms", "--log-max-mib", "1"])).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "disk", None).await?;
        let o = ev.offer().await?;
        let hog = task(
            "filler",
            "cpus:0.1;mem:64;disk:5",
            "head -c 20000000 /dev/zero > blob; sleep 30",
        )?;
        let chatty = task(
            "chatty",
            "cpus:0.1;mem:64;disk:100",
            "head -c 3000000 /dev/zero | tr '\\0' x; sleep 30",
        )?;
        s.accept(vec![o.offer_id], vec![hog, chatty], None).await?;
        let st = ev
            .update("filler", Duration::from_secs(15), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Failed), "{st:?}");
        ensure!(
            st.reason == v1::StatusReason::ReasonContainerLimitationDisk as i32,
            "reason: {st:?}"
        );
        let sandbox = c.dir.path().join("agent0").join("sandboxes").join(&fid).join("chatty");
        let deadline = Instant::now() + Duration::from_secs(10);
        let rotated = || {
            sandbox.join("stdout.1").exists()
                && std::fs::metadata(sandbox.join("stdout"))
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX)
                    < 1024 * 1024
        };
        while !rotated() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(sandbox.join("stdout.1").exists(), "stdout was not rotated");
        let size = std::fs::metadata(sandbox.join("stdout"))?.len();
        ensure!(size < 1024 * 1024, "stdout is still {size} bytes after rotation");
        s.kill("chatty", Some(Duration::from_millis(100))).await?;
        ev.update("chatty", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A running task's container usage reaches the master: per task and
/// summed per agent in its `/state`, per agent in its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_forwarded_to_the_master() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "usage", None).await?;
        let o = ev.offer().await?;
        // Burns cpu and holds a few processes.
        let t = task("busy", "cpus:0.2;mem:64", "sleep 300 & sleep 300 & while :; do :; done")?;
        s.accept(vec![o.offer_id], vec![t], None).await?;
        ev.update("busy", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        let st = mezzo_tests::wait_for(
            "the task's usage in the master's /state",
            Duration::from_secs(20),
            || c.master_state(),
            |st| {
                let u = &st["tasks"][0]["usage"];
                u["cpu_time_secs"].as_f64().unwrap_or(0.0) > 0.2 && u["pids"].as_u64().unwrap_or(0) >= 3
            },
        )
        .await?;
        let u = &st["tasks"][0]["usage"];
        ensure!(u["memory_rss_bytes"].as_u64().unwrap_or(0) > 0, "{u}");
        let a = &st["agents"][0]["usage"];
        ensure!(a["containers"] == 1, "agent usage: {a}");
        ensure!(
            a["pids"] == u["pids"] || a["pids"].as_u64() >= u["pids"].as_u64(),
            "agent usage: {a}"
        );
        ensure!(
            a["cpu_time_secs"].as_f64() >= u["cpu_time_secs"].as_f64(),
            "agent usage: {a}"
        );
        // The operator API (the dashboard's agents view) shows the same.
        let rows = c.get(c.master_addr(), "/api/v1/agents").await?;
        let row = &rows["items"][0]["usage"];
        ensure!(
            row["containers"] == 1 && row["pids"].as_u64() >= Some(1),
            "api agent usage: {row}"
        );
        let m = c.text(c.master_addr(), "/metrics").await?;
        ensure!(
            m.lines()
                .any(|l| l.starts_with("mezzo_master_agent_container_pids{") && !l.ends_with(" 0")),
            "{m}"
        );
        s.kill("busy", Some(Duration::from_millis(100))).await?;
        ev.update("busy", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        // Once ended, the agent stops reporting it and the master forgets it.
        mezzo_tests::wait_for(
            "the agent's usage cleared",
            Duration::from_secs(10),
            || c.master_state(),
            |st| st["agents"][0]["usage"]["containers"] == 0,
        )
        .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The v1 hierarchies a container's cgroup lives in.
const HIERARCHIES: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// At start the agent removes the cgroups under its parent that no
/// checkpointed container owns, killing what runs there, and keeps the
/// containers it adopts; a clean shutdown (SIGTERM) removes the parent once
/// no container is left in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_cgroups_are_swept_and_a_clean_stop_removes_the_parent() -> Result<()> {
    let mut c = Cluster::start(spec(&[])).await?;
    let parent = c.cgroup_parent(0);
    let mut orphan_proc = None;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "sweep", None).await?;
        let o = ev.offer().await?;
        s.accept(
            vec![o.offer_id],
            vec![task("keep", "cpus:0.1;mem:32", "sleep 29.9792")?],
            None,
        )
        .await?;
        ev.update("keep", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        // RUNNING means launched: wait until the task's own process exists
        // (an agent killed before that finds it never started: DROPPED).
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with("29.9792").is_empty() {
            ensure!(Instant::now() < deadline, "the task never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // An orphan: a cgroup under the agent's parent with a process in it
        // that no checkpoint names (as if the agent died mid-launch).
        let sleeper = std::process::Command::new("sleep").arg("31.8309").spawn()?;
        let orphans: Vec<_> = HIERARCHIES
            .iter()
            .map(|h| {
                std::path::Path::new("/sys/fs/cgroup")
                    .join(h)
                    .join(&parent)
                    .join("orphan-test")
            })
            .collect();
        for dir in &orphans {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string())?;
        }
        orphan_proc = Some(sleeper);
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while (orphans.iter().any(|d| d.exists()) || !processes_with("31.8309").is_empty()) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(mut p) = orphan_proc.take() {
            let _ = p.try_wait();
            orphan_proc = Some(p);
        }
        ensure!(!orphans.iter().any(|d| d.exists()), "orphan cgroup left: {orphans:?}");
        ensure!(processes_with("31.8309").is_empty(), "the orphan's process survived");
        // The adopted container is untouched.
        ensure!(!processes_with("29.9792").is_empty(), "the adopted task was killed");
        let cg = c.task_cgroup(0, "memory", "keep").context("task cgroup")?;
        ensure!(cg.exists(), "the adopted container's cgroup was removed");
        c.wait_agent(0, "keep running after the restart", |st| {
            st["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["task_id"] == "keep" && t["state"] == "TASK_RUNNING"))
        })
        .await?;

        // A clean stop with a container still running keeps the parent.
        c.agents[0].stop(Duration::from_secs(10)).await;
        ensure!(
            HIERARCHIES
                .iter()
                .all(|h| std::path::Path::new("/sys/fs/cgroup").join(h).join(&parent).exists()),
            "parent removed under a running container"
        );
        c.restart_agent(0).await?;
        c.wait_agent(0, "registered again", |st| !st["master"].is_null())
            .await?;
        s.kill("keep", Some(Duration::from_millis(100))).await?;
        ev.update("keep", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while cg.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(!cg.exists(), "the killed container's cgroup is left");
        ensure!(
            c.agents[0].stop(Duration::from_secs(10)).await,
            "the agent did not stop on SIGTERM"
        );
        let left: Vec<_> = HIERARCHIES
            .iter()
            .map(|h| std::path::Path::new("/sys/fs/cgroup").join(h).join(&parent))
            .filter(|p| p.exists())
            .collect();
        ensure!(left.is_empty(), "parent cgroup left after a clean stop: {left:?}");
        Ok(())
    }
    .await;
    if let Some(mut p) = orphan_proc {
        let _ = p.kill();
        let _ = p.wait();
    }
    result.with_context(|| c.logs())
}

/// The agent's container launcher (`mezzo __container-init --launcher`)
/// is started again when it dies; running containers do not depend on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_launcher_is_replaced() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "launcher", None).await?;
        let o = ev.offer().await?;
        s.accept(
            vec![o.offer_id],
            vec![task("first", "cpus:0.1;mem:32", "sleep 1.5; exit 3")?],
            None,
        )
        .await?;
        ev.update("first", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        let agent = c.agents[0].pid().context("agent pid")?;
        let launchers: Vec<i32> = processes_with("--launcher")
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(agent)
            })
            .collect();
        ensure!(launchers.len() == 1, "launchers of the agent: {launchers:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(launchers[0]),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        // The running container ends normally, with its own exit status.
        let st = ev
            .update("first", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Failed) && st.exit_code == Some(3),
            "{st:?}"
        );
        // The next launch gets a new launcher.
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![task("second", "cpus:0.1;mem:32", "true")?], None)
            .await?;
        let st = ev
            .update("second", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "{st:?}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Issue 15: a task opens only the devices of the allowlist (the devices
/// cgroup of the agent's parent), even one its user could open on the
/// host. Control: the same open as nobody on the host succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_opens_only_allowed_devices() -> Result<()> {
    let Some(device) = ["/dev/fuse", "/dev/net/tun"]
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
    else {
        eprintln!("skipped: no world-writable device to try (/dev/fuse, /dev/net/tun)");
        return Ok(());
    };
    let probe =
        format!("(exec 3<>{device}) 2>/dev/null && echo opened || echo refused; (exec 3<>/dev/null) && echo null");
    let control = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sh",
            "-c",
            &probe,
        ])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&control.stdout) == "opened\nnull\n",
        "control on the host: {control:?}"
    );
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "dev", None).await?;
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![task("dev", "cpus:0.1;mem:32", &probe)?], None)
            .await?;
        let st = ev
            .update("dev", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "{st:?}");
        let out = std::fs::read_to_string(c.dir.path().join("agent0/sandboxes").join(&fid).join("dev/stdout"))?;
        ensure!(out == "refused\nnull\n", "{device} inside the task: {out:?}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The escape attempts of a probe task, one line each: `name: ok` or
/// `name: <error>` (the shell's message, or the errno's name for a system
/// call made through python's ctypes).
const ESCAPES: &str = r#"try() { if out=$(sh -c "$2" 2>&1); then echo "$1: ok"; else echo "$1: ${out##*: }"; fi; }
try etc ': > /etc/mezzo-NONCE'
try tmp ': > /tmp/mezzo-NONCE'
try shm ': > /dev/shm/mezzo-NONCE'
try kmsg ': < /dev/kmsg'
try kvm ': < /dev/kvm'
try sys ': > /sys/kernel/mm/ksm/run'
try procsys ': > /proc/sys/kernel/hostname'
try neighbour 'cat NEIGHBOUR'
try shared_read 'cat @RO@/hello'
try shared_ro ': > @RO@/from-task'
try shared_rw ': > @RW@/from-task-$(id -u)'
try init_fds 'set -e; for f in /proc/1/fd/*; do readlink -v $f; done'
echo "keys: $(wc -c < /proc/keys)"
echo "timer_list: $(cat /proc/timer_list 2>/dev/null | wc -c)"
python3 - <<'PY'
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    rc = libc.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    print(f"{name}: {'ok' if rc >= 0 else errno.errorcode[ctypes.get_errno()]}")
call("mount", 165, b"none", b"/mnt", b"tmpfs", 0, None)
call("init_module", 175, None, 0, b"")
call("finit_module", 313, 0, b"", 0)
call("ptrace_outside", 101, 16, OUTSIDE, 0, 0)
child = os.fork()
if child == 0:
    time.sleep(10)
    os._exit(0)
call("ptrace_child", 101, 16, child, 0, 0)
os.kill(child, 9)
import socket
def connect(name, port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        print(f"{name}: ok")
    except OSError as e:
        print(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")
connect("master_loopback", @MASTERPORT@)
connect("host_loopback", @HOSTPORT@)
connect("neighbour_port", @NPORT@)
def abstract(name, address):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(address)
        print(f"{name}: ok")
    except OSError as e:
        print(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")
own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
own.bind("\0mezzo-own-NONCE-" + str(os.getuid()))
own.listen()
abstract("abstract_own", "\0mezzo-own-NONCE-" + str(os.getuid()))
abstract("abstract_host", "\0mezzo-host-NONCE")
PY
"#;

/// Issue 15: from inside a task, as the default user and as root, each way
/// out fails and is checked: the host's `/etc` is read-only and its `/tmp`
/// and `/dev/shm` private; no `/dev/kmsg` or `/dev/kvm`; `/sys` and
/// `/proc/sys` read-only; kernel-internal files masked; no `mount`, no
/// module loading (this kernel has no modules at all, so EPERM is the
/// filter's answer, where the kernel alone would say ENOSYS); no `ptrace`
/// of a process outside, nor of the init's descriptors; no view of another
/// task's sandbox; no connection to the master or another host service on
/// loopback, nor to the host's abstract Unix sockets. Controls: the host has what the task could not reach, the
/// task's own child can be traced, the neighbour's output read from the
/// host and its port on loopback reached from the task. Host paths the
/// operator shares (`--host-paths`) are there, read-only unless `:rw`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_from_a_task_fail() -> Result<()> {
    escapes(&[]).await
}

/// Issue 15: the same ways out fail the same way with `--user-namespaces`
/// (the hardened defaults hold on top of the user namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_from_a_task_in_a_user_namespace_fail() -> Result<()> {
    escapes(&["--user-namespaces"]).await
}

/// [`escapes_from_a_task_fail`] on an agent with `extra` flags.
async fn escapes(extra: &[&str]) -> Result<()> {
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::UNIX_EPOCH.elapsed()?.as_nanos()
    );
    let ro = tempfile::Builder::new().prefix("mezzo-shared-ro-").tempdir_in("/tmp")?;
    std::fs::set_permissions(ro.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::write(ro.path().join("hello"), "hello")?;
    let rw = mezzo_tests::shared_dir("mezzo-shared-rw-")?;
    let host_paths = format!("{}:rw,{}", mezzo_tests::SHARED_ROOT, ro.path().display());
    let mut args = vec!["--allowed-users", "root", "--host-paths", &host_paths];
    args.extend(extra);
    let c = Cluster::start(spec(&args)).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "escapes", None).await?;
        let sandboxes = c.dir.path().join("agent0/sandboxes").join(&fid);
        let o = ev.offer().await?;
        // The neighbour serves on a port of its own, on loopback (a free
        // one: other tests' tasks share the host's network).
        let neighbour_port = mezzo_tests::free_ports(1)?[0];
        s.accept(
            vec![o.offer_id],
            vec![task(
                "neighbour",
                "cpus:0.1;mem:64",
                &format!("echo neighbour-secret; exec python3 -u -m http.server {neighbour_port} --bind 127.0.0.1"),
            )?],
            None,
        )
        .await?;
        ev.update("neighbour", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        let neighbour = sandboxes.join("neighbour/stdout");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&neighbour).is_ok_and(|out| out.contains("Serving HTTP")) {
            ensure!(Instant::now() < deadline, "the neighbour is not serving");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A service of the host on loopback, and one on an abstract Unix
        // socket (the host network namespace's), which the task must not reach.
        let host_service = std::net::TcpListener::bind("127.0.0.1:0")?;
        let abstract_name = format!("mezzo-host-{nonce}");
        let host_abstract = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
            std::os::unix::net::UnixListener::bind_addr(&addr)?
        };
        let master_port = c.master_addr().rsplit(':').next().context("master port")?.to_owned();
        let script = ESCAPES
            .replace("NONCE", &nonce)
            .replace("NEIGHBOUR", &neighbour.display().to_string())
            .replace("@RO@", &ro.path().display().to_string())
            .replace("@RW@", &rw.path().display().to_string())
            .replace("OUTSIDE", &std::process::id().to_string())
            .replace("@MASTERPORT@", &master_port)
            .replace("@HOSTPORT@", &host_service.local_addr()?.port().to_string())
            .replace("@NPORT@", &neighbour_port.to_string());
        for user in ["nobody", "root"] {
            let out = probe_as(&s, &mut ev, &sandboxes, user, &script).await?;
            for expected in [
                "etc: Read-only file system".to_string(),
                "tmp: ok".into(),
                "shm: ok".into(),
                // (dash's words for ENOENT on a redirection)
                "kmsg: No such file".into(),
                "kvm: No such file".into(),
                "sys: Read-only file system".into(),
                "procsys: Read-only file system".into(),
                "neighbour: No such file or directory".into(),
                "shared_read: ok".into(),
                "shared_ro: Read-only file system".into(),
                "shared_rw: ok".into(),
                // The init holds descriptors of the cgroups above the task's:
                // not even a root task may follow them (it lacks the init's
                // capabilities, and the init is not dumpable).
                "init_fds: Permission denied".into(),
                "keys: 0".into(),
                "timer_list: 0".into(),
                "mount: EPERM".into(),
                "init_module: EPERM".into(),
                "finit_module: EPERM".into(),
                "ptrace_outside: ESRCH".into(),
                "ptrace_child: ok".into(),
                "master_loopback: EPERM".into(),
                "host_loopback: EPERM".into(),
                "neighbour_port: ok".into(),
                "abstract_own: ok".into(),
                "abstract_host: EPERM".into(),
            ] {
                ensure!(out.lines().any(|l| l == expected), "{user}: no {expected:?} in:\n{out}");
            }
        }
        for path in [
            format!("/etc/mezzo-{nonce}"),
            format!("/tmp/mezzo-{nonce}"),
            format!("/dev/shm/mezzo-{nonce}"),
        ] {
            ensure!(!std::path::Path::new(&path).exists(), "{path} reached the host");
        }
        for device in ["/dev/kmsg", "/dev/kvm"] {
            if !std::path::Path::new(device).exists() {
                eprintln!("note: the host has no {device} either");
            }
        }
        ensure!(
            !std::fs::read_to_string("/proc/keys")?.is_empty(),
            "the host's /proc/keys is empty"
        );
        // What the task could not reach on loopback is there.
        std::net::TcpStream::connect(c.master_addr())?;
        std::net::TcpStream::connect(host_service.local_addr()?)?;
        std::os::unix::net::UnixStream::connect_addr(&host_abstract.local_addr()?)?;
        // The shared directory is the host's: both probes' files are there.
        for uid in [65534, 0] {
            let written = rw.path().join(format!("from-task-{uid}"));
            ensure!(written.exists(), "{} is not on the host", written.display());
        }
        ensure!(!ro.path().join("from-task").exists());
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Runs `script` as `user` in task `probe-USER` (sandbox under
/// `sandboxes`); returns its stdout once it has finished.
async fn probe_as(
    s: &mezzo_sdk::Scheduler,
    ev: &mut fw::Inbox,
    sandboxes: &std::path::Path,
    user: &str,
    script: &str,
) -> Result<String> {
    let id = format!("probe-{user}");
    let o = ev.offer().await?;
    let mut t = task(&id, "cpus:0.1;mem:64", script)?;
    t.command.as_mut().context("command")?.user = user.into();
    s.accept(vec![o.offer_id], vec![t], None).await?;
    let st = ev.update(&id, Duration::from_secs(20), TaskState::is_terminal).await?;
    let out = std::fs::read_to_string(sandboxes.join(&id).join("stdout"))?;
    ensure!(task_state(&st) == Some(TaskState::Finished), "{st:?}\n{out}");
    Ok(out)
}

/// Zombie processes whose parent is `ppid`.
fn zombies_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // "pid (comm) S ppid ...": the fields after the last ')'.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        if fields.first() == Some(&"Z") && fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// A supervisor records its task's end from the init's report without
/// waiting for the init to be gone (its namespaces take a while to tear
/// down): the launcher, a subreaper, reaps those inits. After ten tasks,
/// no zombie is left under the launcher, and every cgroup of a task is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_containers_leave_no_zombies() -> Result<()> {
    let c = Cluster::start(spec(&[])).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "zombies", None).await?;
        let tasks = (0..10)
            .map(|i| task(&format!("t{i}"), "cpus:0.1;mem:32", "sleep 0.1; exit 3"))
            .collect::<Result<Vec<_>>>()?;
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], tasks, None).await?;
        for i in 0..10 {
            let st = ev
                .update(&format!("t{i}"), Duration::from_secs(20), TaskState::is_terminal)
                .await?;
            ensure!(st.exit_code == Some(3), "t{i}: {st:?}");
        }
        // The launcher is the agent's child running `__container-init --launcher`.
        let agent = c.agents[0].pid().context("agent pid")?;
        let launcher = processes_with("--launcher")
            .into_iter()
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
                ppid == Some(agent)
            })
            .context("the agent's launcher")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !zombies_of(launcher).is_empty() || c.task_cgroup(0, "memory", "t9").is_some_and(|p| p.exists()) {
            ensure!(
                Instant::now() < deadline,
                "zombies under the launcher: {:?}",
                zombies_of(launcher)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// What [`user_namespaces_make_root_an_unprivileged_host_user`] runs as
/// root and as nobody (`SHARED`: a shared writable host dir holding a
/// 0644 file of host root's).
const USERNS_PROBE: &str = r#"echo "uid_map: $(awk '{print $1, $2, $3}' /proc/self/uid_map)"
echo "id: $(id -u)"
echo x > ./from-task && echo "sandbox: ok"
echo x > SHARED/from-$(id -u) && echo "shared: ok"
if echo x 2>/dev/null >> SHARED/root-file; then echo "root_file: ok"; else echo "root_file: denied"; fi
"#;

/// Issue 15: with `--user-namespaces` each task has a user namespace of
/// its own (its `uid_map` shows the agent's range); a task allowed to run
/// as root is uid 0 inside, but what it writes to its sandbox or a shared
/// host dir is the range's base's on the host, and it cannot write a host
/// root's file that root without the option could. Nobody still works
/// (host id base+65534); the task's limits, kill and exit status work as
/// without. Without the option (the control) the same probes see the
/// host's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaces_make_root_an_unprivileged_host_user() -> Result<()> {
    for on in [true, false] {
        let shared = mezzo_tests::shared_dir("mezzo-userns-")?;
        std::fs::write(shared.path().join("root-file"), "host root's\n")?;
        let mut args = vec!["--allowed-users", "root"];
        if on {
            args.extend(["--user-namespaces", "--user-namespace-ids", "400000:65536"]);
        }
        let c = Cluster::start(spec(&args)).await?;
        let result = async {
            let (s, mut ev, fid) = fw::subscribe(&c, "userns", None).await?;
            let sandboxes = c.dir.path().join("agent0/sandboxes").join(&fid);
            let script = USERNS_PROBE.replace("SHARED", &shared.path().display().to_string());
            let (map, base, root_file) = if on {
                ("0 400000 65536", 400_000, "root_file: denied")
            } else {
                ("0 0 4294967295", 0, "root_file: ok")
            };
            for (user, uid) in [("root", 0), ("nobody", 65534)] {
                let out = probe_as(&s, &mut ev, &sandboxes, user, &script).await?;
                let mut expected = vec![format!("uid_map: {map}"), format!("id: {uid}"), "sandbox: ok".into()];
                expected.push("shared: ok".into());
                if user == "root" {
                    expected.push(root_file.into());
                }
                for line in expected {
                    ensure!(out.lines().any(|l| l == line), "{user}: no {line:?} in:\n{out}");
                }
                use std::os::unix::fs::MetadataExt;
                for file in [
                    sandboxes.join(format!("probe-{user}")).join("from-task"),
                    shared.path().join(format!("from-{uid}")),
                ] {
                    let owner = std::fs::metadata(&file)?.uid();
                    ensure!(owner == base + uid, "{user}: {} is uid {owner}", file.display());
                }
            }
            if on {
                ensure!(
                    std::fs::read_to_string(shared.path().join("root-file"))? == "host root's\n",
                    "a task's root wrote host root's file"
                );
                user_namespaced_tasks_keep_limits_and_kill(&s, &mut ev).await?;
            }
            Ok(())
        }
        .await;
        result.with_context(|| c.logs())?;
    }
    Ok(())
}

/// On an agent with `--user-namespaces`: the memory limit and kill
/// (nothing left behind). (Images: `images.rs`.)
async fn user_namespaced_tasks_keep_limits_and_kill(s: &mezzo_sdk::Scheduler, ev: &mut fw::Inbox) -> Result<()> {
    let hog = task(
        "hog",
        "cpus:0.1;mem:32",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    )?;
    let sleeper = task("sleeper", "cpus:0.1;mem:32", "exec sleep 271.828")?;
    for t in [hog, sleeper] {
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![t], None).await?;
    }
    let st = ev
        .update("hog", Duration::from_secs(20), TaskState::is_terminal)
        .await?;
    ensure!(
        task_state(&st) == Some(TaskState::Failed)
            && st.reason == v1::StatusReason::ReasonContainerLimitationMemory as i32,
        "{st:?}"
    );
    ev.update("sleeper", Duration::from_secs(10), |s| s == TaskState::Running)
        .await?;
    s.kill("sleeper", Some(Duration::from_millis(200))).await?;
    let st = ev
        .update("sleeper", Duration::from_secs(10), TaskState::is_terminal)
        .await?;
    ensure!(task_state(&st) == Some(TaskState::Killed), "{st:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with("271.828").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(processes_with("271.828").is_empty(), "processes left after the kill");
    Ok(())
}

/// Issue 15: a task user the agent's user namespaces do not map (here
/// nobody, 65534, with a range of ids 0 to 65533) cannot run: an ERROR, not a
/// failure, with the reason; root, which the range maps, runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_user_namespace_range_is_refused() -> Result<()> {
    let args = [
        "--task-user",
        "root",
        "--allowed-users",
        "nobody",
        "--user-namespaces",
        "--user-namespace-ids",
        "400000:65534",
    ];
    let c = Cluster::start(spec(&args)).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "unmapped", None).await?;
        let o = ev.offer().await?;
        let mut t = task("as-nobody", "cpus:0.1;mem:32", "id")?;
        t.command.as_mut().context("command")?.user = "nobody".into();
        s.accept(vec![o.offer_id], vec![t], None).await?;
        let st = ev
            .update("as-nobody", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Error)
                && st.reason == v1::StatusReason::ReasonTaskInvalid as i32
                && st.message.contains("not both mapped"),
            "{st:?}"
        );
        let o = ev.offer().await?;
        s.accept(
            vec![o.offer_id],
            vec![task("as-root", "cpus:0.1;mem:32", "id -u")?],
            None,
        )
        .await?;
        let st = ev
            .update("as-root", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "{st:?}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
