//! `mezzo logs TASK [-f]`: a sandbox file through the master's files proxy,
//! read by offset so `-f` follows it like `tail -f`.

use std::io::Write;
use std::time::Duration;

use super::{ApiError, Client, Conn, framework_of, seg, with_query};

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
    let base = format!("/api/v1/tasks/{}/{}/files/read", seg(&fw), seg(&a.task));
    let mut offset: Option<u64> = None;
    let mut out = std::io::stdout();
    loop {
        let q = match (offset, a.tail) {
            (None, Some(t)) => vec![("path", Some(file.clone())), ("tail", Some(t.to_string()))],
            (o, _) => vec![
                ("path", Some(file.clone())),
                ("offset", Some(o.unwrap_or(0).to_string())),
                ("length", Some((1u64 << 20).to_string())),
            ],
        };
        let chunk = c.get(&with_query(&base, &q)).await?;
        let len = chunk["length"].as_u64().unwrap_or(0);
        let at = chunk["offset"].as_u64().unwrap_or(0);
        if a.conn.json {
            println!("{chunk}");
        } else if let Some(d) = chunk["data"].as_str() {
            let _ = out.write_all(d.as_bytes());
            let _ = out.flush();
        }
        offset = Some(at + len);
        let size = chunk["size"].as_u64().unwrap_or(0);
        if len > 0 && at + len < size {
            continue; // more is there already
        }
        if !a.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
