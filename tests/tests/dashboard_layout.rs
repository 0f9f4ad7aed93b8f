//! Issue 21, the dashboard's layout in headless Chromium at 1280 and 1920
//! px wide: on every page nothing overflows the window sideways, no
//! button's text is clipped, and the footer shows the leader; the task
//! page's info table keeps clear of the "Status updates" heading and shows
//! a multi-line command on several lines; task lists, the task page and
//! the reservations name the framework and the agent (hostname) beside
//! their ids.
//! Screenshots go to target/test-artifacts/dashboard-layout/.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_sdk::{Resources, TaskBuilder, TaskState};
use mezzo_tests::browser::{Browser, artifacts_dir};
use mezzo_tests::{Cluster, ClusterSpec, fw};
use serde_json::{Value, json};

/// Measures the shown page: sideways overflow, clipped buttons (by their
/// own box or by an ancestor that hides overflow) and the footer's text.
/// Widths are whole pixels rounded apart, so 1 px over is not a clip (a
/// clipped "Teardown" is tens of pixels over).
const MEASURE: &str = r#"(() => {
  const de = document.documentElement;
  const clipped = [];
  for (const b of document.querySelectorAll("button")) {
    if (b.offsetParent === null) continue;
    const r = b.getBoundingClientRect();
    let cut = b.scrollWidth > b.clientWidth + 1 || r.right > de.clientWidth + 1;
    for (let a = b.parentElement; a && !cut; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== "visible" && r.right > a.getBoundingClientRect().right + 1) cut = true;
    }
    if (cut) clipped.push(b.textContent);
  }
  const wide = [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > de.clientWidth + 1)
    .slice(0, 5).map(e => `${e.tagName}#${e.id}.${e.className}`);
  return { scroll: de.scrollWidth, client: de.clientWidth, inner: innerWidth, clipped, wide,
    footer: document.querySelector("footer").textContent };
})()"#;

/// On the task page: the info table and the heading after it, as
/// rectangles, every info cell inside its table, and the command's shown
/// text.
const TASK_PAGE: &str = r#"(() => {
  const table = document.querySelector("table.kv");
  const heading = [...document.querySelectorAll("h2")].find(h => h.textContent.includes("Status updates"));
  const rect = e => { const r = e.getBoundingClientRect(); return { left: r.left, right: r.right, top: r.top, bottom: r.bottom }; };
  const t = rect(table);
  const spill = [...table.querySelectorAll("td")].filter(td => td.getBoundingClientRect().right > t.right + 1).map(td => td.textContent.slice(0, 40));
  const cmd = [...table.querySelectorAll("tr")].find(tr => tr.cells[0].textContent === "Command");
  return { table: t, heading: rect(heading), spill, command: cmd.cells[1].innerText };
})()"#;

fn overlap(a: &Value, b: &Value) -> bool {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    f(a, "left") < f(b, "right")
        && f(b, "left") < f(a, "right")
        && f(a, "top") < f(b, "bottom")
        && f(b, "top") < f(a, "bottom")
}

