//! `mezzo exec` on the agent: `GET /containers/{framework}/{task}/exec`,
//! a WebSocket (only masters reach it: `tls::only_masters`; the master
//! checked the caller's ACL) over which a command runs in the task's
//! container ([`crate::containerizer::Entry`]), with a pty when asked,
//! its stdio passed in messages ([`mezzo_proto::exec`]). The command is
//! killed when the socket closes.

// The pty's size is set with an ioctl, and its fd registered with the
// runtime; each block says why it is sound.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mezzo_proto::exec::{self as wire, ExecEnd, ExecRequest, Resize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containerizer::Entry;
use crate::key::TaskKey;
use crate::task::table::TableHandle;

/// Sessions one agent runs at once.
const MAX_SESSIONS: usize = 64;

#[derive(Clone)]
pub struct ExecState {
    table: TableHandle,
    sessions: std::sync::Arc<tokio::sync::Semaphore>,
}

pub fn router(table: TableHandle) -> Router {
    let state = ExecState {
        table,
        sessions: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS)),
    };
    Router::new()
        .route("/containers/{framework}/{task}/exec", get(exec))
        .with_state(state)
}

async fn exec(
    State(s): State<ExecState>,
    Path((framework, task)): Path<(String, String)>,
    Query(req): Query<ExecRequest>,
    ws: WebSocketUpgrade,
) -> Response {
    let refuse = |code: StatusCode, why: String| (code, why).into_response();
    let key = match TaskKey::parse(&framework, &task) {
        Ok(k) => k,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let argv = match req.argv() {
        Ok(a) => a,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let entry = match s.table.entry(key.clone()).await {
        Ok(Ok(entry)) => entry,
        Ok(Err(why)) => return refuse(StatusCode::NOT_FOUND, why),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Ok(permit) = s.sessions.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this agent runs {MAX_SESSIONS} exec sessions already"),
        );
    };
    ws.max_message_size(wire::MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            // The program only: arguments may hold what must not be logged.
            tracing::info!(task = %key, program = %argv[0], args = argv.len() - 1, tty = req.tty, "exec");
            let end = match session(&mut socket, &entry, &argv, &req).await {
                Ok(code) => ExecEnd {
                    exit_code: Some(code),
                    error: None,
                },
                Err(e) => ExecEnd {
                    exit_code: None,
                    error: Some(e),
                },
            };
            let end = serde_json::to_vec(&end).unwrap_or_default();
            let _ = socket.send(Message::Binary(wire::frame(wire::END, &end).into())).await;
            let _ = socket.send(Message::Close(None)).await;
            drop(permit);
        })
        .into_response()
}

