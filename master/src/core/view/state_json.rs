//! `/state` written as JSON. The task lists are nearly all of it at scale
//! (190 MB of 200 at 400,000 tasks), and serde_json spent most of its
//! second on them escaping the same keys, ids and names again for every
//! task (issue 17: the read took 2.4 s, 1 s of it this). Here each row
//! is written by hand: the keys as constants, the ids and names a task
//! shares with its framework and agent escaped once per snapshot, only
//! its own strings escaped per task. The rest of `/state` goes through
//! serde. A test checks the whole is byte for byte what serde writes for
//! the same [`StateView`].

use std::collections::HashMap;
use std::sync::Arc;

use mezzo_proto::resources::Resources;
use serde::Serialize;

use super::state::{AgentView, FrameworkView, StateSnapshot, StateView, TaskList, borrowed_view};
use crate::core::Task;

/// Written JSON is handed on in buffers of about this many bytes.
const FLUSH_AT: usize = 256 * 1024;

type Result<T = ()> = std::result::Result<T, serde_json::Error>;

/// Where `/state`'s JSON goes: whole buffers, handed over (not copied:
/// the HTTP body sends them as they are).
pub trait JsonSink {
    fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()>;
}

impl<S: JsonSink + ?Sized> JsonSink for &mut S {
    fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        (**self).take(buf)
    }
}

impl JsonSink for Vec<u8> {
    fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        if self.is_empty() {
            *self = buf;
        } else {
            self.extend_from_slice(&buf);
        }
        Ok(())
    }
}

impl StateSnapshot {
    /// `/state` as JSON.
    pub fn to_json(self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_json(&mut out)?;
        Ok(out)
    }

    /// `/state` as JSON, handed to `out` as it is made.
    pub fn write_json(self, out: impl JsonSink) -> Result {
        self.with_lists(|v| write(out, v, None))
    }

    /// [`Self::write_json`] on two cores: with at least `split.from`
    /// running tasks, their second half is written meanwhile on a thread
    /// of its own (the same bytes, handed on after the first half's).
    pub fn write_json_split(self, out: impl JsonSink, split: &Split<'_>) -> Result {
        self.with_lists(|v| write(out, v, Some(split)))
    }
}

/// When and how [`StateSnapshot::write_json_split`] writes on two threads.
pub struct Split<'a> {
    /// The fewest running tasks worth a second thread.
    pub from: usize,
    /// Runs the second thread's work, given to it (to lower the thread's
    /// priority first, or to take its CPU time after, say).
    pub helper: &'a (dyn Fn(&mut dyn FnMut()) + Sync),
}

/// `v` as JSON, in [`StateView`]'s field order.
fn write(
    out: impl JsonSink,
    v: StateView<TaskList<'_>, &[AgentView], &[FrameworkView]>,
    split: Option<&Split<'_>>,
) -> Result {
    let mut w = Writer {
        buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
        out,
    };
    w.buf.push(b'{');
    w.field("master_id", &v.master_id)?;
    w.next("leader", &v.leader)?;
    w.next("uptime_secs", &v.uptime_secs)?;
    w.next("registry_ops_applied", &v.registry_ops_applied)?;
    w.next("totals", &v.totals)?;
    w.key("agents");
    w.seq(v.agents.iter(), value)?;
    w.key("frameworks");
    w.seq(v.frameworks.iter(), value)?;
    let shared = Shared::of(&v.tasks);
    w.key("tasks");
    w.tasks(&v.tasks, &shared, split)?;
    w.key("completed_tasks");
    w.tasks(&v.completed_tasks, &shared, None)?;
    w.next("offers", &v.offers)?;
    w.next("counters", &v.counters)?;
    w.next("allocation", &v.allocation)?;
    w.next("volumes", &v.volumes)?;
    w.buf.push(b'}');
    w.out.take(w.buf).map_err(serde_json::Error::io)
}

/// What consecutive rows often share, kept from the last row: the
/// framework's and the agent's fragment (tasks of one accept follow each
/// other), and the resources' JSON (a framework's tasks tend to ask the
/// same). Comparing is cheaper than hashing ids or writing them again.
#[derive(Default)]
struct Last<'s> {
    framework: Option<(&'s str, &'s [u8])>,
    agent: Option<(&'s str, &'s [u8])>,
    resources: Option<(Resources, Vec<u8>)>,
}

