//! Issue 7, the web dashboard in headless Chromium against a live cluster:
//! signed out, the page shows a sign-in form and nothing of the cluster; a
//! forged token is refused; the administrator's token signs in (an
//! HttpOnly session cookie); the overview shows the right agent and task
//! counts; a task launched during the test appears without a reload; the
//! sandbox view tails a task's output live. Screenshots go to
//! target/test-artifacts/dashboard/.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_sdk::{Resources, TaskBuilder, TaskState};
use mezzo_tests::browser::{Browser, artifacts_dir};
use mezzo_tests::{Cluster, ClusterSpec, fw};

async fn launch(s: &mezzo_sdk::Scheduler, ev: &mut fw::Inbox, id: &str, script: &str) -> Result<()> {
    let offer = ev.offer().await?;
    let need = Resources::parse("cpus:0.1;mem:16")?;
    let task = TaskBuilder::new(id)
        .name(format!("{id} <b>"))
        .resources(&need)
        .shell(script)
        .build();
    s.accept(vec![offer.offer_id], vec![task], Some(0.0)).await?;
    ev.update(id, Duration::from_secs(20), |st| st == TaskState::Running)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        let shots = artifacts_dir("dashboard")?;
        let (s, mut ev, fid) = fw::subscribe(&c, "dash", None).await?;
        launch(&s, &mut ev, "first", "sleep 120").await?;
        let mut b = Browser::launch().await?;
        let wait = Duration::from_secs(20);

        // Signed out: a sign-in form, no figures.
        b.navigate(&c.url(c.master_addr(), "/")).await?;
        b.wait_for("document.getElementById('signin') !== null", wait)
            .await
            .context("sign-in form")?;
        ensure!(
            b.eval("document.getElementById('agents-count') === null").await? == true,
            "figures shown before signing in"
        );
        b.screenshot(&shots.join("signin.png")).await?;
        let sign_in = |token: &str| {
            format!(
                "document.getElementById('signin-token').value = {}; document.getElementById('signin').requestSubmit(); true",
                serde_json::Value::from(token)
            )
        };
        b.eval(&sign_in("mzt.forged")).await?;
        b.wait_for("document.getElementById('signin-error')?.hidden === false", wait)
            .await
            .context("a forged token is refused")?;
        // The administrator's token signs in; the page reloads itself, and
        // the session cookie is out of the page's reach (HttpOnly).
        let token = c.issue_token("user:admin").await?;
        b.eval(&sign_in(&token)).await?;

        // Overview: 2 agents, 1 active task.
        b.wait_for(
            "document.getElementById('agents-count')?.textContent === '2' && document.getElementById('tasks-count')?.textContent === '1'",
            wait,
        )
        .await
        .context("overview counts")?;
        b.wait_for("document.getElementById('live')?.textContent === 'live'", wait)
            .await
            .context("event stream connected")?;
        b.screenshot(&shots.join("overview.png")).await?;
        let cookies = b.eval("document.cookie").await?;
        ensure!(
            !cookies.as_str().unwrap_or_default().contains("mezzo_token"),
            "the session cookie is readable by scripts: {cookies}"
        );

        // Tasks: a task launched now appears without a reload.
        b.eval("location.hash = '#tasks'; window.__noReload = 42; true").await?;
        b.wait_for("document.querySelector('[data-task-id=\"first\"]') !== null", wait)
            .await
            .context("first task listed")?;
        // The name is shown as text, never as markup.
        let name = b
            .eval("document.querySelector('[data-task-id=\"first\"] td:nth-child(2)').textContent")
            .await?;
        ensure!(name == "first <b>", "{name}");
        launch(&s, &mut ev, "second", "sleep 120").await?;
        b.wait_for("document.querySelector('[data-task-id=\"second\"]') !== null", wait)
            .await
            .context("task launched during the test appears")?;
        ensure!(b.eval("window.__noReload").await? == 42, "the page was reloaded");
        b.eval("location.hash = '#overview'; true").await?;
        b.wait_for("document.getElementById('tasks-count')?.textContent === '2'", wait)
            .await?;
        b.eval("location.hash = '#tasks'; true").await?;
        b.wait_for("document.querySelector('[data-task-id=\"second\"]') !== null", wait)
            .await?;
        b.screenshot(&shots.join("tasks.png")).await?;

        // Sandbox: the log tail shows output as it is written.
        launch(
            &s,
            &mut ev,
            "talker",
            "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo line-$i; sleep 0.2; done",
        )
        .await?;
        b.eval(&format!("location.hash = '#task/{fid}/talker'; true")).await?;
        b.wait_for("document.getElementById('log')?.textContent.includes('line-2')", wait)
            .await
            .context("log tail shows output")?;
        let seen = b
            .eval("Math.max(...(document.getElementById('log').textContent.match(/line-(\\d+)/g) || []).map(l => +l.slice(5)))")
            .await?
            .as_u64()
            .context("line numbers")?;
        let later = format!(
            "document.getElementById('log').textContent.includes('line-{}\\n')",
            seen + 5
        );
        b.wait_for(&later, wait).await.context("log tail follows the file")?;
        b.screenshot(&shots.join("sandbox.png")).await?;
        b.wait_for("document.querySelector('#sandbox')?.textContent.includes('stdout')", wait)
            .await
            .context("sandbox listing")?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
