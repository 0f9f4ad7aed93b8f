//! Fetching a task's artifacts into its sandbox before it starts
//! (`CommandInfo.uris`, docs/frameworks.md "Artifacts"), after Mesos'
//! fetcher: http(s) URLs and local paths under the operator's
//! `--artifact-paths`, each streamed to a temporary file with a size cap
//! while its SHA-256 is computed and checked, then copied (or unpacked,
//! safely: [`crate::images::unpack_artifact`]) into the sandbox and given
//! to the task's user. With `cache` set, the verified download is kept in
//! the agent's [`cache`] for later tasks, and a later fetch copies it from
//! there: a task never sees the cached file itself.
//!
//! ```no_run
//! # async fn run(sandbox: &std::path::Path) -> Result<(), mezzo_agent::fetch::FetchError> {
//! use mezzo_agent::fetch::{FetchConfig, Fetcher};
//!
//! let fetcher = Fetcher::new(FetchConfig::default(), "/var/lib/mezzo".as_ref(), Default::default())?;
//! let uri = mezzo_proto::v1::CommandUri {
//!     value: "http://127.0.0.1:8000/tool.tar.gz".into(),
//!     extract: true,
//!     cache: true,
//!     ..Default::default()
//! };
//! let artifact = mezzo_agent::fetch::check(&uri)?;
//! let fetched = fetcher.fetch(&artifact, sandbox, None).await?;
//! println!("from the cache: {}", fetched.from_cache);
//! # Ok(())
//! # }
//! ```

pub mod cache;
mod destination;
mod install;
mod local;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::artifact::{Artifact, Source};
use mezzo_proto::security::grpc::error_chain;
use reqwest::{Client, Url};

use crate::images::ImageError;
use crate::metrics::Metrics;
use cache::{Cache, Locked};

/// What the operator allows (`--artifact-paths`, `--artifact-cache-max-mib`,
/// `--artifact-max-mib`).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Directories local artifacts may come from; none by default, so
    /// that no task can read the agent's files.
    pub allowed_paths: Vec<PathBuf>,
    /// Size the cache (`<work dir>/artifacts`) is kept under.
    pub cache_max_bytes: u64,
    /// Largest artifact, as fetched and (for an archive) unpacked.
    pub max_bytes: u64,
    /// How long a connection, the response's headers or one chunk of its
    /// body may take.
    pub timeout: Duration,
    /// How long one fetch may take in all, waits and copy included.
    pub deadline: Duration,
    /// Fetch from loopback addresses too (`--artifact-allow-loopback`:
    /// tests, single-machine setups). Link-local ones are never fetched
    /// from ([`destination`]).
    pub allow_loopback: bool,
}

impl Default for FetchConfig {
    /// No local paths, a 2 GiB cache, 4 GiB artifacts, 30 s timeouts, a
    /// 10 minute deadline, no loopback.
    fn default() -> FetchConfig {
        FetchConfig {
            allowed_paths: Vec::new(),
            cache_max_bytes: 2 << 30,
            max_bytes: 4 << 30,
            timeout: Duration::from_secs(30),
            deadline: FETCH_DEADLINE,
            allow_loopback: false,
        }
    }
}

/// How long one fetch may take in all by default: a server that sends a
/// byte just within each timeout cannot hold a fetch (and its cache key)
/// forever.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(600);

/// Fetches running at once on one agent; each holds a blocking thread
/// while it copies or unpacks.
pub const MAX_CONCURRENT_FETCHES: usize = 8;

/// Why an artifact could not be fetched; each names its URI.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The task's `CommandUri` is not one the agent fetches.
    #[error("{0}")]
    Invalid(String),
    #[error("artifact {uri}: {reason}")]
    Download { uri: String, reason: String },
    #[error("artifact {uri}: larger than this agent's limit of {limit} bytes")]
    TooLarge { uri: String, limit: u64 },
    #[error("artifact {uri}: sha256 is {actual}, expected {expected}")]
    Checksum {
        uri: String,
        actual: String,
        expected: String,
    },
    #[error("artifact {uri}: {path} is not under a directory this agent serves artifacts from (--artifact-paths)", path = path.display())]
    NotAllowed { uri: String, path: PathBuf },
    /// A local file the agent does not serve (a symlink on its way, not
    /// a regular file, not readable by all).
    #[error("artifact {uri}: {path} is refused: {why}", path = path.display())]
    Refused {
        uri: String,
        path: PathBuf,
        why: &'static str,
    },
    #[error("artifact {uri}: cannot read {path}: {source}", path = path.display())]
    Read {
        uri: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("artifact {uri}: cannot unpack it: {source}")]
    Extract { uri: String, source: ImageError },
    #[error("artifact {uri}: cannot write {path}: {source}", path = path.display())]
    Write {
        uri: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The agent's own side failed (its cache, its HTTP client).
    #[error("the agent cannot fetch artifacts: {0}")]
    Agent(String),
}

