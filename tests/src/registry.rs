//! A real OCI registry for the image-pull tests (issue 15): Debian's
//! `docker-registry` (distribution 2.8) on a free loopback port with its
//! storage in a temp dir, and `skopeo` to push the layouts `oci.rs`
//! builds; for a private registry, its htpasswd auth with a bcrypt entry
//! from `htpasswd -B`. All are Debian packages that `scripts/test`
//! installs; a test without them fails and says so.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// A running `docker-registry serve`, killed (by pid) and its storage
/// removed on drop.
#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:<port>`, as image references and `--insecure-registries`
    /// name it.
    pub host: String,
    /// The CA that signed the registry's certificate, over HTTPS.
    pub ca: Option<std::path::PathBuf>,
    /// `USER:PASSWORD` a private registry takes (and pushes use).
    login: Option<String>,
    child: Child,
    dir: tempfile::TempDir,
}

/// `program` on PATH, or an error saying how to get it.
fn need(program: &str, package: &str) -> Result<()> {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()));
    ensure!(
        found,
        "`{program}` is not installed: run scripts/test once (it installs the Debian package `{package}`), \
         or `apt-get install {package}`"
    );
    Ok(())
}

/// A fresh CA and a certificate for `127.0.0.1` it signed, in `dir`:
/// `ca.pem`, `cert.pem`, `key.pem`.
fn write_tls_files(dir: &Path) -> Result<()> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mezzo test registry CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

impl Registry {
    /// Starts a registry over plain HTTP and waits until `GET /v2/` answers.
    pub async fn start() -> Result<Registry> {
        Registry::start_with(false).await
    }

    /// Starts a registry over HTTPS, its certificate signed by a fresh CA
    /// ([`Registry::ca`]), and waits until it accepts connections.
    pub async fn start_tls() -> Result<Registry> {
        Registry::start_with(true).await
    }

    /// Starts a private registry over HTTPS (as [`Registry::start_tls`]):
    /// distribution's htpasswd auth, which answers `401` with a `Basic`
    /// challenge and lets only `user` with `password` pull or push.
    pub async fn start_private(user: &str, password: &str) -> Result<Registry> {
        Registry::start_with_login(true, Some((user, password))).await
    }

    async fn start_with(tls: bool) -> Result<Registry> {
        Registry::start_with_login(tls, None).await
    }