/// Loads `url` afresh (not as a hash change), so nothing is left from the
/// page before.
async fn open(b: &mut Browser, url: &str) -> Result<()> {
    b.navigate("about:blank").await?;
    b.navigate(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_at_1280_and_1920_px() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        let shots = artifacts_dir("dashboard-layout")?;
        let (s, mut ev, fid) = fw::subscribe(&c, "layout-framework", None).await?;
        let offer = ev.offer().await?;
        let task = TaskBuilder::new("multi")
            .name("a task with a rather long name to show in the lists")
            .resources(&Resources::parse("cpus:0.1;mem:16")?)
            // Several lines, one of them longer than half a 1280 px window.
            .shell(concat!(
                "echo first line\necho second line\n",
                "test -d \"$MEZZO_SANDBOX\" && echo \"the sandbox is there, and this line is long enough to need more than half the window\"\n",
                "sleep 120"
            ))
            .build();
        s.accept(vec![offer.offer_id], vec![task], Some(0.0)).await?;
        ev.update("multi", Duration::from_secs(20), |st| st == TaskState::Running)
            .await?;
        // A failed task too: more states and a message to lay out.
        let offer = ev.offer().await?;
        let task = TaskBuilder::new("broken")
            .resources(&Resources::parse("cpus:0.1;mem:16")?)
            .shell("echo oops >&2; exit 3")
            .build();
        s.accept(vec![offer.offer_id], vec![task], Some(0.0)).await?;
        ev.update("broken", Duration::from_secs(20), |st| st == TaskState::Failed)
            .await?;
        let agents = c.get(c.master_addr(), "/api/v1/agents").await?;
        let hostnames: Vec<String> = agents["items"]
            .as_array()
            .context("agents")?
            .iter()
            .filter_map(|a| a["hostname"].as_str().map(str::to_owned))
            .collect();
        // A dynamic reservation, shown on the roles page by the agent's hostname.
        let reserved = &agents["items"][0];
        let r = c
            .http()
            .post(c.url(c.master_addr(), "/reserve"))
            .json(&json!({ "agent": reserved["id"], "resources": "cpus(ops):1" }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "reserve: {}", r.text().await?);
        // A persistent volume, listed on the roles page: made by a
        // framework of role db from disk an operator reserved for it (the
        // other framework holds the unreserved resources' offers).
        let r = c
            .http()
            .post(c.url(c.master_addr(), "/reserve"))
            .json(&json!({ "agent": reserved["id"], "resources": "cpus(db):0.1;mem(db):32;disk(db):32" }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "reserve for db: {}", r.text().await?);
        let mut cfg = c.sdk_config("stateful");
        cfg.framework.roles = vec!["db".into()];
        let (db, events) = mezzo_sdk::Scheduler::start(cfg);
        let mut db_ev = fw::Inbox::new(events);
        let o = db_ev.offer().await?;
        let ops = vec![mezzo_sdk::operations::create_volume("pg-data", 32)];
        db.accept_operations(vec![o.offer_id], ops, None).await?;
        c.wait_master("the volume created", |st| st["volumes"][0]["id"] == "pg-data")
            .await?;

        let mut b = Browser::launch().await?;
        let wait = Duration::from_secs(20);
        b.navigate(&c.url(c.master_addr(), "/")).await?;
        b.wait_for("document.getElementById('signin') !== null", wait)
            .await
            .context("sign-in form")?;
        let token = c.issue_token("user:admin").await?;
        b.eval(&format!(
            "document.getElementById('signin-token').value = {}; document.getElementById('signin').requestSubmit(); true",
            Value::from(token)
        ))
        .await?;
        b.wait_for("document.getElementById('agents-count') !== null", wait)
            .await
            .context("signed in")?;

        // The one master leads.
        let shows_leader = format!(
            "document.getElementById('leader').textContent.startsWith({})",
            Value::from(format!("leader {} ", c.master_addr()))
        );
        let pages = [
            "overview".to_owned(),
            "agents".to_owned(),
            "frameworks".to_owned(),
            "tasks".to_owned(),
            format!("task/{fid}/multi"),
            format!("why/framework/{fid}"),
            "roles".to_owned(),
            "masters".to_owned(),
        ];
        // Layout problems, all of them, not only the first.
        let mut problems = Vec::new();
        for width in [1280, 1920] {
            b.call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
            for page in &pages {
                let view = page.split('/').next().unwrap_or_default();
                open(&mut b, &format!("{}#{page}", c.url(c.master_addr(), "/"))).await?;
                b.wait_for(&format!("document.getElementById('main').dataset.view === '{view}'"), wait)
                    .await
                    .with_context(|| format!("{page} at {width} px rendered"))?;
                b.wait_for(&shows_leader, wait)
                    .await
                    .with_context(|| format!("{page} at {width} px: the footer shows the leader"))?;
                b.screenshot(&shots.join(format!("{view}-{width}.png"))).await?;
                let m = b.eval(MEASURE).await?;
                ensure!(m["inner"] == width, "the window is not {width} px wide: {m}");
                if m["scroll"].as_f64().unwrap_or(f64::MAX) > m["client"].as_f64().unwrap_or(0.0) + 1.0 {
                    problems.push(format!("{page} at {width} px overflows sideways: {m}"));
                }
                if m["clipped"] != json!([]) {
                    problems.push(format!("{page} at {width} px clips buttons: {m}"));
                }
            }

            // The task page: no overlap, the command on its lines, names.
            open(&mut b, &format!("{}#task/{fid}/multi", c.url(c.master_addr(), "/"))).await?;
            b.wait_for("document.getElementById('main').dataset.view === 'task'", wait)
                .await?;
            let t = b.eval(TASK_PAGE).await?;
            if overlap(&t["table"], &t["heading"]) {
                problems.push(format!("at {width} px the info table overlaps the heading: {t}"));
            }
            if t["spill"] != json!([]) {
                problems.push(format!("at {width} px info cells spill: {t}"));
            }
            let command = t["command"].as_str().unwrap_or_default();
            if command.lines().count() < 3 || !command.contains("echo second line") {
                problems.push(format!("at {width} px the command is squashed: {command:?}"));
            }
            let info = b.eval("document.querySelector('table.kv').innerText").await?;
            let info = info.as_str().unwrap_or_default();
            ensure!(info.contains("layout-framework"), "task page lacks the framework name: {info}");
            ensure!(
                hostnames.iter().any(|h| info.contains(h.as_str())),
                "task page lacks the agent's hostname ({hostnames:?}): {info}"
            );
            ensure!(
                b.eval(&format!("document.querySelector('table.kv a[href=\"#tasks/framework/{fid}\"]') !== null"))
                    .await?
                    == true,
                "task page: the framework links to its tasks"
            );
        }

        ensure!(problems.is_empty(), "layout problems:\n{}", problems.join("\n"));

        open(&mut b, &format!("{}#roles", c.url(c.master_addr(), "/"))).await?;
        b.wait_for("document.getElementById('main').dataset.view === 'roles'", wait)
            .await?;
        let roles = b.eval("document.getElementById('main').innerText").await?;
        let host = reserved["hostname"].as_str().unwrap_or_default();
        ensure!(
            roles.as_str().is_some_and(|t| t.contains(host)),
            "the roles page lacks the reserved agent's hostname {host}: {roles}"
        );
        ensure!(
            roles.as_str().is_some_and(|t| t.contains("Persistent volumes") && t.contains("pg-data")),
            "the roles page lacks the volume: {roles}"
        );

        // The task list: names beside ids, linking to the filtered lists.
        open(&mut b, &format!("{}#tasks", c.url(c.master_addr(), "/"))).await?;
        b.wait_for("document.querySelector('[data-task-id=\"multi\"]') !== null", wait)
            .await?;
        let row = b
            .eval("document.querySelector('[data-task-id=\"multi\"]').innerText")
            .await?;
        let row = row.as_str().unwrap_or_default();
        ensure!(row.contains("layout-framework"), "task list lacks the framework name: {row}");
        ensure!(
            hostnames.iter().any(|h| row.contains(h.as_str())),
            "task list lacks the agent's hostname: {row}"
        );
        ensure!(row.contains(&fid), "task list lacks the framework id: {row}");
        ensure!(
            b.eval(&format!(
                "document.querySelector('[data-task-id=\"multi\"] a[href=\"#tasks/framework/{fid}\"]') !== null"
            ))
            .await?
                == true,
            "task list: the framework links to its tasks"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