/// Runs the command until it ends (its exit code) or the client goes.
async fn session(socket: &mut WebSocket, entry: &Entry, argv: &[String], req: &ExecRequest) -> Result<i32, String> {
    let mut cmd = entry.command(argv);
    cmd.kill_on_drop(true);
    if req.tty {
        let size = nix::pty::Winsize {
            ws_row: req.rows.max(1),
            ws_col: req.cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).map_err(|e| format!("cannot open a pty: {e}"))?;
        // openpty(3) gives no O_CLOEXEC: another spawn must not inherit
        // this session's terminal (the command gets its end as stdio).
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                .map_err(|e| format!("cannot open a pty: {e}"))?;
        }
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| e.to_string());
        cmd.stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(Stdio::from(pty.slave));
        let mut child = cmd.spawn().map_err(|e| format!("cannot start the command: {e}"))?;
        // The child holds the pty's other end now: EOF (EIO) once it and
        // everything it started are gone.
        drop(cmd);
        let master = Pty::new(pty.master)?;
        pump_pty(socket, &master).await?;
        exit_code(child.wait().await)
    } else {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start the command: {e}"))?;
        // Its own task writes stdin, so that a command busy writing its
        // output while the client sends input never stalls the loop.
        let mut stdin = child.stdin.take().map(stdin_writer);
        let mut out = child.stdout.take().ok_or("no stdout")?;
        let mut err = child.stderr.take().ok_or("no stderr")?;
        let (mut out_open, mut err_open) = (true, true);
        let (mut out_buf, mut err_buf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        let mut ended = None;
        // Until the command has ended and its output is read (a command
        // that closed its output ends the session when it exits).
        while ended.is_none() || out_open || err_open {
            tokio::select! {
                msg = socket.recv() => match client_message(msg)? {
                    Some((wire::STDIN, data)) if data.is_empty() => stdin = None,
                    Some((wire::STDIN, data)) => {
                        // A megabyte of input may wait for a command that
                        // does not read it; past that the client waits.
                        if let Some(s) = &stdin
                            && s.send(data).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    _ => {}
                },
                n = out.read(&mut out_buf), if out_open => {
                    out_open = send_output(socket, wire::STDOUT, &out_buf, n).await?;
                }
                n = err.read(&mut err_buf), if err_open => {
                    err_open = send_output(socket, wire::STDERR, &err_buf, n).await?;
                }
                status = child.wait(), if ended.is_none() => ended = Some(status),
            }
        }
        drop(stdin);
        exit_code(ended.unwrap_or_else(|| Err(std::io::Error::other("no exit status"))))
    }
}

/// Writes what it is sent to the command's stdin, closing it when the
/// sender is dropped.
fn stdin_writer(mut stdin: tokio::process::ChildStdin) -> tokio::sync::mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if stdin.write_all(&data).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// Sends what was read; false at the end of the stream.
async fn send_output(
    socket: &mut WebSocket,
    channel: u8,
    buf: &[u8],
    n: std::io::Result<usize>,
) -> Result<bool, String> {
    match n {
        Ok(0) | Err(_) => Ok(false),
        Ok(n) => {
            socket
                .send(Message::Binary(wire::frame(channel, &buf[..n]).into()))
                .await
                .map_err(|e| format!("the client went away: {e}"))?;
            Ok(true)
        }
    }
}

/// A message from the client: its channel and payload; `None` for one to
/// ignore; an error when the client went away.
fn client_message(msg: Option<Result<Message, axum::Error>>) -> Result<Option<(u8, Vec<u8>)>, String> {
    match msg {
        None | Some(Ok(Message::Close(_))) => Err("the client went away".into()),
        Some(Err(e)) => Err(format!("the client went away: {e}")),
        Some(Ok(Message::Binary(b))) => Ok(b.split_first().map(|(c, rest)| (*c, rest.to_vec()))),
        Some(Ok(_)) => Ok(None),
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> Result<i32, String> {
    use std::os::unix::process::ExitStatusExt;
    let status = status.map_err(|e| format!("cannot wait for the command: {e}"))?;
    Ok(status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1))
}

/// The pty's master side, non-blocking.
struct Pty(AsyncFd<OwnedFd>);

impl Pty {
    fn new(fd: OwnedFd) -> Result<Pty, String> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| e.to_string())?;
        // SAFETY: an OwnedFd is open, and keeps the same descriptor, until
        // it is dropped with the AsyncFd.
        unsafe { AsyncFd::register(fd) }.map(Pty).map_err(|e| e.to_string())
    }

    /// 0 at the end: the other side is closed (EIO).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, size: Resize) {
        let ws = nix::libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is
        // valid for the call; the fd is the pty's master, open.
        unsafe { nix::libc::ioctl(self.0.get_ref().as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
    }
}

/// Passes the client's keys and sizes to the pty and its output back,
/// until the output ends.
async fn pump_pty(socket: &mut WebSocket, pty: &Pty) -> Result<(), String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            msg = socket.recv() => match client_message(msg)? {
                // EOF on a terminal is its EOF character (^D).
                Some((wire::STDIN, data)) if data.is_empty() => {
                    let _ = pty.write_all(&[4]).await;
                }
                Some((wire::STDIN, data)) => {
                    let _ = pty.write_all(&data).await;
                }
                Some((wire::RESIZE, data)) => {
                    if let Ok(size) = serde_json::from_slice::<Resize>(&data) {
                        pty.resize(size);
                    }
                }
                _ => {}
            },
            n = pty.read(&mut buf) => {
                if !send_output(socket, wire::STDOUT, &buf, n).await? {
                    return Ok(());
                }
            }
        }
    }
}
