//! `mezzo exec [-i] [-t] TASK -- CMD...`: a command in a running task's
//! container, through the leading master (which checks `exec_task`) to
//! the task's agent, over a WebSocket ([`mezzo_proto::exec`]). As `docker
//! exec`: `-i` passes stdin on, `-t` gives the command a terminal (this
//! one in raw mode, its size followed). Exits with the command's status.
//!
//! `mezzo attach TASK`: follows the task's own stdout and stderr until it
//! ends, through the files API (as `mezzo logs -f` does for one of them).

use std::io::Write;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mezzo_proto::exec::{self as wire, ExecEnd, ExecRequest, Resize};
use mezzo_proto::security::ws::{self, WsError};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use super::client::transport;
use super::follow::{Follow, Until};
use super::{ApiError, Client, TaskRef, seg};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    t: TaskRef,
    /// Pass stdin on to the command (without it, the command's stdin is
    /// empty).
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The terminal in raw mode while this lives.
struct RawMode;

impl RawMode {
    fn enter() -> Option<RawMode> {
        crossterm::terminal::enable_raw_mode().ok().map(|()| RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Runs the command; the process exits with its status (a stdin read may
/// still be pending, which nothing else would end).
pub async fn run(a: Args) -> Result<(), ApiError> {
    let (c, fw) = a.t.resolve().await?;
    let (cols, rows) = if a.tty {
        crossterm::terminal::size().unwrap_or((80, 24))
    } else {
        (0, 0)
    };
    let req = ExecRequest::new(&a.command, a.tty, cols, rows);
    let path = format!("/api/v1/tasks/{}/{}/exec?{}", seg(&fw), seg(&a.t.task), req.query());
    let socket = open(&c, &path).await?;
    let raw = (a.tty && std::io::IsTerminal::is_terminal(&std::io::stdin()))
        .then(RawMode::enter)
        .flatten();
    let code = session(socket, a.interactive, a.tty).await;
    drop(raw);
    let _ = std::io::stdout().flush();
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => Err(e),
    }
}

/// The WebSocket to the leader: each master in turn, following a
/// follower's redirect to the leader once.
async fn open(c: &Client, path: &str) -> Result<ws::Socket, ApiError> {
    let (transport, _) = transport()?;
    let mut last = ApiError::Other("no master to ask".into());
    for master in c.masters() {
        let mut addr = master.clone();
        for _ in 0..2 {
            match ws::connect(
                &transport,
                &addr,
                "master.mezzo",
                path,
                Duration::from_secs(10),
                wire::MAX_MESSAGE + 16,
            )
            .await
            {
                Ok(socket) => return Ok(socket),
                Err(WsError::Refused {
                    status: 307,
                    location: Some(l),
                    ..
                }) => {
                    // `//HOST:PORT/PATH`: another master, verified as one.
                    match l.trim_start_matches("//").split('/').next() {
                        Some(leader) if !leader.is_empty() => addr = leader.to_owned(),
                        _ => break,
                    }
                }
                Err(WsError::Refused { status, body, .. }) => {
                    let msg = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| body.trim().to_owned());
                    return Err(match status {
                        404 => ApiError::NotFound(msg),
                        401 | 403 | 429 => ApiError::Refused(msg),
                        400 | 409 => ApiError::Bad(msg),
                        _ => ApiError::Other(format!("{addr}: {status}: {msg}")),
                    });
                }
                Err(e) => {
                    last = ApiError::Other(e.to_string());
                    break;
                }
            }
        }
    }
    Err(last)
}

/// Passes stdin, the terminal's size and the output until the command
/// ends; its exit code.
async fn session(socket: ws::Socket, interactive: bool, tty: bool) -> Result<i32, ApiError> {
    let (mut tx, mut rx) = socket.split();
    let gone = |e: tokio_tungstenite::tungstenite::Error| ApiError::Other(format!("the session broke: {e}"));
    if !interactive {
        tx.send(Message::Binary(wire::frame(wire::STDIN, &[]).into()))
            .await
            .map_err(gone)?;
    }
    let mut stdin = tokio::io::stdin();
    let mut stdin_open = interactive;
    let mut buf = vec![0u8; 8 * 1024];
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| ApiError::Other(e.to_string()))?;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        tokio::select! {
            n = stdin.read(&mut buf), if stdin_open => {
                let n = n.unwrap_or(0);
                stdin_open = n > 0;
                tx.send(Message::Binary(wire::frame(wire::STDIN, &buf[..n]).into())).await.map_err(gone)?;
            }
            Some(()) = winch.recv(), if tty => {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    let size = serde_json::to_vec(&Resize { cols, rows }).unwrap_or_default();
                    tx.send(Message::Binary(wire::frame(wire::RESIZE, &size).into())).await.map_err(gone)?;
                }
            }
            msg = rx.next() => match msg {
                None | Some(Ok(Message::Close(_))) => {
                    return Err(ApiError::Other("the session ended without the command's status".into()));
                }
                Some(Err(e)) => return Err(gone(e)),
                Some(Ok(Message::Binary(b))) => match b.split_first() {
                    Some((&wire::STDOUT, data)) => {
                        let _ = out.write_all(data);
                        let _ = out.flush();
                    }
                    Some((&wire::STDERR, data)) => {
                        let _ = err.write_all(data);
                        let _ = err.flush();
                    }
                    Some((&wire::END, data)) => {
                        let end: ExecEnd = serde_json::from_slice(data)
                            .map_err(|e| ApiError::Other(format!("a bad end from the agent: {e}")))?;
                        return match (end.exit_code, end.error) {
                            (Some(code), _) => Ok(code),
                            (None, error) => Err(ApiError::Other(error.unwrap_or_else(|| "the command failed".into()))),
                        };
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `mezzo attach`: the task's stdout and stderr as they grow (from the
/// start), until it has ended and both are read.
pub async fn attach(a: TaskRef) -> Result<(), ApiError> {
    let (c, fw) = a.resolve().await?;
    // Ends the follows once the task has ended (then they drain).
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let task_path = format!("/api/v1/tasks/{}/{}", seg(&fw), seg(&a.task));
    let watcher = {
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(t) = c.get(&task_path).await
                    && t["state"].as_str().is_some_and(is_terminal)
                {
                    let _ = done_tx.send(true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let follow = |file: &'static str| {
        let (c, fw, task, done) = (c.clone(), fw.clone(), a.task.clone(), done.clone());
        async move {
            let mut until = Until::Finished(done);
            let mut sink: Box<dyn Write + Send> = match file {
                "stderr" => Box::new(std::io::stderr()),
                _ => Box::new(std::io::stdout()),
            };
            Follow::new(&fw, &task, file)
                .run(&c, &mut until, |chunk| {
                    let _ = sink.write_all(chunk.data.as_bytes());
                    let _ = sink.flush();
                })
                .await
        }
    };
    let (out, err) = tokio::join!(follow("stdout"), follow("stderr"));
    watcher.abort();
    out.and(err)
}

/// A state name of a task that has ended.
fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED" | "TASK_LOST" | "TASK_ERROR" | "TASK_DROPPED" | "TASK_GONE"
    )
}