/// What tasks share, escaped once: `"framework_id":…,"framework_name":…`
/// by framework id and `"agent_id":…,"agent_hostname":…` by agent id.
struct Shared<'a> {
    frameworks: HashMap<&'a str, Box<[u8]>, foldhash::fast::RandomState>,
    agents: HashMap<&'a str, Box<[u8]>, foldhash::fast::RandomState>,
}

impl<'a> Shared<'a> {
    fn of(list: &TaskList<'a>) -> Shared<'a> {
        let pair = |k1: &str, v1: &str, k2: &str, v2: &str| {
            let mut b = Vec::with_capacity(32 + v1.len() + v2.len());
            pair(&mut b, k1, v1, k2, v2);
            b.into_boxed_slice()
        };
        let names = list.names;
        Shared {
            frameworks: (names.frameworks.iter())
                .map(|(id, name)| (*id, pair("framework_id", id, "framework_name", name)))
                .collect(),
            agents: (names.hosts.iter())
                .map(|(id, host)| (*id, pair("agent_id", id, "agent_hostname", host)))
                .collect(),
        }
    }
}

/// `"k1":v1,"k2":v2` (strings escaped).
fn pair(buf: &mut Vec<u8>, k1: &str, v1: &str, k2: &str, v2: &str) {
    key(buf, k1);
    string(buf, v1);
    buf.push(b',');
    key(buf, k2);
    string(buf, v2);
}

/// A fragment from `map`, remembered in `last`.
fn fragment<'s>(
    map: &'s HashMap<&str, Box<[u8]>, foldhash::fast::RandomState>,
    last: &mut Option<(&'s str, &'s [u8])>,
    id: &str,
) -> Option<&'s [u8]> {
    match *last {
        Some((l, f)) if l == id => Some(f),
        _ => {
            let (k, f) = map.get_key_value(id)?;
            *last = Some((k, f));
            Some(f)
        }
    }
}

/// `"k":` (keys here are plain words: nothing to escape).
fn key(buf: &mut Vec<u8>, k: &str) {
    buf.push(b'"');
    buf.extend_from_slice(k.as_bytes());
    buf.extend_from_slice(b"\":");
}

/// `s` as a JSON string: copied as it is when nothing in it needs an
/// escape (names, messages and roles nearly always), else by serde_json.
fn string(buf: &mut Vec<u8>, s: &str) {
    // Every byte looked at, not stopping at the first to escape: the
    // loop then runs on whole vectors, and the strings are short.
    let escapes = s
        .bytes()
        .fold(false, |any, b| any | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !escapes {
        plain(buf, s);
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// `s`, known to need no escape (an id's characters are checked when it
/// is made, states and reasons are the protocol's names), as a JSON string.
fn plain(buf: &mut Vec<u8>, s: &str) {
    debug_assert!(
        !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
        "{s:?} needs escaping"
    );
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

fn value<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result {
    serde_json::to_writer(buf, v)
}

struct Writer<W> {
    buf: Vec<u8>,
    out: W,
}

impl<W: JsonSink> Writer<W> {
    fn flush(&mut self) -> Result {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_AT + 64 * 1024));
        self.out.take(full).map_err(serde_json::Error::io)
    }

    fn key(&mut self, k: &str) {
        self.buf.push(b',');
        key(&mut self.buf, k);
    }

    fn field<T: Serialize + ?Sized>(&mut self, k: &str, v: &T) -> Result {
        key(&mut self.buf, k);
        value(&mut self.buf, v)
    }

    fn next<T: Serialize + ?Sized>(&mut self, k: &str, v: &T) -> Result {
        self.buf.push(b',');
        self.field(k, v)
    }

    /// A JSON array of `items`, handed on as it grows.
    fn seq<I>(&mut self, items: impl Iterator<Item = I>, mut each: impl FnMut(&mut Vec<u8>, I) -> Result) -> Result {
        self.buf.push(b'[');
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            each(&mut self.buf, item)?;
            if self.buf.len() >= FLUSH_AT {
                self.flush()?;
            }
        }
        self.buf.push(b']');
        Ok(())
    }

    /// `list` as a JSON array; its second half on a thread of its own if
    /// `split` says so (and that thread can start).
    fn tasks(&mut self, list: &TaskList<'_>, shared: &Shared<'_>, split: Option<&Split<'_>>) -> Result {
        let (first, second, helper) = match split {
            Some(split) if list.tasks.len() >= split.from.max(2) => {
                let (first, second) = list.tasks.split_at(list.tasks.len() / 2);
                (first, second, Some(split.helper))
            }
            _ => (list.tasks, &[][..], None),
        };
        self.buf.push(b'[');
        std::thread::scope(|scope| {
            let helper = helper.and_then(|helper| {
                let write = move || {
                    let mut w = Writer {
                        buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
                        out: Chunks(Vec::new()),
                    };
                    w.rows(second, list, shared, true)?;
                    w.flush()?;
                    Ok::<_, serde_json::Error>(w.out.0)
                };
                let run = move || {
                    let mut written = None;
                    helper(&mut || written = Some(write()));
                    written
                        .unwrap_or_else(|| Err(serde_json::Error::io(std::io::Error::other("the helper did not run"))))
                };
                std::thread::Builder::new()
                    .name("state-writer-2".into())
                    .spawn_scoped(scope, run)
                    .ok()
            });
            self.rows(first, list, shared, false)?;
            match helper {
                Some(h) => {
                    let chunks = h.join().map_err(|_| {
                        serde_json::Error::io(std::io::Error::other("the second /state writer panicked"))
                    })??;
                    self.flush()?;
                    for chunk in chunks {
                        self.out.take(chunk).map_err(serde_json::Error::io)?;
                    }
                    Ok(())
                }
                None => self.rows(second, list, shared, !first.is_empty()),
            }
        })?;
        self.buf.push(b']');
        Ok(())
    }

    /// `tasks` as rows of a JSON array, the first after a comma if `comma`.
    fn rows(&mut self, tasks: &[Arc<Task>], list: &TaskList<'_>, shared: &Shared<'_>, mut comma: bool) -> Result {
        let mut last = Last::default();
        for t in tasks {
            if comma {
                self.buf.push(b',');
            }
            comma = true;
            row(&mut self.buf, t, list, shared, &mut last)?;
            if self.buf.len() >= FLUSH_AT {
                self.flush()?;
            }
        }
        Ok(())
    }
}

/// Buffers kept in order, to be handed on later.
struct Chunks(Vec<Vec<u8>>);

impl JsonSink for Chunks {
    fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        self.0.push(buf);
        Ok(())
    }
}

