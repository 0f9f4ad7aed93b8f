// Mezzo dashboard: plain JS, no build step. Every view reads one paged
// endpoint of the operator API (/api/v1/...) and is redrawn when the event
// stream (/api/v1/events) reports a change, at most every REFRESH_MS.
// The session is a cookie set by POST /ui/login with a bearer token; a
// 401 shows the sign-in form instead of the view.
"use strict";

const REFRESH_MS = 500;
const PAGE = 50;
const main = document.getElementById("main");
const state = { view: "overview", args: [], taskFilter: { state: "", framework: "", agent: "", q: "", offset: 0 }, tail: null };

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
const enc = encodeURIComponent;
function fmtRes(r) { return r ? `${r.cpus} cpus · ${r.mem} MiB · ${r.disk} MiB disk` : ""; }
function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 60 ? `${s.toFixed(0)}s ago` : s < 3600 ? `${(s / 60).toFixed(0)}m ago` : `${(s / 3600).toFixed(1)}h ago`;
}
function reason(r) { return r === "REASON_UNSPECIFIED" ? "" : r; }
// A reason as HTML that may break after its underscores, to fit narrow columns.
function reasonHtml(r) { return esc(reason(r)).replace(/_/g, "_<wbr>"); }
function pct(a, b) { return b > 0 ? Math.min(100, (100 * a) / b) : 0; }
// A framework or an agent as people know it: its name (an agent's is its
// hostname), linking to its tasks, over its id, which alone is a UUID.
function who(kind, id, name) {
  return `<a href="#tasks/${kind}/${enc(id)}">${esc(name || "(unknown)")}</a><br><code class="muted id">${esc(id)}</code>`;
}

class SignedOut extends Error {}
let signedOut = false;

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (r.status === 401) { signedOut = true; throw new SignedOut("sign in"); }
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) {}
    throw new Error(`${r.status}: ${msg}`);
  }
  return r.json();
}

// ---- views ---------------------------------------------------------------

function bar(label, res, key) {
  const total = res.total[key], alloc = res.allocated[key], off = res.offered[key], idle = res.idle[key];
  return `<div class="card"><div class="label">${label}</div>
    <div class="big">${esc(alloc)} <span class="muted" style="font-size:14px">/ ${esc(total)}</span></div>
    <div class="bar"><span class="alloc" style="width:${pct(alloc, total)}%"></span><span class="offer" style="width:${pct(off, total)}%"></span></div>
    <div class="legend">allocated ${esc(alloc)} · offered ${esc(off)} · idle ${esc(idle)}</div></div>`;
}

