//! Issue 15: tasks with an OCI image, through a real agent: a layout in
//! the agent's `--image-layouts` directory, or an image pulled from a
//! real registry (Debian's docker-registry, pushed to with skopeo),
//! imported into its store on first use and run as an overlay root
//! (tests run as root).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::v1;
use mezzo_sdk::{Scheduler, SdkError, TaskState, task_state};
use mezzo_tests::oci::{Entry, busybox_layout, noise};
use mezzo_tests::registry::Registry;
use mezzo_tests::{Cluster, ClusterSpec, files_holding, fw};
use serde_json::json;
use tonic::Code;

/// `task` with `image` as its root; `script` empty means no command.
fn with_image(id: &str, image: &str, script: &str) -> v1::TaskInfo {
    let mut t = fw::shell_task(id, script);
    if script.is_empty() {
        t.command = None;
    }
    t.container = Some(Box::new(v1::ContainerInfo {
        image: Some(v1::Image {
            reference: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    t
}

/// A cluster of one agent started with `args`.
async fn one_agent(args: &[&str]) -> Result<Cluster> {
    let mut spec = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    spec.agent_args.extend(args.iter().map(|a| (*a).to_owned()));
    Cluster::start(spec).await
}

/// Waits for each of `ids` to end `TASK_FINISHED` (`sandbox` finds its
/// sandbox, whose stderr the error shows if it does not).
async fn all_finish(ev: &mut fw::Inbox, sandbox: &dyn Fn(&str) -> std::path::PathBuf, ids: &[&str]) -> Result<()> {
    for id in ids {
        let st = ev.update(id, Duration::from_secs(20), TaskState::is_terminal).await?;
        let err = std::fs::read_to_string(sandbox(id).join("stderr")).unwrap_or_default();
        ensure!(task_state(&st) == Some(TaskState::Finished), "{id}: {st:?}\n{err}");
    }
    Ok(())
}

/// Checks that the master refuses a task with the image `reference`
/// (`INVALID_ARGUMENT`, the message saying `why`).
async fn refused(s: &Scheduler, offer_id: &str, reference: &str, why: &str) -> Result<()> {
    match s
        .accept(
            vec![offer_id.to_owned()],
            vec![with_image("bad", reference, "true")],
            None,
        )
        .await
    {
        Err(SdkError::Rejected { code, message }) if code == Code::InvalidArgument && message.contains(why) => Ok(()),
        other => bail!("{reference}: {other:?}"),
    }
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
    let c = one_agent(&["--image-layouts", &layouts.path().display().to_string()]).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "images", None).await?;
        let probe = "cat /etc/os-release; echo $GREETING; id -u; pwd; echo $MEZZO_SANDBOX; \
                     ls /etc/debian_version 2>&1 || true; echo sandboxed > $MEZZO_SANDBOX/out";
        let o = ev.offer().await?;
        refused(&s, &o.offer_id, "oci:../etc", "layout name").await?;
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
        all_finish(&mut ev, &sandbox, &["probe", "default"]).await?;
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

/// Issue 15: with `--user-namespaces` a task runs in its image too: the
/// layers are id-mapped, so the image's files belong to the image's users
/// inside (root's are root's, not `nobody`'s), root in the task writes its
/// own root (and only its own: the image and the store are as they were)
/// and is the agent's unprivileged host id outside (its `uid_map`), and an
/// opaque
/// directory of an upper layer hides the lower one's files (overlayfs in a
/// user namespace reads `user.overlay.opaque`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_in_its_image_in_a_user_namespace() -> Result<()> {
    const BASE: u32 = 1879048192;
    let layouts = tempfile::tempdir()?;
    busybox_layout(
        &layouts.path().join("busybox"),
        "1",
        json!({"Env": ["PATH=/bin"], "User": "app"}),
        &[
            // /etc opaque in the second layer: the base's /etc/group goes.
            Entry::File("etc/.wh..wh..opq", b"", 0o644),
            Entry::File(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\n",
                0o644,
            ),
            Entry::File("etc/os-release", b"ID=mezzo-test\n", 0o644),
        ],
    )?;
    let c = one_agent(&[
        "--image-layouts",
        &layouts.path().display().to_string(),
        "--user-namespaces",
        "--allowed-users",
        "root",
    ])
    .await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "images-userns", None).await?;
        let probe = "id -u; ls /etc | tr '\\n' ' '; echo; ls -ln /bin/busybox | cut -c1-30; cat /proc/self/uid_map";
        let mut as_root = with_image(
            "root",
            "oci:busybox:1",
            "id -u; echo made > /made-by-root && ls -ln /made-by-root; \
             rm /bin/ls && echo x > /etc/os-release && chmod 777 /bin && echo changed its root",
        );
        as_root.command.as_mut().context("command")?.user = "root".into();
        let o = ev.offer().await?;
        s.accept(
            vec![o.offer_id],
            vec![with_image("probe", "oci:busybox:1", probe), as_root],
            None,
        )
        .await?;
        let sandbox = |id: &str| c.dir.path().join("agent0/sandboxes").join(&fid).join(id);
        all_finish(&mut ev, &sandbox, &["probe", "root"]).await?;
        let out = std::fs::read_to_string(sandbox("probe").join("stdout"))?;
        let lines: Vec<&str> = out.lines().collect();
        ensure!(
            lines.len() == 4
                && lines[0] == "1234"
                && lines[1].split_whitespace().any(|f| f == "os-release")
                && !lines[1].split_whitespace().any(|f| f == "group")
                && lines[2].split_whitespace().nth(2) == Some("0")
                && lines[2].split_whitespace().nth(3) == Some("0")
                && lines[3].split_whitespace().collect::<Vec<_>>() == ["0", &BASE.to_string(), "65536"],
            "probe:\n{out}"
        );
        let out = std::fs::read_to_string(sandbox("root").join("stdout"))?;
        let lines: Vec<&str> = out.lines().collect();
        ensure!(
            lines.len() == 3
                && lines[0] == "0"
                && lines[1].split_whitespace().nth(2) == Some("0")
                && lines[2] == "changed its root",
            "root:\n{out}"
        );
        // What root changed was its own: the image and its store are not.
        let o = ev.offer().await?;
        let after = "cat /etc/os-release; ls -ld /bin | cut -c1-10; ls /bin/ls";
        s.accept(
            vec![o.offer_id],
            vec![with_image("after", "oci:busybox:1", after)],
            None,
        )
        .await?;
        all_finish(&mut ev, &sandbox, &["after"]).await?;
        let out = std::fs::read_to_string(sandbox("after").join("stdout"))?;
        ensure!(out == "ID=mezzo-test\ndrwxr-xr-x\n/bin/ls\n", "after:\n{out}");
        let stored = files_holding(&c.dir.path().join("agent0/images"), "ID=mezzo-test");
        ensure!(!stored.is_empty(), "no os-release in the store");
        for f in stored {
            ensure!(std::fs::read(&f)? == b"ID=mezzo-test\n", "{} changed", f.display());
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
    // "big" (4 MiB of noise) could never fit in the 3 MiB store.
    for (seed, name) in ["a", "b", "c", "big"].into_iter().enumerate() {
        let size = if name == "big" { 4 << 20 } else { 1 << 20 };
        let data = noise(size, 0x2545_f491_4f6c_dd1d ^ seed as u64);
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
        // An image larger than the whole store: refused before it is read.
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![run("big1", "oci:big:1", "true")], None)
            .await?;
        let st = ev
            .update("big1", Duration::from_secs(20), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Error)
                && st.message.contains("oci:big:1")
                && st
                    .message
                    .contains("more than this agent's image store may hold (3 MiB"),
            "big1: {st:?}"
        );
        ensure!(
            !recorded("big")? && recorded("c")?,
            "the store changed for an image it refused"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The manifest digest and layer digests of `name:tag` in `registry`.
async fn manifest_of(registry: &Registry, name: &str, tag: &str) -> Result<(String, Vec<String>)> {
    let r = reqwest::Client::new()
        .get(format!("http://{}/v2/{name}/manifests/{tag}", registry.host))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await?
        .error_for_status()?;
    let digest = r
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .context("no Docker-Content-Digest")?
        .to_owned();
    let manifest: serde_json::Value = r.json().await?;
    let layers = mezzo_tests::oci::layer_digests(&manifest)?;
    Ok((digest, layers))
}

/// Images pulled from a registry (plain HTTP, `--insecure-registries`):
/// by tag and by digest, with the image's config honoured as for a
/// layout; tasks of one image launched together make one GET per layer
/// blob (the registry's access log); a missing tag ends the task
/// `TASK_ERROR` naming the reference; a reference without a registry host
/// is refused by the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_in_an_image_pulled_from_a_registry() -> Result<()> {
    let registry = Registry::start().await?;
    let layouts = tempfile::tempdir()?;
    busybox_layout(
        &layouts.path().join("busybox"),
        "1",
        json!({
            "Env": ["PATH=/bin", "GREETING=hello from the registry"],
            "User": "app",
            "WorkingDir": "/work",
        }),
        &[Entry::File("etc/os-release", b"ID=mezzo-registry\n", 0o644)],
    )?;
    busybox_layout(
        &layouts.path().join("fresh"),
        "2",
        json!({ "Env": ["PATH=/bin"] }),
        &[Entry::File("etc/fresh", b"fresh\n", 0o644)],
    )?;
    registry.push(&layouts.path().join("busybox"), "1", "busybox").await?;
    registry.push(&layouts.path().join("fresh"), "2", "team/fresh").await?;
    let (busybox_digest, busybox_layers) = manifest_of(&registry, "busybox", "1").await?;
    let (_, fresh_layers) = manifest_of(&registry, "team/fresh", "2").await?;
    let pushed = registry.log().len();

    let c = one_agent(&["--insecure-registries", &registry.host]).await?;
    let host = registry.host.clone();
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "registry", None).await?;
        let o = ev.offer().await?;
        refused(&s, &o.offer_id, "busybox:1", "no implicit docker.io").await?;
        let probe = "cat /etc/os-release; echo $GREETING; id -u; pwd; echo $MEZZO_SANDBOX";
        let missing = format!("{host}/busybox:nope");
        s.accept(
            vec![o.offer_id],
            vec![
                with_image("fresh-a", &format!("{host}/team/fresh:2"), "cat /etc/fresh"),
                with_image("fresh-b", &format!("{host}/team/fresh:2"), "cat /etc/fresh"),
                with_image("by-tag", &format!("{host}/busybox:1"), probe),
                with_image("by-digest", &format!("{host}/busybox@{busybox_digest}"), probe),
                with_image("missing", &missing, "true"),
            ],
            None,
        )
        .await?;
        let sandbox = |id: &str| c.dir.path().join("agent0/sandboxes").join(&fid).join(id);
        for id in ["fresh-a", "fresh-b", "by-tag", "by-digest"] {
            let st = ev.update(id, Duration::from_secs(60), TaskState::is_terminal).await?;
            let err = std::fs::read_to_string(sandbox(id).join("stderr")).unwrap_or_default();
            ensure!(task_state(&st) == Some(TaskState::Finished), "{id}: {st:?}\n{err}");
        }
        for id in ["fresh-a", "fresh-b"] {
            let out = std::fs::read_to_string(sandbox(id).join("stdout"))?;
            ensure!(out == "fresh\n", "{id}:\n{out}");
        }
        // The download was announced: a STARTING update naming the image
        // and the layer, for whichever of the two tasks pulled it.
        let fresh = format!("pulling image {host}/team/fresh:2: layer sha256:");
        ev.next(Duration::from_secs(5), |e| match e {
            mezzo_sdk::Event::Update(st)
                if st.task_id.starts_with("fresh-")
                    && task_state(st) == Some(TaskState::Starting)
                    && st.message.starts_with(&fresh) =>
            {
                Some(())
            }
            _ => None,
        })
        .await
        .context("no STARTING update announcing the pull")?;
        for id in ["by-tag", "by-digest"] {
            let out = std::fs::read_to_string(sandbox(id).join("stdout"))?;
            ensure!(
                out == "ID=mezzo-registry\nhello from the registry\n1234\n/work\n/mnt/mezzo/sandbox\n",
                "{id}:\n{out}"
            );
        }
        let st = ev
            .update("missing", Duration::from_secs(60), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Error) && st.message.contains(&missing) && st.message.contains("404"),
            "missing: {st:?}"
        );
        // Each layer blob once, though two images share the base layer
        // and two tasks of each were launched together.
        let log = registry.log();
        let pulls = &log[pushed..];
        for (name, layers) in [("busybox", &busybox_layers), ("team/fresh", &fresh_layers)] {
            for layer in layers.iter() {
                let gets = Registry::blob_gets(pulls, name, layer) + Registry::blob_gets(pulls, other(name), layer);
                ensure!(gets == 1, "{name} layer {layer}: {gets} GETs\n{pulls}");
            }
        }
        s.stop().await;
        Ok(())
    }
    .await;
    result.with_context(|| format!("{}\nregistry log:\n{}", c.logs(), registry.log()))
}

/// The other repository of the test, which shares the base layer.
fn other(name: &str) -> &'static str {
    if name == "busybox" { "team/fresh" } else { "busybox" }
}

