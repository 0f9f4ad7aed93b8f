//! `mezzo service serve` in the soak: one web service of busybox httpd
//! instances with an HTTP health check and a rolling-update policy.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value;

use crate::{Daemon, Site};

/// The service the soak keeps running.
pub const NAME: &str = "web";

/// Its file: `instances` busybox httpd instances, at most
/// `max_unavailable` of them down during an update.
pub fn file(instances: usize, max_unavailable: usize) -> String {
    format!(
        r#"name = "{NAME}"
instances = {instances}
command = "echo ok > index.html; exec busybox httpd -f -p $PORT0 -h ."
resources = "cpus:0.1;mem:32"
ports = ["http"]
kill_grace = "1s"
[health]
http = {{ port = "http", path = "/index.html" }}
grace_period = "10s"
interval = "500ms"
timeout = "2s"
failures = 3
[restart]
backoff = "200ms"
max_backoff = "2s"
[upgrade]
max_surge = 1
max_unavailable = {max_unavailable}
"#
    )
}

/// The framework daemon.
#[derive(Debug)]
pub struct Service {
    pub daemon: Daemon,
    http: reqwest::Client,
    dir: std::path::PathBuf,
}

impl Service {
    pub async fn start(site: &impl Site) -> Result<Service> {
        let work_dir = site.dir().join("service");
        let args: Vec<String> = vec![
            "service".into(),
            "serve".into(),
            "--masters".into(),
            site.masters().join(","),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--work-dir".into(),
            work_dir.display().to_string(),
        ];
        let daemon = Daemon::spawn_env(&site.env(), "service", &args, site.dir().join("service.log")).await?;
        let svc = Service {
            daemon,
            http: crate::framework_http(&work_dir, Duration::from_secs(5))?,
            dir: site.dir().to_owned(),
        };
        svc.wait_ready().await?;
        Ok(svc)
    }

    /// Starts it again after [`Daemon::kill`] (a new port).
    pub async fn restart(&mut self) -> Result<()> {
        self.daemon = self.daemon.respawn(crate::restart_log(&self.dir, "service")).await?;
        // A new API token with every start.
        self.http = crate::framework_http(&self.dir.join("service"), Duration::from_secs(5))?;
        self.wait_ready().await
    }

    /// It answers 503 until it has subscribed and read its records.
    async fn wait_ready(&self) -> Result<()> {
        crate::wait_for(
            "the service framework to be ready",
            Duration::from_secs(30),
            || self.get(""),
            Value::is_array,
        )
        .await
        .map(|_| ())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v1/services{path}", self.daemon.addr)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .http
            .get(self.url(path))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn deploy(&self, text: String) -> Result<()> {
        let r = self.http.post(self.url("")).body(text).send().await?;
        let code = r.status();
        ensure!(
            code.is_success(),
            "deploy: {code} {}",
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Waits until `healthy` instances are healthy (`limit` at most).
    pub async fn wait_healthy(&self, healthy: usize, limit: Duration) -> Result<()> {
        let path = format!("/{NAME}");
        crate::wait_for(
            "the service's instances to be healthy",
            limit,
            || self.get(&path),
            |s| s["healthy"].as_u64() == Some(healthy as u64),
        )
        .await
        .map(|_| ())
    }

    /// Removes the service and waits until the framework forgot it (its
    /// instances stopped).
    pub async fn remove(&self, limit: Duration) -> Result<()> {
        let r = self.http.delete(self.url(&format!("/{NAME}"))).send().await?;
        ensure!(r.status().is_success(), "remove: {}", r.status());
        let deadline = Instant::now() + limit;
        loop {
            let list = self.get("").await?;
            if list.as_array().is_some_and(|a| a.iter().all(|s| s["name"] != NAME)) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "service not removed after {limit:?}: {list}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