function chart(samples, used, total, label) {
  const w = 600, h = 120;
  if (!samples.length) return `<svg class="chart" viewBox="0 0 ${w} ${h}"><text x="10" y="20" fill="#8593a3" font-size="12">${label}: collecting samples…</text></svg>`;
  const t0 = Date.now() / 1000 - 3600;
  const max = Math.max(1, ...samples.map(s => s[total]));
  const pts = key => samples.map(s => `${(((s.at - t0) / 3600) * w).toFixed(1)},${(h - 10 - (s[key] / max) * (h - 30)).toFixed(1)}`).join(" ");
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">
    <text x="8" y="14" fill="#8593a3" font-size="11">${label} — last hour (max ${max})</text>
    <polyline fill="none" stroke="#26313d" stroke-width="1.5" points="${pts(total)}"/>
    <polyline fill="none" stroke="#4fb3ff" stroke-width="2" points="${pts(used)}"/></svg>`;
}

async function viewOverview() {
  const o = await api("/api/v1/overview");
  const r = o.resources;
  const states = Object.entries(o.tasks_by_state).map(([s, n]) => `<tr><td class="state ${esc(s)}">${esc(s)}</td><td>${n}</td></tr>`).join("");
  const roles = Object.entries(o.per_role).map(([role, res]) => `<tr><td>${esc(role)}</td><td>${esc(fmtRes(res))}</td></tr>`).join("");
  const agents = Object.entries(o.agents_by_status).filter(([, n]) => n > 0).map(([s, n]) => `<span class="${esc(s)}">${n} ${esc(s)}</span>`).join(" · ");
  return `<div class="cards">
      <div class="card"><div class="label">Agents</div><div class="big" id="agents-count">${o.agents}</div><div class="legend">${agents}</div></div>
      <div class="card"><div class="label">Active tasks</div><div class="big" id="tasks-count">${o.active_tasks}</div><div class="legend">${o.unacknowledged_updates} updates awaiting ack</div></div>
      <div class="card"><div class="label">Frameworks</div><div class="big" id="frameworks-count">${o.frameworks}</div><div class="legend">${o.frameworks_connected} connected · ${o.outstanding_offers} offers out</div></div>
    </div>
    <h2>Resources</h2>
    <div class="cards">${bar("CPUs", r, "cpus")}${bar("Memory (MiB)", r, "mem")}${bar("Disk (MiB)", r, "disk")}</div>
    <h2>Utilisation</h2>
    <div class="grid2">${chart(o.samples, "cpus_allocated", "cpus_total", "CPUs allocated")}${chart(o.samples, "mem_allocated", "mem_total", "Memory allocated (MiB)")}</div>
    <div class="grid2"><div><h2>Tasks by state</h2><table>${states || "<tr><td class=muted>no tasks</td></tr>"}</table></div>
    <div><h2>Allocation per role</h2><table>${roles || "<tr><td class=muted>no frameworks</td></tr>"}</table></div></div>`;
}

// ---- sign-in ---------------------------------------------------------------

function signInForm() {
  return `<form id="signin" class="card" style="max-width:520px">
    <div class="label">Sign in</div>
    <p class="muted">Paste a token: <code>mezzo dashboard</code> prints one.</p>
    <input id="signin-token" type="password" autocomplete="off" placeholder="mzt.…" style="width:100%">
    <p><button type="submit">Sign in</button></p><p id="signin-error" class="hint" hidden></p></form>`;
}
function bindSignIn() {
  document.getElementById("signin").onsubmit = async ev => {
    ev.preventDefault();
    const token = document.getElementById("signin-token").value.trim();
    const r = await fetch("/ui/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
    if (r.ok) { location.reload(); return; }
    const err = document.getElementById("signin-error");
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) {}
    err.textContent = msg; err.hidden = false;
  };
}

// Operator actions go with the session cookie; the master checks the ACL.
async function action(path, body, what) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  if (r.status === 401) { signedOut = true; render(true); return; }
  if (!r.ok) { alert(what + " refused: " + (await r.text())); return; }
  schedule();
}
window.mezzoDrain = id => {
  const d = prompt("Kill remaining tasks after how many seconds? (empty: let them finish)", "");
  if (d === null) return;
  action(`/api/v1/agents/${enc(id)}/drain`, d ? { deadline_secs: Number(d) } : {}, "drain");
};
window.mezzoReactivate = id => action(`/api/v1/agents/${enc(id)}/reactivate`, {}, "reactivate");
window.mezzoTeardown = id => confirm(`Tear down framework ${id} and kill its tasks?`) && action(`/api/v1/frameworks/${enc(id)}/teardown`, {}, "teardown");
window.mezzoKill = (f, t) => confirm(`Kill task ${t}?`) && action(`/api/v1/tasks/${enc(f)}/${enc(t)}/kill`, {}, "kill");

async function viewAgents() {
  const p = await api(`/api/v1/agents?limit=1000`);
  const rows = p.items.map(a => `<tr data-agent-id="${esc(a.id)}">
    <td>${who("agent", a.id, a.hostname)}</td>
    <td class="${a.draining ? "draining" : esc(a.status)}">${a.draining ? "draining" : esc(a.status)}</td>
    <td>${a.used.cpus} / ${a.total.cpus}</td><td>${a.used.mem} / ${a.total.mem}</td><td>${a.used.disk} / ${a.total.disk}</td>
    <td>${a.offered.cpus} cpus</td><td>${a.active_tasks}</td>
    <td>${a.usage.containers ? `${a.usage.containers} ctr · ${a.usage.cpu_time_secs.toFixed(1)} cpu-s · ${(a.usage.memory_rss_bytes / 1048576).toFixed(0)} MiB rss · ${a.usage.pids} pids` : "–"}</td>
    <td>${esc(a.attributes.map(([k, v]) => k + "=" + v).join(", "))}</td>
    <td>${a.draining ? `<button onclick="mezzoReactivate('${esc(a.id)}')">Reactivate</button>` : `<button onclick="mezzoDrain('${esc(a.id)}')">Drain</button>`}</td></tr>`).join("");
  return `<h2>Agents (${p.total})</h2><table><tr><th>Agent</th><th>State</th><th>CPUs used</th><th>Mem used</th><th>Disk used</th><th>Offered</th><th>Tasks</th><th>Usage (containers)</th><th>Attributes</th><th></th></tr>${rows}</table>`;
}

async function viewFrameworks() {
  const p = await api(`/api/v1/frameworks?limit=1000`);
  const rows = p.items.map(f => `<tr data-framework-id="${esc(f.id)}">
    <td>${who("framework", f.id, f.name)}</td>
    <td>${esc(f.roles.join(", ") || "*")}</td><td class="${f.connected ? "active" : "disconnected"}">${f.removed_at ? `removed ${ago(f.removed_at)}` : f.connected ? "connected" : "disconnected"}${f.suppressed ? " · suppressed" : ""}</td>
    <td>${(f.dominant_share * 100).toFixed(1)}%</td><td>${esc(fmtRes(f.allocated))}</td>
    <td>${f.offers.received} / ${f.offers.declined} / ${f.offers.accepted}</td><td>${ago(f.offers.last_offer_at)}</td>
    <td>${Object.entries(f.tasks_by_state).map(([s, n]) => `<span class="state ${esc(s)}">${n} ${esc(s.replace("TASK_", "").toLowerCase())}</span>`).join(" ")}</td>
    <td>${f.pending_tasks ? `<a href="#why/framework/${enc(f.id)}">${f.pending_tasks} pending</a>` : `<a href="#why/framework/${enc(f.id)}">why?</a>`}</td>
    <td>${f.removed_at ? "" : `<button onclick="mezzoTeardown('${esc(f.id)}')">Teardown</button>`}</td></tr>`).join("");
  return `<h2>Frameworks (${p.total})</h2><table><tr><th>Framework</th><th>Roles</th><th>State</th><th>Dominant share</th><th>Allocated</th><th>Offers recv/decl/acc</th><th>Last offer</th><th>Tasks</th><th>Waiting</th><th></th></tr>${rows}</table>`;
}

/** A running task's health check verdict, if it has one. */
function health(t) {
  if (t.state !== "TASK_RUNNING" || t.healthy === undefined || t.healthy === null) return "";
  return t.healthy ? `<div class="small">healthy</div>` : `<div class="small unhealthy">unhealthy</div>`;
}

async function viewTasks() {
  const f = state.taskFilter;
  const qs = new URLSearchParams({ limit: PAGE, offset: f.offset });
  for (const k of ["state", "framework", "agent", "q"]) if (f[k]) qs.set(k, f[k]);
  const p = await api(`/api/v1/tasks?${qs}`);
  const rows = p.items.map(t => `<tr data-task-id="${esc(t.id)}">
    <td><a href="#task/${enc(t.framework_id)}/${enc(t.id)}">${esc(t.id)}</a><br><a class="small" href="#task/${enc(t.framework_id)}/${enc(t.id)}">sandbox</a></td><td>${esc(t.name)}</td>
    <td class="state ${esc(t.state)}">${esc(t.state)}${health(t)}</td><td class="muted">${reasonHtml(t.reason)}${t.message ? `<div class="message" title="${esc(t.message)}">${esc(t.message)}</div>` : ""}</td>
    <td>${who("framework", t.framework_id, t.framework_name)}</td><td>${who("agent", t.agent_id, t.agent_hostname)}</td>
    <td>${t.exit_code ?? ""}</td>
    <td>${t.resources.cpus} cpus<br>${t.resources.mem} MiB</td><td>${ago(t.launched_at)}</td><td>${t.ended_at ? ago(t.ended_at) : ""}</td></tr>`).join("");
  const states = ["", "active", "terminal", "staging", "starting", "running", "killing", "finished", "failed", "killed", "lost", "unreachable", "gone", "error", "dropped"];
  return `<h2>Tasks (<span id="tasks-total">${p.total}</span>)</h2>
    <div class="filters">
      <select id="f-state">${states.map(s => `<option value="${s}" ${s === f.state ? "selected" : ""}>${s || "any state"}</option>`).join("")}</select>
      <input id="f-framework" placeholder="framework id" value="${esc(f.framework)}">
      <input id="f-agent" placeholder="agent id" value="${esc(f.agent)}">
      <input id="f-q" placeholder="task id or name contains" value="${esc(f.q)}">
      <button id="f-apply">Filter</button>
    </div>
    <table id="tasks-table"><tr><th>Task</th><th>Name</th><th>State</th><th>Reason, latest message</th><th>Framework</th><th>Agent</th><th>Exit</th><th>Resources</th><th>Launched</th><th>Ended</th></tr>${rows}</table>
    <div class="pager"><button id="p-prev" ${f.offset === 0 ? "disabled" : ""}>‹ Prev</button>
      <span class="muted">${p.total ? f.offset + 1 : 0}–${Math.min(f.offset + PAGE, p.total)} of ${p.total}</span>
      <button id="p-next" ${f.offset + PAGE >= p.total ? "disabled" : ""}>Next ›</button></div>`;
}

function bindTasks() {
  const f = state.taskFilter;
  const apply = () => {
    f.state = document.getElementById("f-state").value;
    f.framework = document.getElementById("f-framework").value.trim();
    f.agent = document.getElementById("f-agent").value.trim();
    f.q = document.getElementById("f-q").value.trim();
    f.offset = 0;
    render();
  };
  document.getElementById("f-apply").onclick = apply;
  for (const id of ["f-framework", "f-agent", "f-q"]) document.getElementById(id).onkeydown = e => e.key === "Enter" && apply();
  document.getElementById("f-state").onchange = apply;
  document.getElementById("p-prev").onclick = () => { f.offset = Math.max(0, f.offset - PAGE); render(); };
  document.getElementById("p-next").onclick = () => { f.offset += PAGE; render(); };
}

async function sandboxRows(fid, tid) {
  try {
    const l = await api(`/api/v1/tasks/${enc(fid)}/${enc(tid)}/files/browse?path=.`);
    return l.entries.map(e => `<tr><td>${e.kind === "file" ? `<a href="javascript:void(0)" onclick="mezzoTail('${esc(e.name)}')">${esc(e.name)}</a>` : esc(e.name)}</td><td>${esc(e.kind)}</td><td>${e.size}</td></tr>`).join("");
  } catch (e) { return `<tr><td class="muted">${esc(e.message)}</td></tr>`; }
}
function historyRows(t) {
  return t.history.map(h => `<tr><td>${new Date(h.at * 1000).toLocaleTimeString()}</td><td class="state ${esc(h.state)}">${esc(h.state)}</td><td>${reasonHtml(h.reason)}</td><td>${esc(h.message)}</td></tr>`).join("");
}
// Redraws the parts of an open task view that change, keeping the log tail.
async function refreshTask(fid, tid) {
  const t = await api(`/api/v1/tasks/${enc(fid)}/${enc(tid)}`);
  const files = await sandboxRows(fid, tid);
  const h = document.getElementById("history"), s = document.getElementById("sandbox"), st = document.getElementById("task-state");
  if (h) h.innerHTML = historyRows(t);
  if (s) s.innerHTML = files;
  if (st) { st.textContent = t.state; st.className = "state " + t.state; }
}

async function viewTask(fid, tid) {
  const t = await api(`/api/v1/tasks/${enc(fid)}/${enc(tid)}`);
  const files = await sandboxRows(fid, tid);
  const hist = historyRows(t);
  return `<h2>Task ${esc(t.id)} <span id="task-state" class="state ${esc(t.state)}">${esc(t.state)}</span>${health(t)}
      ${["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"].includes(t.state) ? `<button onclick="mezzoKill('${esc(fid)}','${esc(tid)}')">Kill</button>` : ""}</h2>
    <div class="grid2"><table class="kv">
      <tr><td>Name</td><td>${esc(t.name)}</td></tr><tr><td>Framework</td><td>${who("framework", t.framework_id, t.framework_name)}</td></tr>
      <tr><td>Agent</td><td>${who("agent", t.agent_id, t.agent_hostname)} <span class="muted">${esc(t.agent_http_address || "")}</span></td></tr>
      <tr><td>Reason</td><td>${reasonHtml(t.reason)} ${esc(t.message)}</td></tr><tr><td>Exit code</td><td>${esc(t.exit_code ?? "")}</td></tr>
      <tr><td>Resources</td><td>${esc(fmtRes(t.resources))}</td></tr>
      <tr><td>Usage</td><td>${t.usage ? `${t.usage.cpu_time_secs.toFixed(2)} cpu-s · ${(t.usage.memory_rss_bytes / 1048576).toFixed(1)} MiB rss · ${(t.usage.memory_cache_bytes / 1048576).toFixed(1)} MiB cache · ${t.usage.pids} pids` : "–"}</td></tr><tr><td>Command</td><td><pre class="cmd">${esc([t.command, ...t.arguments].join(" "))}</pre></td></tr>
      <tr><td>Environment</td><td>${t.environment ? esc(Object.keys(t.environment).join(", ")) : '<span class="muted">hidden (needs view_environment)</span>'}</td></tr>
      ${t.image ? `<tr><td>Image</td><td><code>${esc(t.image)}</code>${t.image_credentials ? ` <span class="muted">pulled with ${esc(t.image_credentials)}</span>` : ""}</td></tr>` : ""}
    </table><div><h2 class="top">Status updates</h2><table id="history">${hist}</table></div></div>
    <h2>Sandbox</h2><table id="sandbox">${files}</table>
    <h2>Log: <span id="log-name">stdout</span></h2><pre class="log" id="log"></pre>`;
}

// Follows one file of the open task's sandbox, appending as it grows.
function startTail(fid, tid, name) {
  stopTail();
  const tail = { fid, tid, name, offset: null, timer: null };
  state.tail = tail;
  const pre = document.getElementById("log");
  document.getElementById("log-name").textContent = name;
  pre.textContent = "";
  const step = async () => {
    if (state.tail !== tail) return;
    try {
      const q = tail.offset === null ? "tail=65536" : `offset=${tail.offset}&length=262144`;
      const c = await api(`/api/v1/tasks/${enc(fid)}/${enc(tid)}/files/read?path=${enc(name)}&${q}`);
      if (c.length > 0) {
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent += c.data;
        if (stick) pre.scrollTop = pre.scrollHeight;
      }
      tail.offset = c.offset + c.length;
    } catch (e) {
      if (tail.offset === null) pre.textContent = e.message;
    }
    tail.timer = setTimeout(step, 1000);
  };
  step();
}
function stopTail() { if (state.tail) clearTimeout(state.tail.timer); state.tail = null; }
window.mezzoTail = name => startTail(state.args[0], state.args[1], name);

async function viewWhy(fid) {
  const w = await api(`/api/v1/why/framework/${enc(fid)}`);
  const pend = (w.pending ? w.pending.tasks : []).map(t => `<tr><td>${esc(t.task_id)}</td><td>${esc(t.reason)}</td><td>${esc(fmtRes(t.resources))}</td></tr>`).join("");
  return `<h2>Why is ${esc(w.name)} waiting?</h2>
    ${w.hints.map(h => `<div class="hint">${esc(h)}</div>`).join("")}
    <table class="kv"><tr><td>Offers received / declined / accepted</td><td>${w.offers.received} / ${w.offers.declined} / ${w.offers.accepted}</td></tr>
      <tr><td>Last offer</td><td>${ago(w.offers.last_offer_at)}</td></tr><tr><td>Largest offer</td><td>${esc(fmtRes(w.offers.largest_offer))}</td></tr>
      <tr><td>Largest free agent now</td><td>${esc(fmtRes(w.largest_free_agent))}</td></tr><tr><td>Filtered agents</td><td>${w.filtered_agents}</td></tr></table>
    <h2>Reported waiting tasks ${w.pending ? `<span class="muted">(${ago(w.pending.reported_at)})</span>` : ""}</h2>
    <table><tr><th>Task</th><th>Reason</th><th>Needs</th></tr>${pend || '<tr><td class="muted">the framework reported none</td></tr>'}</table>`;
}

async function viewRoles() {
  const r = await api("/api/v1/roles");
  // Reservations are by agent id: their hostnames come from the agent list.
  const hosts = Object.keys(r.reservations).length ? new Map((await api("/api/v1/agents?limit=1000")).items.map(a => [a.id, a.hostname])) : new Map();
  const some = res => res && Object.entries(res).some(([k, v]) => (k === "ports" ? v && v !== "[]" : v > 0));
  const quota = x => [some(x.guarantee) ? `guarantee ${fmtRes(x.guarantee)}` : "", some(x.limit) ? `limit ${fmtRes(x.limit)}` : ""].filter(Boolean).join("; ");
  const rows = r.roles.map(x => `<tr><td>${esc(x.role)}</td><td>${esc(x.weight)}</td><td>${esc(quota(x))}</td><td>${x.frameworks.length}</td><td>${esc(fmtRes(x.allocated))}</td><td>${esc(fmtRes(x.offered))}</td><td>${(x.dominant_share * 100).toFixed(1)}%</td></tr>`).join("");
  const rsv = Object.entries(r.reservations).map(([agent, res]) => `<tr><td>${who("agent", agent, hosts.get(agent))}</td><td>${esc(res)}</td></tr>`).join("");
  const vols = (await api("/api/v1/volumes")).map(v => `<tr><td>${esc(v.id)}</td><td>${who("agent", v.agent_id, v.hostname)}</td><td>${esc(v.role)}</td>
    <td>${esc(v.disk_mib)} MiB</td><td>${v.used_by ? `${esc(v.used_by.task_id)} <span class="muted">(${esc(v.used_by.framework_id)})</span>` : '<span class="muted">free</span>'}</td><td>${esc(v.principal)}</td></tr>`).join("");
  return `<h2>Roles</h2><table><tr><th>Role</th><th>Weight</th><th>Quota</th><th>Frameworks</th><th>Allocated</th><th>Offered</th><th>Dominant share</th></tr>${rows}</table>
    <h2>Dynamic reservations</h2>${rsv ? `<table><tr><th>Agent</th><th>Resources</th></tr>${rsv}</table>` : '<p class="muted">None.</p>'}
    <h2>Persistent volumes</h2>${vols ? `<table id="volumes"><tr><th>Volume</th><th>Agent</th><th>Role</th><th>Disk</th><th>Used by</th><th>Created by</th></tr>${vols}</table>` : '<p class="muted">None.</p>'}`;
}

async function viewMasters() {
  const m = await api("/api/v1/masters");
  const raft = m.raft || {};
  const rows = Object.entries(m.members).map(([id, addr]) => `<tr><td>${esc(id)}</td><td>${esc(addr)}</td>
    <td>${Number(id) === raft.leader_id ? '<span class="active">leader</span>' : "follower"}</td><td>${esc((raft.matched || {})[id] ?? "")}</td></tr>`).join("");
  return `<h2>Masters</h2><table class="kv"><tr><td>Raft term</td><td>${raft.term}</td></tr><tr><td>Commit index</td><td>${raft.commit}</td></tr>
    <tr><td>Applied index</td><td>${raft.applied}</td></tr><tr><td>Leader</td><td>${esc(raft.leader || "")}</td></tr></table>
    <h2>Peers</h2><table><tr><th>Id</th><th>Address</th><th>Role</th><th>Match index</th></tr>${rows}</table>`;
}

// Every page's footer names the leader; any master answers /api/v1/masters.
// Failing to, it says so rather than failing the page.
async function showLeader() {
  const footer = document.getElementById("leader");
  try {
    const r = (await api("/api/v1/masters")).raft;
    footer.textContent = r ? `leader ${r.leader || "?"} · term ${r.term} · commit ${r.commit}` : "leader unknown";
  } catch (e) {
    if (e instanceof SignedOut) throw e;
    footer.textContent = "leader unknown";
  }
}

// ---- routing and live updates -------------------------------------------

function route() {
  const parts = location.hash.replace(/^#/, "").split("/").map(decodeURIComponent);
  state.view = parts[0] || "overview";
  state.args = parts.slice(1);
  if (state.view === "tasks" && state.args.length === 2) {
    state.taskFilter = { state: "", framework: "", agent: "", q: "", offset: 0, [state.args[0]]: state.args[1] };
  }
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === state.view);
  delete main.dataset.view;
  stopTail();
  render(true);
}

let rendering = false, again = false;
async function render(first) {
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    // The task view keeps its log tail; only its top part is redrawn.
    // Never redraw under an operator typing a filter.
    const typing = document.activeElement && main.contains(document.activeElement) && /^(INPUT|SELECT)$/.test(document.activeElement.tagName);
    if ((!first && typing) || (!first && signedOut)) return;
    if (state.view === "task" && !first && state.tail) { await refreshTask(state.args[0], state.args[1]); return; }
    const views = {
      overview: viewOverview, agents: viewAgents, frameworks: viewFrameworks, tasks: viewTasks,
      task: () => viewTask(state.args[0], state.args[1]), why: () => viewWhy(state.args[1]), roles: viewRoles, masters: viewMasters,
    };
    const [html] = await Promise.all([(views[state.view] || viewOverview)(), showLeader()]);
    main.innerHTML = html;
    // Which view is drawn, for tests that wait for a page.
    main.dataset.view = views[state.view] ? state.view : "overview";
    if (state.view === "tasks") bindTasks();
    if (state.view === "task") startTail(state.args[0], state.args[1], "stdout");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof SignedOut) { stopTail(); main.innerHTML = signInForm(); bindSignIn(); return; }
    main.innerHTML = `<p class="hint">${esc(e.message)}</p>`;
  } finally {
    rendering = false;
    if (again) { again = false; schedule(); }
  }
}

let pending = null;
function schedule() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; render(false); }, REFRESH_MS);
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/v1/events");
  let failures = 0;
  es.onopen = () => { live.textContent = "live"; live.className = "live on"; failures = 0; };
  es.onmessage = m => {
    let ev = {};
    try { ev = JSON.parse(m.data); } catch (_) {}
    if (ev.type === "leader_changed") { setTimeout(() => location.reload(), 1000); return; }
    if (ev.type !== "hello") schedule();
  };
  es.onerror = () => {
    // Signed out: no stream until the sign-in reloads the page.
    if (signedOut) { es.close(); live.textContent = "signed out"; return; }
    live.textContent = "reconnecting…"; live.className = "live off";
    // A lost leader: reload, and the old master's / sends us to the new one.
    if (++failures > 5) location.reload();
  };
}

window.addEventListener("hashchange", route);
route();
connect();
// Slow refresh as a safety net (figures that change without events, like usage).
setInterval(() => schedule(), 5000);
