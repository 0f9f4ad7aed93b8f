//! `mezzo logs TASK [-f]`: a sandbox file through the master's files proxy,
//! read by offset so `-f` follows it like `tail -f`.

use std::io::Write;

use super::follow::{Follow, Until};
use super::{ApiError, Client, Conn, framework_of};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Conn,
    task: String,
    /// Its framework, when the task id is used by more than one.
    #[arg(long)]
    framework: Option<String>,
    /// Print stderr instead of stdout.
    #[arg(long, conflicts_with = "file")]
    stderr: bool,
    /// Any file of the sandbox (relative path).
    #[arg(long)]
    file: Option<String>,
    /// Keep printing what is appended.
    #[arg(short, long)]
    follow: bool,
    /// Start with the last N bytes instead of the whole file.
    #[arg(long)]
    tail: Option<u64>,
}

pub async fn run(a: Args) -> Result<(), ApiError> {
    let c = Client::new(&a.conn.master)?;
    let fw = match a.framework {
        Some(f) => f,
        None => framework_of(&c, &a.task).await?,
    };
    let file = a
        .file
        .unwrap_or_else(|| if a.stderr { "stderr".into() } else { "stdout".into() });
    let mut until = if a.follow { Until::Never } else { Until::CaughtUp };
    let mut out = std::io::stdout();
    let json = a.conn.json;
    Follow::new(&fw, &a.task, &file)
        .tail(a.tail)
        .run(&c, &mut until, |chunk| {
            if json {
                println!("{}", serde_json::to_string(chunk).unwrap_or_default());
            } else {
                let _ = out.write_all(chunk.data.as_bytes());
                let _ = out.flush();
            }
        })
        .await
}