/// One task, as serde writes its [`super::TaskView`].
fn row<'s>(buf: &mut Vec<u8>, t: &Task, list: &TaskList<'_>, shared: &'s Shared<'_>, last: &mut Last<'s>) -> Result {
    let v = borrowed_view(t, "", "", list.usage_of(t));
    buf.extend_from_slice(b"{\"id\":");
    plain(buf, v.id);
    buf.extend_from_slice(b",\"name\":");
    // Frameworks often name a task by its id.
    if v.name == v.id {
        plain(buf, v.name);
    } else {
        string(buf, v.name);
    }
    buf.push(b',');
    match fragment(&shared.frameworks, &mut last.framework, v.framework_id) {
        Some(f) => buf.extend_from_slice(f),
        None => pair(buf, "framework_id", v.framework_id, "framework_name", ""),
    }
    buf.push(b',');
    match fragment(&shared.agents, &mut last.agent, v.agent_id) {
        Some(a) => buf.extend_from_slice(a),
        None => pair(buf, "agent_id", v.agent_id, "agent_hostname", ""),
    }
    buf.extend_from_slice(b",\"state\":");
    plain(buf, &v.state);
    buf.extend_from_slice(b",\"reason\":");
    plain(buf, v.reason);
    buf.extend_from_slice(b",\"message\":");
    string(buf, v.message);
    buf.extend_from_slice(b",\"exit_code\":");
    value(buf, &v.exit_code)?;
    if let Some(healthy) = v.healthy {
        buf.extend_from_slice(if healthy {
            b",\"healthy\":true"
        } else {
            b",\"healthy\":false"
        });
    }
    buf.extend_from_slice(b",\"role\":");
    string(buf, v.role);
    buf.extend_from_slice(b",\"resources\":");
    match &last.resources {
        Some((r, json)) if *r == v.resources => buf.extend_from_slice(json),
        _ => {
            let mut json = Vec::with_capacity(64);
            value(&mut json, &v.resources)?;
            buf.extend_from_slice(&json);
            last.resources = Some((v.resources, json));
        }
    }
    buf.extend_from_slice(b",\"launched_at\":");
    value(buf, &v.launched_at)?;
    if let Some(ended) = v.ended_at {
        buf.extend_from_slice(b",\"ended_at\":");
        value(buf, &ended)?;
    }
    buf.extend_from_slice(if v.awaiting_ack {
        b",\"awaiting_ack\":true,\"usage\":"
    } else {
        b",\"awaiting_ack\":false,\"usage\":"
    });
    value(buf, &v.usage)?;
    buf.push(b'}');
    Ok(())
}