    async fn start_with_login(tls: bool, login: Option<(&str, &str)>) -> Result<Registry> {
        need("docker-registry", "docker-registry")?;
        need("skopeo", "skopeo")?;
        // The probes below use reqwest, which needs a TLS provider even
        // for plain HTTP.
        mezzo_proto::security::tls::ensure_provider();
        let dir = tempfile::tempdir()?;
        let port = crate::free_ports(1)?[0];
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        let ca = if tls {
            write_tls_files(dir.path())?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            ));
            Some(dir.path().join("ca.pem"))
        } else {
            None
        };
        if let Some((user, password)) = login {
            need("htpasswd", "apache2-utils")?;
            let out = Command::new("htpasswd")
                .args(["-nbB", user, password])
                .stdin(Stdio::null())
                .output()
                .context("running htpasswd")?;
            ensure!(out.status.success(), "htpasswd -nbB: {}", out.status);
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &out.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: mezzo-test\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let login = login.map(|(user, password)| format!("{user}:{password}"));
        let registry = Registry {
            host,
            ca,
            login,
            child,
            dir,
        };
        let url = format!("http://{}/v2/", registry.host);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = if tls {
                // Listening is enough: the agent under test checks the TLS.
                tokio::net::TcpStream::connect(&registry.host).await.is_ok()
            } else {
                reqwest::get(&url).await.is_ok_and(|r| r.status().is_success())
            };
            if ready {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on {url}:\n{}", registry.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pushes the image `tag` of the OCI layout `layout` as `name:tag`.
    pub async fn push(&self, layout: &Path, tag: &str, name: &str) -> Result<()> {
        let mut skopeo = tokio::process::Command::new("skopeo");
        skopeo.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        if let Some(login) = &self.login {
            skopeo.arg(format!("--dest-creds={login}"));
        }
        let out = skopeo
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.host))
            .kill_on_drop(true)
            .output()
            .await
            .context("running skopeo")?;
        ensure!(
            out.status.success(),
            "skopeo copy {} → {name}:{tag}: {}\n{}",
            layout.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// What the registry logged so far (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times the access log shows `GET /v2/<name>/blobs/<digest>`
    /// in `log`.
    pub fn blob_gets(log: &str, name: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{name}/blobs/{digest} ");
        log.matches(&needle).count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry that serves one OCI layout's image (any name, any tag) over
/// plain HTTP, its manifest and config at once but each layer only up to
/// its first bytes: then the connection stalls, as a pull from a slow or
/// wedged registry does. The agent announces the layer (a `pulling image`
/// update) and waits, until its read timeout gives up on it. Stops (with
/// every connection) on drop.
#[derive(Debug)]
pub struct StalledRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    server: tokio::task::JoinHandle<()>,
}

/// The layout's manifest (media type, digest, bytes), and every blob.
struct Served {
    manifest: (String, String, Vec<u8>),
    layers: Vec<String>,
    blobs: std::collections::HashMap<String, Vec<u8>>,
}

impl StalledRegistry {
    /// Serves the first image of the OCI layout `layout`.
    pub async fn start(layout: &Path) -> Result<StalledRegistry> {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let desc = &index["manifests"][0];
        let (media_type, digest) = (
            desc["mediaType"].as_str().context("manifest media type")?.to_owned(),
            desc["digest"].as_str().context("manifest digest")?.to_owned(),
        );
        let mut blobs = std::collections::HashMap::new();
        for entry in std::fs::read_dir(layout.join("blobs/sha256"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            blobs.insert(format!("sha256:{name}"), std::fs::read(entry.path())?);
        }
        let bytes = blobs.get(&digest).context("no manifest blob")?.clone();
        let manifest: serde_json::Value = serde_json::from_slice(&bytes)?;
        let layers = crate::oci::layer_digests(&manifest)?;
        let served = std::sync::Arc::new(Served {
            manifest: (media_type, digest, bytes),
            layers,
            blobs,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            // Dropped with the server: every connection ends with it.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.spawn(serve_stalling(conn, served.clone()));
            }
        });
        Ok(StalledRegistry { host, server })
    }
}

/// Answers the requests of one connection until it closes or stalls.
async fn serve_stalling(conn: tokio::net::TcpStream, served: std::sync::Arc<Served>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut conn = BufReader::new(conn);
    loop {
        let mut path = None;
        loop {
            let mut line = String::new();
            match conn.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim().is_empty() => break,
                Ok(_) => {
                    if path.is_none() {
                        path = line.split_whitespace().nth(1).map(str::to_owned);
                    }
                }
            }
        }
        let path = path.unwrap_or_default();
        let digest = path.rsplit('/').next().unwrap_or_default().to_owned();
        let (head, body, stall) = if path.contains("/manifests/") {
            let (media_type, digest, bytes) = &served.manifest;
            (
                format!("Content-Type: {media_type}\r\nDocker-Content-Digest: {digest}\r\n"),
                bytes.clone(),
                false,
            )
        } else if let Some(blob) = served.blobs.get(&digest).filter(|_| path.contains("/blobs/")) {
            (String::new(), blob.clone(), served.layers.contains(&digest))
        } else {
            let _ = conn
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
            continue;
        };
        let sent = if stall { body.len().min(512) } else { body.len() };
        let response = format!("HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\n\r\n", body.len());
        if conn.write_all(response.as_bytes()).await.is_err() || conn.write_all(&body[..sent]).await.is_err() {
            return;
        }
        if stall {
            let _ = conn.flush().await;
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for StalledRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}
