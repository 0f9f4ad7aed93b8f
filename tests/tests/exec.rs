//! Issue 19: `mezzo exec` and `mezzo attach` against a real cluster (the
//! CLI, the leader, the agent, the task's container), with a real pty.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mezzo_proto::exec::{ExecRequest, MAX_MESSAGE};
use mezzo_proto::security::ws::{self, WsError};
use mezzo_proto::security::{Credentials, Transport};
use mezzo_sdk::{Resources, TaskBuilder, TaskState, task_state};
use mezzo_tests::{Cluster, ClusterSpec, fw};

/// `mezzo ARGS` as the administrator, or with a bearer token; `stdin` is
/// its input. (exit code, stdout, stderr).
async fn mezzo(c: &Cluster, args: &[&str], token: Option<&str>, stdin: &[u8]) -> Result<(i32, String, String)> {
    let mut cmd = c.command();
    cmd.args(args)
        .env_remove("MEZZO_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("MEZZO_TOKEN", t);
    }
    let mut child = cmd.spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_in_the_task_s_container_only_where_the_acl_allows() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "exec", None).await?;
        let o = ev.offer().await?;
        let task = TaskBuilder::new("box")
            .resources(&Resources::parse("cpus:0.1;mem:64")?)
            .shell("echo started; echo oops >&2; touch here; exec sleep 600")
            .build();
        s.accept(vec![o.offer_id], vec![task], None).await?;
        ev.update("box", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;

        // The task's processes only, in its sandbox, as its user.
        let (code, out, err) = mezzo(
            &c,
            &[
                "exec",
                "box",
                "--",
                "sh",
                "-c",
                "ps -e -o pid=,comm=; pwd; id -u; ls here",
            ],
            None,
            b"",
        )
        .await?;
        ensure!(code == 0, "{code}: {out} {err}");
        let lines: Vec<&str> = out.lines().collect();
        let procs: Vec<&str> = lines.iter().take_while(|l| !l.starts_with('/')).copied().collect();
        ensure!(procs.len() <= 6 && procs.iter().any(|l| l.ends_with("sleep")), "{out}");
        ensure!(!out.contains("systemd") && !out.contains("containerd"), "{out}");
        ensure!(lines.contains(&"65534") && lines.contains(&"here"), "{out}");

        // Confined as the task is, with nothing open but its stdio (ls's
        // own directory aside): no descriptor of the agent's reaches it.
        let probe =
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '; ls /proc/self/fd | wc -l";
        let (code, out, err) = mezzo(&c, &["exec", "box", "--", "sh", "-c", probe], None, b"").await?;
        ensure!(
            code == 0
                && out.lines().map(str::trim).collect::<Vec<_>>()
                    == ["CapEff: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2", "4"],
            "{code}: {out:?} {err}"
        );

        // The exit status comes back; stdin goes in with -i only.
        let (code, _, _) = mezzo(&c, &["exec", "box", "--", "sh", "-c", "exit 3"], None, b"").await?;
        ensure!(code == 3, "exit {code}");
        let (code, out, _) = mezzo(&c, &["exec", "-i", "box", "--", "cat"], None, b"hello\n").await?;
        ensure!(code == 0 && out == "hello\n", "{code}: {out:?}");
        let (code, out, _) = mezzo(&c, &["exec", "box", "--", "cat"], None, b"hello\n").await?;
        ensure!(code == 0 && out.is_empty(), "{code}: {out:?}");

        // A client that goes away takes its command with it.
        let mut gone = c.command();
        gone.args(["exec", "box", "--", "sleep", "314.159"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut gone = gone.spawn()?;
        let running = |marker: &str| {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .any(|cmd| {
                    String::from_utf8_lossy(&cmd).contains(marker) && !String::from_utf8_lossy(&cmd).contains("exec")
                })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running("314.159") {
            ensure!(Instant::now() < deadline, "the exec'd sleep never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gone.kill().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running("314.159") {
            ensure!(Instant::now() < deadline, "the command outlived its client");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Bad input: an unknown task, a missing program.
        let (code, _, err) = mezzo(&c, &["exec", "nope", "--", "true"], None, b"").await?;
        ensure!(code == 2, "{code}: {err}");
        let (code, _, err) = mezzo(&c, &["exec", "box", "--", "/no/such/program"], None, b"").await?;
        ensure!(code == 127 && err.contains("/no/such/program"), "{code}: {err}");

        // Without the ACL's exec_task, refused (reading the cluster is not
        // enough); with it, allowed.
        let token = c.issue_token("user:ops").await?;
        c.allow("user:ops", &["read", "read_sandbox", "kill_task"], "*").await?;
        let (code, _, err) = mezzo(&c, &["exec", "box", "--", "true"], Some(&token), b"").await?;
        ensure!(code == 3 && err.contains("exec_task"), "{code}: {err}");
        c.allow("user:ops", &["exec_task"], "*").await?;
        let (code, out, err) = mezzo(&c, &["exec", "box", "--", "echo", "ok"], Some(&token), b"").await?;
        ensure!(code == 0 && out == "ok\n", "{code}: {out} {err}");

        // Without a credential the leader refuses the WebSocket (401);
        // the agent's own endpoint answers masters only, not a user with
        // the right (403).
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        let anonymous = Transport::Tls(Credentials::new(&ca)?);
        let ops = Transport::Tls(Credentials::new(&ca)?.with_token(token.as_str()));
        let query = ExecRequest::new(&["true".to_owned()], false, 0, 0).query();
        let refused = |r: Result<ws::Socket, WsError>| match r {
            Err(WsError::Refused { status, .. }) => Ok(status),
            other => Err(anyhow::anyhow!("not refused: {:?}", other.map(|_| "a session"))),
        };
        let to_master = ws::connect(
            &anonymous,
            c.master_addr(),
            "master.mezzo",
            &format!("/api/v1/tasks/{fid}/box/exec?{query}"),
            Duration::from_secs(10),
            MAX_MESSAGE,
        )
        .await;
        ensure!(refused(to_master)? == 401, "anonymous exec at the leader");
        let to_agent = ws::connect(
            &ops,
            &c.agents[0].addr,
            &c.agent_name(0)?,
            &format!("/containers/{fid}/box/exec?{query}"),
            Duration::from_secs(10),
            MAX_MESSAGE,
        )
        .await;
        ensure!(refused(to_agent)? == 403, "a user at the agent's exec");

        // A terminal: a real pty on our side, one in the container.
        pty_session(&c)?;

        // attach: the task's own output, until it ends.
        let attach = {
            let mut cmd = c.command();
            cmd.args(["attach", "box"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn()?
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.kill("box", Some(Duration::from_millis(200))).await?;
        let st = ev
            .update("box", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Killed), "{st:?}");
        let out = tokio::time::timeout(Duration::from_secs(20), attach.wait_with_output()).await??;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        ensure!(
            out.status.success() && stdout.contains("started") && stderr.contains("oops"),
            "attach: {:?} {stdout} {stderr}",
            out.status
        );
        // Nothing to exec into any more.
        let (code, _, err) = mezzo(&c, &["exec", "box", "--", "true"], None, b"").await?;
        ensure!(
            code != 0 && (err.contains("not running") || err.contains("no task")),
            "{code}: {err}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// `mezzo exec -i -t box -- sh` on a pty: the shell has a terminal of its
/// own, answers, and its exit status is the CLI's.
fn pty_session(c: &Cluster) -> Result<()> {
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)?;
    let slave = |fd: &OwnedFd| -> Result<Stdio> { Ok(Stdio::from(fd.try_clone()?)) };
    let mut cmd = std::process::Command::new(mezzo_tests::mezzo_bin());
    cmd.envs(c.env())
        .env("MEZZO_MASTER", c.masters().join(","))
        .args(["exec", "-i", "-t", "box", "--", "sh"])
        .stdin(slave(&pty.slave)?)
        .stdout(slave(&pty.slave)?)
        .stderr(slave(&pty.slave)?);
    let mut child = cmd.spawn()?;
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reader = master.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |want: &str| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !seen.contains(want) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .context(format!("no {want:?} in {seen:?}"))?;
            if let Ok(b) = rx.recv_timeout(left) {
                seen.push_str(&String::from_utf8_lossy(&b));
            }
        }
        Ok(())
    };
    // A terminal, of this one's size.
    master.write_all(b"test -t 0 && echo IS$((6*7))TTY; echo SIZE $(stty size)\n")?;
    wait_for("IS42TTY")?;
    wait_for("SIZE 30 100")?;
    master.write_all(b"exit 5\n")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        ensure!(Instant::now() < deadline, "mezzo exec -t did not end: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(status.code() == Some(5), "{status:?}: {seen:?}");
    Ok(())
}
