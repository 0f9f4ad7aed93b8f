//! Headless Chromium driven over the DevTools protocol, for the dashboard
//! tests: navigate, evaluate JavaScript, wait for a condition, take a
//! screenshot. The browser runs with a fresh profile in a temp dir (its
//! temporary files too) and is killed, with its helper processes, when the
//! [`Browser`] is dropped, before the profile is removed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The Chromium binary: `$MEZZO_CHROMIUM`, else the first of the usual
/// names on `PATH`.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MEZZO_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Where tests leave screenshots: `target/test-artifacts/<what>/`.
pub fn artifacts_dir(what: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts")
        .join(what);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

#[derive(Debug)]
pub struct Browser {
    /// Chromium, leading a process group of its own (its helpers).
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    ws: Ws,
    next_id: u64,
}

impl Browser {
    /// Starts headless Chromium and attaches to its first page.
    pub async fn launch() -> Result<Browser> {
        let bin = chromium().context("no chromium on PATH (scripts/test installs Debian's `chromium`)")?;
        let profile = tempfile::Builder::new().prefix("mezzo-chromium-").tempdir()?;
        let child = tokio::process::Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                // The cluster's CA is its own: the tests trust it.
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // Its singleton socket dir goes into the profile, not /tmp.
            .env("TMPDIR", profile.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        // Chromium writes its port to the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(p) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                break p;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromium did not open its DevTools port within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        mezzo_proto::security::tls::ensure_provider();
        let http = reqwest::Client::new();
        let pages: Vec<Value> = loop {
            let list: Vec<Value> = http
                .get(format!("http://127.0.0.1:{port}/json/list"))
                .send()
                .await?
                .json()
                .await?;
            if list.iter().any(|p| p["type"] == "page") {
                break list;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromium has no page");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let ws_url = pages
            .iter()
            .find(|p| p["type"] == "page")
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            .context("page without a DevTools URL")?;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
        Ok(Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
        })
    }

    /// Sends one DevTools command and waits for its answer (events that
    /// arrive meanwhile are ignored).
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::Text(msg.to_string().into())).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .with_context(|| format!("{method}: no answer within 30 s"))?;
            let Some(msg) = next else {
                bail!("DevTools connection closed")
            };
            let Message::Text(text) = msg? else { continue };
            let v: Value = serde_json::from_str(&text)?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Loads `url` and waits until the document is complete.
    pub async fn navigate(&mut self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({ "url": url })).await?;
        self.wait_for("document.readyState === 'complete'", Duration::from_secs(20))
            .await?;
        Ok(())
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value.
    pub async fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expr}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is truthy; returns its value.
    pub async fn wait_for(&mut self, expr: &str, limit: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let last = match self.eval(expr).await {
                Ok(v) if !matches!(v, Value::Null | Value::Bool(false)) && v != "" && v != 0 => return Ok(v),
                Ok(v) => v,
                Err(e) => Value::String(e.to_string()),
            };
            if tokio::time::Instant::now() > deadline {
                bail!("`{expr}` not true within {limit:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&mut self, path: &Path) -> Result<()> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" })).await?;
        let data = r["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }
}

impl Drop for Browser {
    /// Kills Chromium's process group and waits (2 s at most) for Chromium
    /// to exit, so that nothing writes into the profile once it is removed.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