/// Over HTTPS the agent checks the registry's certificate against the
/// system's roots and `--registry-ca`: without the registry's CA the task
/// ends `TASK_ERROR` on the certificate; with it the image pulls and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_pulls_over_https_trusting_the_registry_ca() -> Result<()> {
    let registry = Registry::start_tls().await?;
    let layouts = tempfile::tempdir()?;
    busybox_layout(
        &layouts.path().join("busybox"),
        "1",
        json!({ "Env": ["PATH=/bin"] }),
        &[Entry::File("etc/os-release", b"ID=mezzo-https\n", 0o644)],
    )?;
    registry.push(&layouts.path().join("busybox"), "1", "busybox").await?;
    let ca = registry.ca.clone().context("no CA")?;
    let image = format!("{}/busybox:1", registry.host);
    for trusted in [false, true] {
        let ca_arg = ca.display().to_string();
        let args = if trusted { &["--registry-ca", &ca_arg][..] } else { &[] };
        let c = one_agent(args).await?;
        let result = async {
            let (s, mut ev, fid) = fw::subscribe(&c, "https", None).await?;
            let o = ev.offer().await?;
            s.accept(
                vec![o.offer_id],
                vec![with_image("tls", &image, "cat /etc/os-release")],
                None,
            )
            .await?;
            let st = ev
                .update("tls", Duration::from_secs(60), TaskState::is_terminal)
                .await?;
            let out = std::fs::read_to_string(c.dir.path().join("agent0/sandboxes").join(&fid).join("tls/stdout"))
                .unwrap_or_default();
            if trusted {
                ensure!(
                    task_state(&st) == Some(TaskState::Finished) && out == "ID=mezzo-https\n",
                    "with the CA: {st:?}\n{out}"
                );
            } else {
                ensure!(
                    task_state(&st) == Some(TaskState::Error)
                        && st.message.contains(&image)
                        && st.message.to_lowercase().contains("certificate"),
                    "without the CA: {st:?}"
                );
            }
            s.stop().await;
            Ok(())
        }
        .await;
        result.with_context(|| format!("{}\nregistry log:\n{}", c.logs(), registry.log()))?;
    }
    Ok(())
}

