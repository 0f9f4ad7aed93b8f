//! `mezzo exec`'s wire protocol: a WebSocket from the CLI to the leading
//! master (`/api/v1/tasks/{framework}/{task}/exec`), which opens one to
//! the task's agent (`/containers/{framework}/{task}/exec`) and passes
//! every message on both ways (docs/operator-api.md, "Exec").
//!
//! The command and its terminal are in the query ([`ExecRequest`]). Every
//! message is binary: one channel byte, then the payload, as Kubernetes'
//! `channel.k8s.io` protocol does.

use serde::{Deserialize, Serialize};

/// Client to agent: bytes for the command's stdin; an empty payload
/// closes it (EOF).
pub const STDIN: u8 = 0;
/// Agent to client: the command's stdout (everything, with a terminal).
pub const STDOUT: u8 = 1;
/// Agent to client: the command's stderr (none with a terminal).
pub const STDERR: u8 = 2;
/// Client to agent: the terminal's new size, a [`Resize`] as JSON.
pub const RESIZE: u8 = 3;
/// Agent to client, last: how it ended, an [`ExecEnd`] as JSON.
pub const END: u8 = 4;

/// Longest command line (all arguments), in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What to run, in the query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The argv, as a JSON array of strings (one query parameter).
    pub command: String,
    /// Give it a terminal (a pty), as `docker exec -t`.
    #[serde(default)]
    pub tty: bool,
    /// The terminal's first size.
    #[serde(default)]
    pub cols: u16,
    #[serde(default)]
    pub rows: u16,
}

impl ExecRequest {
    pub fn new(argv: &[String], tty: bool, cols: u16, rows: u16) -> ExecRequest {
        ExecRequest {
            command: serde_json::to_string(argv).unwrap_or_default(),
            tty,
            cols,
            rows,
        }
    }

    /// The argv, or why it is not one.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        if self.command.len() > MAX_COMMAND_BYTES {
            return Err(format!("the command is longer than {MAX_COMMAND_BYTES} bytes"));
        }
        let argv: Vec<String> =
            serde_json::from_str(&self.command).map_err(|e| format!("command is not a JSON array of strings: {e}"))?;
        match argv.first() {
            None => Err("no command given".into()),
            Some(p) if p.is_empty() => Err("the command's program is empty".into()),
            _ if argv.iter().any(|a| a.contains('\0')) => Err("the command contains a NUL byte".into()),
            _ => Ok(argv),
        }
    }

    /// As a query string (its values percent-encoded).
    pub fn query(&self) -> String {
        let mut q = format!("command={}&tty={}", encode(&self.command), self.tty);
        if self.cols > 0 && self.rows > 0 {
            q.push_str(&format!("&cols={}&rows={}", self.cols, self.rows));
        }
        q
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub cols: u16,
    pub rows: u16,
}

/// How the command ended: its exit code (128+N for signal N), or why it
/// could not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEnd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One message: the channel byte, then the payload.
pub fn frame(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(channel);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_and_bad_commands_are_refused() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "echo a&b=c %".to_owned()];
        let r = ExecRequest::new(&argv, true, 80, 24);
        assert_eq!(r.argv().expect("argv"), argv);
        let q = r.query();
        assert!(
            q.starts_with("command=%5B%22sh%22") && q.ends_with("&tty=true&cols=80&rows=24"),
            "{q}"
        );
        for (command, why) in [
            ("[]", "no command"),
            ("[\"\"]", "empty"),
            ("\"ps\"", "JSON array"),
            ("[\"a\\u0000\"]", "NUL"),
        ] {
            let r = ExecRequest {
                command: command.into(),
                tty: false,
                cols: 0,
                rows: 0,
            };
            assert!(r.argv().expect_err(why).contains(why), "{command}");
        }
        let long = ExecRequest::new(&["x".repeat(MAX_COMMAND_BYTES)], false, 0, 0);
        assert!(long.argv().is_err());
    }
}
