//! `mezzo logs TASK [-f]`: a sandbox file through the master's files proxy,
//! read by offset so `-f` follows it like `tail -f`; `--ls [DIR]` lists a
//! sandbox directory instead.

use std::io::Write;

use super::follow::{Follow, Until};
use super::{ApiError, Client, TaskRef, seg, with_query};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    t: TaskRef,
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
    /// List a sandbox directory (the sandbox itself without a path) instead
    /// of printing a file.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".", conflicts_with_all = ["file", "stderr", "follow", "tail"])]
    ls: Option<String>,
}

pub async fn run(a: Args) -> Result<(), ApiError> {
    let (c, fw) = a.t.resolve().await?;
    if let Some(dir) = a.ls {
        return list(&c, &fw, &a.t.task, &dir, a.t.conn.json).await;
    }
    let file = a
        .file
        .unwrap_or_else(|| if a.stderr { "stderr".into() } else { "stdout".into() });
    let mut until = if a.follow { Until::Never } else { Until::CaughtUp };
    let mut out = std::io::stdout();
    let json = a.t.conn.json;
    Follow::new(&fw, &a.t.task, &file)
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

/// `--ls DIR`: one line per entry, kind, size and name (directories end
/// with `/`).
async fn list(c: &Client, fw: &str, task: &str, dir: &str, json: bool) -> Result<(), ApiError> {
    let path = with_query(
        &format!("/api/v1/tasks/{}/{}/files/browse", seg(fw), seg(task)),
        &[("path", Some(dir.to_owned()))],
    );
    let listing = c.get(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing).unwrap_or_default());
        return Ok(());
    }
    for e in listing["entries"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        let is_dir = e["kind"] == "dir" || e["kind"] == "directory";
        println!(
            "{:>12}  {name}{}",
            e["size"].as_u64().unwrap_or_default(),
            if is_dir { "/" } else { "" }
        );
    }
    Ok(())
}