/// Reads a task's `CommandUri` as the master did ([`mezzo_proto::artifact::check`]).
pub fn check(uri: &mezzo_proto::v1::CommandUri) -> Result<Artifact, FetchError> {
    mezzo_proto::artifact::check(uri).map_err(FetchError::Invalid)
}

/// What one fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes came from the cache, not from their source.
    pub from_cache: bool,
}

/// Fetches artifacts; one per agent, shared by its tasks' supervisors.
pub struct Fetcher {
    config: FetchConfig,
    destinations: destination::Policy,
    /// `allowed_paths`, as given and resolved.
    allowed: Arc<Vec<local::AllowedDir>>,
    client: Client,
    cache: Arc<Cache>,
    /// [`MAX_CONCURRENT_FETCHES`] slots.
    slots: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// A download in progress, removed unless it moved into the cache.
struct TmpFile(PathBuf);

/// Where the fetched bytes are.
enum Bytes {
    Download(TmpFile),
    Cached(PathBuf),
}

impl Bytes {
    fn path(&self) -> &Path {
        match self {
            Bytes::Download(tmp) => &tmp.0,
            Bytes::Cached(path) => path,
        }
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Fetcher {
    /// The fetcher of the agent with this work dir (its cache is
    /// `<work_dir>/artifacts`).
    pub fn new(config: FetchConfig, work_dir: &Path, metrics: Metrics) -> Result<Fetcher, FetchError> {
        let root = work_dir.join("artifacts");
        let cache = Cache::open(&root, config.cache_max_bytes)
            .map_err(|e| FetchError::Agent(format!("cache {}: {e}", root.display())))?;
        let allowed = Arc::new(local::allowed_dirs(&config.allowed_paths)?);
        let tls = crate::images::tls_config(None).map_err(|e| FetchError::Agent(e.to_string()))?;
        let destinations = destination::Policy {
            allow_loopback: config.allow_loopback,
        };
        // Redirects are followed, but never from HTTPS to plain HTTP, nor
        // to an address that is refused.
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if from_https && attempt.url().scheme() != "https" {
                attempt.error("a redirect from HTTPS to plain HTTP")
            } else if let Err(why) = destinations.check_url(attempt.url()) {
                let to = mezzo_proto::artifact::redact_url(attempt.url());
                attempt.error(format!("a redirect to {to}: {why}"))
            } else {
                attempt.follow()
            }
        });
        // No proxy: the agent checks the addresses it connects to itself.
        let client = Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(destination::Resolver(destinations)))
            .use_preconfigured_tls(tls)
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .redirect(redirect)
            .user_agent(concat!("mezzo-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Agent(error_chain(&e)))?;
        Ok(Fetcher {
            destinations,
            config,
            allowed,
            client,
            cache: Arc::new(cache),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES)),
            metrics,
        })
    }