/// `mezzo secret put * NAME` with `value` on stdin.
async fn put_secret(c: &Cluster, name: &str, value: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = c.command();
    cmd.args(["secret", "put", "*", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(value.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
    ensure!(
        out.status.success(),
        "mezzo secret put {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Issue 15: a private registry (htpasswd over HTTPS, which answers with
/// a Basic challenge). A task naming the secret that holds the login
/// (`mezzo secret put`) pulls and runs its image, and so does `mezzo run
/// --image-credentials`; without credentials the task ends `TASK_ERROR`
/// saying the registry wants them; with a wrong password, that the
/// registry refused the credentials of its secret. The master refuses a
/// framework that sends a credentials value itself, or names a secret its
/// role lacks. The password is in no status message, no `/state` or task
/// detail, no log, and no file of the agent's work dir or runtime dir
/// (its checkpoints) while the task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_pulls_with_credentials_from_the_secrets_store() -> Result<()> {
    const PASSWORD: &str = "PRIVATE-pw-5c1e";
    const WRONG: &str = "WRONG-pw-93ab";
    let registry = Registry::start_private("alice", PASSWORD).await?;
    let layouts = tempfile::tempdir()?;
    busybox_layout(
        &layouts.path().join("private"),
        "1",
        json!({ "Env": ["PATH=/bin"] }),
        &[Entry::File("etc/os-release", b"ID=mezzo-private\n", 0o644)],
    )?;
    registry
        .push(&layouts.path().join("private"), "1", "team/private")
        .await?;
    let ca = registry.ca.clone().context("no CA")?.display().to_string();
    let image = format!("{}/team/private:1", registry.host);
    let c = one_agent(&["--registry-ca", &ca]).await?;
    let result = async {
        put_secret(&c, "regcreds", &format!("alice:{PASSWORD}\n")).await?;
        put_secret(&c, "badcreds", &format!("alice:{WRONG}")).await?;
        let (s, mut ev, fid) = fw::subscribe(&c, "private", None).await?;
        let with_login = |id: &str, secret: &str, script: &str| {
            let mut t = with_image(id, &image, script);
            if let Some(i) = t.container.as_mut().and_then(|c| c.image.as_mut()) {
                i.credentials_secret = secret.into();
            }
            t
        };
        let o = ev.offer().await?;
        // A value from the framework, and a secret the role lacks.
        let mut forged = with_login("forged", "regcreds", "true");
        if let Some(i) = forged.container.as_mut().and_then(|c| c.image.as_mut()) {
            i.credentials = b"alice:forged".to_vec();
        }
        for (task, why) in [
            (forged, "carries credentials"),
            (with_login("nosecret", "missing", "true"), "\"missing\""),
        ] {
            match s.accept(vec![o.offer_id.clone()], vec![task], None).await {
                Err(SdkError::Rejected { code, message }) if code == Code::InvalidArgument && message.contains(why) => {
                }
                other => bail!("{why}: {other:?}"),
            }
        }
        // The offer stays the framework's after a refused accept.
        s.accept(
            vec![o.offer_id],
            vec![
                with_image("anonymous", &image, "true"),
                with_login("wrong", "badcreds", "true"),
                with_login("private", "regcreds", "cat /etc/os-release; sleep 600"),
            ],
            None,
        )
        .await?;
        let mut messages = Vec::new();
        let st = ev
            .update("anonymous", Duration::from_secs(60), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Error)
                && st.message.contains(&image)
                && st.message.contains("wants credentials"),
            "anonymous: {st:?}"
        );
        messages.push(st.message);
        let st = ev
            .update("wrong", Duration::from_secs(60), TaskState::is_terminal)
            .await?;
        ensure!(
            task_state(&st) == Some(TaskState::Error)
                && st.message.contains(&image)
                && st
                    .message
                    .contains("the registry refused the credentials in secret badcreds"),
            "wrong: {st:?}"
        );
        messages.push(st.message);
        let st = ev
            .update("private", Duration::from_secs(60), |s| {
                s == TaskState::Running || s.is_terminal()
            })
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Running), "private: {st:?}");
        let stdout = c.dir.path().join("agent0/sandboxes").join(&fid).join("private/stdout");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&stdout).unwrap_or_default() != "ID=mezzo-private\n" {
            ensure!(std::time::Instant::now() < deadline, "private: no output");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // While it runs, its checkpoint is in the runtime dir.
        ensure!(
            c.runtime_dir(0)
                .join("tasks")
                .join(&fid)
                .join("private/task.pb")
                .exists(),
            "no checkpoint to look in"
        );
        let mut seen = messages.join("\n");
        let master = c.master_addr().to_owned();
        for path in [
            "/state".to_owned(),
            format!("/api/v1/tasks/{fid}/private"),
            format!("/api/v1/tasks/{fid}/wrong"),
        ] {
            seen += &c.text(&master, &path).await?;
        }
        seen += &c.text(&c.agents[0].addr.clone(), "/state").await?;
        for password in [PASSWORD, WRONG] {
            ensure!(!seen.contains(password), "a password showed up:\n{seen}");
            for dir in [c.dir.path().join("agent0"), c.runtime_dir(0)] {
                let found = files_holding(&dir, password);
                ensure!(found.is_empty(), "files holding a password: {found:?}");
            }
        }
        ensure!(seen.contains("secret:badcreds"), "the task detail names the secret");
        // The search does look into the checkpoint, which names the secret.
        ensure!(
            !files_holding(&c.runtime_dir(0), "regcreds").is_empty(),
            "the checkpoint does not name the secret"
        );
        s.kill("private", None).await?;
        ev.update("private", Duration::from_secs(20), TaskState::is_terminal)
            .await?;
        s.stop().await;
        // `mezzo run --image-credentials`.
        let mut cmd = c.command();
        cmd.args([
            "run",
            "--image",
            &image,
            "--image-credentials",
            "regcreds",
            "--shell",
            "--",
        ])
        .arg("cat /etc/os-release")
        .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout == "ID=mezzo-private\n",
            "mezzo run --image-credentials: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let logs = c.logs();
        ensure!(
            !logs.contains(PASSWORD) && !logs.contains(WRONG),
            "a password is in a log"
        );
        Ok(())
    }
    .await;
    result.with_context(|| format!("{}\nregistry log:\n{}", c.logs(), registry.log()))
}

/// `mezzo why TASK` runs the CLI against the cluster and returns stdout.
async fn mezzo_why(c: &Cluster, args: &[&str]) -> Result<String> {
    let mut cmd = c.command();
    cmd.arg("why").args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await??;
    ensure!(
        out.status.success(),
        "mezzo why {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Issue 15: a task whose image pull hangs on a layer (a registry that
/// stalls mid-blob) stays `TASK_STARTING` with the `pulling image`
/// message, and `mezzo why` says it is pulling its image and for how long;
/// for a task that ended on its image (an unreachable registry), `mezzo
/// why` gives the pull error; the dashboard's task list (headless
/// Chromium) shows each task's latest message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mezzo_why_tells_a_pull_in_progress_and_a_failed_one() -> Result<()> {
    let layouts = tempfile::tempdir()?;
    busybox_layout(&layouts.path().join("slow"), "1", json!({ "Env": ["PATH=/bin"] }), &[])?;
    let stalled = mezzo_tests::registry::StalledRegistry::start(&layouts.path().join("slow")).await?;
    let c = one_agent(&["--insecure-registries", &stalled.host]).await?;
    let slow = format!("{}/team/slow:1", stalled.host);
    let broken = "127.0.0.1:1/team/broken:1";
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "pulls", None).await?;
        let o = ev.offer().await?;
        s.accept(
            vec![o.offer_id],
            vec![with_image("slow", &slow, "true"), with_image("broken", broken, "true")],
            None,
        )
        .await?;
        let pulling = format!("pulling image {slow}: layer sha256:");
        ev.next(Duration::from_secs(30), |e| match e {
            mezzo_sdk::Event::Update(st)
                if st.task_id == "slow"
                    && task_state(st) == Some(TaskState::Starting)
                    && st.message.starts_with(&pulling) =>
            {
                Some(())
            }
            _ => None,
        })
        .await
        .context("no STARTING update announcing the pull")?;
        // Then how far the layer is: the registry sent its first bytes.
        ev.next(Duration::from_secs(30), |e| match e {
            mezzo_sdk::Event::Update(st)
                if st.task_id == "slow" && st.message.starts_with(&pulling) && st.message.contains(" B of ") =>
            {
                Some(())
            }
            _ => None,
        })
        .await
        .context("no STARTING update with the layer's bytes")?;
        let st = ev
            .update("broken", Duration::from_secs(30), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Error), "broken: {st:?}");
        // Long enough to count.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let out = mezzo_why(&c, &["slow"]).await?;
        let line = out
            .lines()
            .find(|l| l.contains(&format!("task slow is pulling its image {slow} (for ")))
            .with_context(|| format!("no pulling line:\n{out}"))?;
        let secs: u64 = line
            .split("(for ")
            .nth(1)
            .and_then(|r| r.split('s').next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no duration in {line:?}"))?;
        ensure!(
            (2..30).contains(&secs) && line.contains("; latest: layer sha256:"),
            "{line}"
        );
        let out = mezzo_why(&c, &["broken"]).await?;
        ensure!(
            out.contains(&format!(
                "task broken failed on its image {broken}: registry 127.0.0.1:1:"
            )),
            "broken:\n{out}"
        );
        // The same, typed, for scripts.
        let why: mezzo_master::core::view::WhyTask = serde_json::from_str(&mezzo_why(&c, &["slow", "--json"]).await?)?;
        ensure!(
            why.images.len() == 1 && why.images[0].pulling_since.is_some() && why.images[0].error.is_none(),
            "{why:?}"
        );
        // The dashboard's task list shows each task's latest message.
        let tasks = c.text(c.master_addr(), "/api/v1/tasks?state=active").await?;
        ensure!(tasks.contains(&pulling), "{tasks}");
        let mut b = mezzo_tests::browser::Browser::launch().await?;
        let wait = Duration::from_secs(20);
        b.navigate(&c.url(c.master_addr(), "/")).await?;
        b.wait_for("document.getElementById('signin') !== null", wait).await?;
        let token = serde_json::Value::from(c.issue_token("user:admin").await?);
        b.eval(&format!(
            "document.getElementById('signin-token').value = {token}; document.getElementById('signin').requestSubmit(); true"
        ))
        .await?;
        b.wait_for("document.getElementById('agents-count') !== null", wait).await?;
        b.eval("location.hash = '#tasks'; true").await?;
        for (id, text) in [("slow", pulling.as_str()), ("broken", "Connection refused")] {
            let row = format!("document.querySelector('[data-task-id=\"{id}\"] .message')?.textContent");
            b.wait_for(&format!("({row} || '').includes({})", serde_json::Value::from(text)), wait)
                .await
                .with_context(|| format!("the dashboard's row of {id} lacks {text:?}"))?;
        }
        let shots = mezzo_tests::browser::artifacts_dir("images")?;
        b.screenshot(&shots.join("pulls.png")).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
