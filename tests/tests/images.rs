//! Issue 15: tasks with an OCI image, through a real agent: a layout in
//! the agent's `--image-layouts` directory, imported into its store on
//! first use and run as an overlay root (tests run as root).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::v1;
use mezzo_sdk::{SdkError, TaskState, task_state};
use mezzo_tests::oci::{Entry, busybox_layout};
use mezzo_tests::{Cluster, ClusterSpec, fw};
use serde_json::json;
use tonic::Code;

/// `task` with `image` as its root; `script` empty means no command.
fn with_image(id: &str, image: &str, script: &str) -> v1::TaskInfo {
    let mut t = fw::shell_task(id, script);
    if script.is_empty() {
        t.command = None;
    }
    t.container = Some(v1::ContainerInfo {
        image: Some(v1::Image {
            reference: image.into(),
        }),
        ..Default::default()
    });
    t
}

/// A busybox image honours its `Env`, `User`, `WorkingDir` and, without
/// a command, `Entrypoint` and `Cmd`; the task sees the image's files and
/// not the host's, and its sandbox at `/mnt/mezzo/sandbox`. An image the
/// agent does not have ends the task with `TASK_ERROR` naming it; a bad
/// reference is refused by the master. `mezzo run --image` does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_in_its_image() -> Result<()> {
    let layouts = tempfile::tempdir()?;
    busybox_layout(
        &layouts.path().join("busybox"),
        "1",
        json!({
            "Env": ["PATH=/bin", "GREETING=hello from the image"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo default-cmd; id -u"],
            "User": "app",
            "WorkingDir": "/work",
        }),
        &[Entry::File("etc/os-release", b"ID=mezzo-test\n", 0o644)],
    )?;
    let mut spec = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    spec.agent_args
        .extend(["--image-layouts".to_owned(), layouts.path().display().to_string()]);
    let c = Cluster::start(spec).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "images", None).await?;
        let probe = "cat /etc/os-release; echo $GREETING; id -u; pwd; echo $MEZZO_SANDBOX; \
                     ls /etc/debian_version 2>&1 || true; echo sandboxed > $MEZZO_SANDBOX/out";
        let o = ev.offer().await?;
        match s
            .accept(
                vec![o.offer_id.clone()],
                vec![with_image("bad", "oci:../etc", "true")],
                None,
            )
            .await
        {
            Err(SdkError::Rejected { code, message })
                if code == Code::InvalidArgument && message.contains("layout name") => {}
            other => bail!("a bad reference: {other:?}"),
        }
        s.accept(
            vec![o.offer_id],
            vec![
                with_image("probe", "oci:busybox:1", probe),
                with_image("default", "oci:busybox:1", ""),
                with_image("missing", "oci:nope", "true"),
            ],
            None,
        )
        .await?;
        let sandbox = |id: &str| c.dir.path().join("agent0/sandboxes").join(&fid).join(id);
        for id in ["probe", "default"] {
            let st = ev.update(id, Duration::from_secs(20), TaskState::is_terminal).await?;
            let err = std::fs::read_to_string(sandbox(id).join("stderr")).unwrap_or_default();
            ensure!(task_state(&st) == Some(TaskState::Finished), "{id}: {st:?}\n{err}");
        }
        let out = std::fs::read_to_string(sandbox("probe").join("stdout"))?;
        let lines: Vec<&str> = out.lines().collect();
        ensure!(
            lines.len() == 6
                && lines[0] == "ID=mezzo-test"
                && lines[1] == "hello from the image"
                && lines[2] == "1234"
                && lines[3] == "/work"
                && lines[4] == "/mnt/mezzo/sandbox"
                && lines[5].contains("No such file"),
            "probe:\n{out}"
        );
        ensure!(std::fs::read_to_string(sandbox("probe").join("out"))? == "sandboxed\n");
        let out = std::fs::read_to_string(sandbox("default").join("stdout"))?;
        ensure!(out == "default-cmd\n1234\n", "default:\n{out}");
        let st = ev
            .update("missing", Duration::from_secs(20), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Error)
                && st.reason == v1::StatusReason::ReasonTaskInvalid as i32
                && st.message.contains("oci:nope"),
            "missing: {st:?}"
        );
        s.stop().await;
        // `mezzo run --image`, with a command and with the image's own.
        for (args, expected) in [
            (
                &["--image", "oci:busybox:1", "--shell", "--", "cat /etc/os-release"][..],
                "ID=mezzo-test\n",
            ),
            (&["--image", "oci:busybox:1"][..], "default-cmd\n1234\n"),
        ] {
            let mut cmd = c.command();
            cmd.arg("run").args(args).kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
            let stdout = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success() && stdout == expected,
                "mezzo run {args:?}: {:?}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The manifest digest's hex of the layout's only image.
fn manifest_hex(layout: &std::path::Path) -> Result<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let digest = index["manifests"][0]["digest"].as_str().context("manifest digest")?;
    Ok(digest.trim_start_matches("sha256:").to_owned())
}

/// Issue 15: the agent keeps its image store under `--image-store-max-mib`
/// by removing the least recently used images, but never one a running
/// task uses. Three busybox images share their base layer and each adds
/// 1 MiB of its own; the store may hold 3 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_store_stays_under_its_size_and_keeps_what_runs() -> Result<()> {
    let layouts = tempfile::tempdir()?;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for name in ["a", "b", "c"] {
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let path = format!("data/{name}.bin");
        busybox_layout(
            &layouts.path().join(name),
            "1",
            json!({ "Env": ["PATH=/bin"] }),
            &[Entry::File(&path, &data, 0o644)],
        )?;
    }
    let mut spec = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    spec.agent_args.extend(
        [
            "--image-layouts",
            &layouts.path().display().to_string(),
            "--image-store-max-mib",
            "3",
        ]
        .map(String::from),
    );
    let c = Cluster::start(spec).await?;
    let recorded = |name: &str| -> Result<bool> {
        let hex = manifest_hex(&layouts.path().join(name))?;
        Ok(c.dir
            .path()
            .join("agent0/images/images")
            .join(format!("{hex}.json"))
            .exists())
    };
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "gc", None).await?;
        let run = |id: &'static str, image: &'static str, script: &'static str| with_image(id, image, script);
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![run("keep", "oci:a:1", "sleep 600")], None)
            .await?;
        ev.update("keep", Duration::from_secs(20), |st| st == TaskState::Running)
            .await?;
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![run("b1", "oci:b:1", "true")], None)
            .await?;
        let st = ev.update("b1", Duration::from_secs(20), TaskState::is_terminal).await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "b1: {st:?}");
        // Over the limit, but both are in use when b came in: both kept.
        ensure!(recorded("a")? && recorded("b")?, "an image in use was removed");
        s.kill("keep", None).await?;
        ev.update("keep", Duration::from_secs(20), TaskState::is_terminal)
            .await?;
        // Let the agent drop the ended containers (their leases go with them).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![run("c1", "oci:c:1", "true")], None)
            .await?;
        let st = ev.update("c1", Duration::from_secs(20), TaskState::is_terminal).await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "c1: {st:?}");
        ensure!(
            !recorded("a")? && !recorded("b")? && recorded("c")?,
            "after c: a {} b {} c {}",
            recorded("a")?,
            recorded("b")?,
            recorded("c")?
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