    /// Fetches `artifact` into `sandbox` (made if missing), everything
    /// written owned by `owner` (`None`: the agent's own user). Cancel-safe:
    /// a dropped fetch leaves no download behind.
    ///
    /// A fetch ends within the [`FetchConfig::deadline`], waits included,
    /// and at most [`MAX_CONCURRENT_FETCHES`] run at a time.
    pub async fn fetch(
        &self,
        artifact: &Artifact,
        sandbox: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Fetched, FetchError> {
        let deadline = self.config.deadline;
        tokio::time::timeout(deadline, self.fetch_now(artifact, sandbox, owner))
            .await
            .map_err(|_| FetchError::Download {
                uri: artifact.shown.clone(),
                reason: format!("not fetched within this agent's deadline of {}s", deadline.as_secs()),
            })?
    }

    async fn fetch_now(
        &self,
        artifact: &Artifact,
        sandbox: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Fetched, FetchError> {
        let locked = match artifact.cache {
            true => Some(
                self.cache
                    .lock(&Cache::key(&artifact.uri, artifact.sha256.as_deref()))
                    .await,
            ),
            false => None,
        };
        // Taken once the key is: waiting for a key holds no slot.
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| FetchError::Agent(e.to_string()))?;
        let hit = locked.as_ref().and_then(|l| l.hit().map(Path::to_path_buf));
        let from_cache = hit.is_some();
        let bytes = match hit {
            Some(path) => Bytes::Cached(path),
            None => Bytes::Download(self.obtain(artifact).await?),
        };
        match (from_cache, artifact.cache) {
            (true, _) => self.metrics.artifact_cache_hits.inc(),
            (false, true) => self.metrics.artifact_cache_misses.inc(),
            (false, false) => 0,
        };
        tracing::info!(uri = %artifact.shown, from_cache, sandbox = %sandbox.display(), "fetching an artifact");
        let (cache, metrics) = (self.cache.clone(), self.metrics.clone());
        let (artifact, sandbox, limit) = (artifact.clone(), sandbox.to_path_buf(), self.config.max_bytes);
        // The cache entry's lock and the download (removed when dropped)
        // are held until the copy is done, even if this fetch is dropped.
        tokio::task::spawn_blocking(move || {
            // The copy or extraction holds its slot even if this fetch is dropped.
            let _slot = slot;
            let bytes = match (bytes, &locked) {
                (Bytes::Download(tmp), Some(locked)) => keep(&cache, &metrics, &artifact, locked, tmp)?,
                (bytes, _) => bytes,
            };
            install::install(&artifact, bytes.path(), &sandbox, owner, limit)
        })
        .await
        .map_err(|e| FetchError::Agent(e.to_string()))??;
        self.metrics.artifacts_fetched.inc();
        Ok(Fetched { from_cache })
    }

    /// Fetches the artifact's bytes into a temporary file and checks
    /// their checksum.
    async fn obtain(&self, a: &Artifact) -> Result<TmpFile, FetchError> {
        let tmp = TmpFile(self.cache.tmp_path());
        let actual = match &a.source {
            Source::Http(url) => self.download(a, url, &tmp.0).await?,
            Source::Local(path) => {
                local::under(&self.allowed, a, path)?;
                let (a, to, limit) = (a.clone(), tmp.0.clone(), self.config.max_bytes);
                let (allowed, path) = (self.allowed.clone(), path.clone());
                tokio::task::spawn_blocking(move || {
                    let (dir, rest) = local::under(&allowed, &a, &path)?;
                    local::copy_local(&a, dir, &rest, &to, limit)
                })
                .await
                .map_err(|e| FetchError::Agent(e.to_string()))??
            }
        };
        match &a.sha256 {
            Some(expected) if *expected != actual => Err(FetchError::Checksum {
                uri: a.shown.clone(),
                actual,
                expected: expected.clone(),
            }),
            _ => Ok(tmp),
        }
    }

    /// Streams `url` into `to`, within the size limit and the timeouts;
    /// returns the SHA-256 of what came.
    async fn download(&self, a: &Artifact, url: &Url, to: &Path) -> Result<String, FetchError> {
        let failed = |reason: String| FetchError::Download {
            uri: a.shown.clone(),
            reason,
        };
        self.destinations.check_url(url).map_err(failed)?;
        let timeout = self.config.timeout;
        let timed_out = |what: &str| failed(format!("{what}: no answer in {}s", timeout.as_secs()));
        let mut response = tokio::time::timeout(timeout, self.client.get(url.clone()).send())
            .await
            .map_err(|_| timed_out("request"))?
            .map_err(|e| failed(error_chain(&e.without_url())))?;
        if !response.status().is_success() {
            return Err(failed(format!("the server answered {}", response.status())));
        }
        let limit = self.config.max_bytes;
        let too_large = || FetchError::TooLarge {
            uri: a.shown.clone(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        // The agent's own file: failing to write it is no fault of the task's.
        let write_err = |e: std::io::Error| FetchError::Agent(format!("write {}: {e}", to.display()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .await
            .map_err(write_err)?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        loop {
            let chunk = tokio::time::timeout(timeout, response.chunk())
                .await
                .map_err(|_| timed_out("body"))?
                .map_err(|e| failed(error_chain(&e.without_url())))?;
            let Some(chunk) = chunk else { break };
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large());
            }
            hash.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(write_err)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(write_err)?;
        Ok(crate::images::Digest::from_ring(hash.finish()).hex().to_owned())
    }
}

/// Moves a verified download into the cache entry `locked` when it fits
/// (else it stays a download), evicting what no longer fits.
fn keep(
    cache: &Cache,
    metrics: &Metrics,
    artifact: &Artifact,
    locked: &Locked,
    tmp: TmpFile,
) -> Result<Bytes, FetchError> {
    let size = std::fs::metadata(&tmp.0).map(|m| m.len()).unwrap_or(u64::MAX);
    match cache.insert(locked, &tmp.0, size) {
        Ok(true) => {
            metrics.artifact_cache_evictions.inc_by(cache.evict(locked.path()));
            Ok(Bytes::Cached(locked.path().to_path_buf()))
        }
        Ok(false) => {
            tracing::info!(uri = %artifact.shown, size, "artifact larger than the whole cache: not kept");
            Ok(Bytes::Download(tmp))
        }
        Err(e) => Err(FetchError::Agent(format!("cache {}: {e}", locked.path().display()))),
    }
}
