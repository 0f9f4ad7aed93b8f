//! Pulling images from OCI and Docker registries (the distribution API,
//! `/v2/`): the manifest by tag or digest (an index resolved to this
//! host's linux platform), its config, and each layer the store does not
//! have yet, streamed straight into the unpacker. Every manifest, index,
//! config and layer is checked against its digest and size while it is
//! read; JSON blobs are capped at [`MAX_JSON_BLOB`]. A pulled image ends
//! up in the store exactly as an imported layout does.
//!
//! **Why our own client, not `oci-client`.** oci-client 0.16 and later
//! need reqwest 0.13 (the workspace has 0.12, and `deny.toml` allows one
//! version of each crate) and their `rustls-tls` feature brings aws-lc
//! (a C build and a second crypto provider). 0.14 and 0.15 still use
//! reqwest 0.12, but `cargo deny check bans` refuses the seven duplicates
//! 0.15 adds (checked in a copy of the workspace): base64 0.13 (through
//! jwt), block-buffer, cpufeatures, crypto-common and digest 0.10 (sha2
//! 0.10, hmac), strum and strum_macros 0.27 (oci-spec 0.8, beside
//! raft-engine's 0.25). What we need is small: the Bearer token dance,
//! Basic auth, verified streaming.
//!
//! **Credentials.** Anonymous unless the task names a secret of its role
//! holding `USER:PASSWORD` ([`Credentials`], issue 15): then a `401` with
//! a `Basic` challenge is answered with Basic auth, and a `Bearer`
//! challenge's token is asked for with Basic auth (Docker's token
//! protocol). The value goes into `Authorization` headers (marked
//! sensitive) and nowhere else: not into a log, an error or a file.
//!
//! Blocking, like the rest of the store: the HTTP client is async
//! (reqwest) and driven with [`Handle::block_on`] from the caller's
//! blocking-pool thread.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mezzo_proto::security::grpc::error_chain;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use tokio::runtime::Handle;

use super::ImageError;
use super::digest::{Digest, DigestReader};
use super::layout::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, JsonBlob, JsonKind, JsonSource, LayerDescriptor, MAX_JSON_BLOB,
    OCI_INDEX, OCI_MANIFEST, check_json_size, is_index, platform_manifest, read_image,
};
use super::store::{Image, Store};

/// How long a connection, a response's headers or one chunk of a body
/// may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A token response is small.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// The manifest types we read, for content negotiation.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
                               application/vnd.oci.image.manifest.v1+json, \
                               application/vnd.docker.distribution.manifest.list.v2+json, \
                               application/vnd.docker.distribution.manifest.v2+json";

/// How the agent reaches registries (`--insecure-registries`,
/// `--registry-ca`).
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// `host[:port]`s reached over plain HTTP; every other is HTTPS.
    pub insecure: Vec<String>,
    /// A PEM file of extra root certificates, trusted besides the
    /// system's.
    pub extra_ca: Option<std::path::PathBuf>,
}

/// Pulls images into a [`Store`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct Puller {
    client: Client,
    insecure: Arc<HashSet<String>>,
}

/// One image of one repository: `host/repository` and a tag or digest.
#[derive(Clone, Debug)]
pub struct RemoteImage<'a> {
    pub host: &'a str,
    pub repository: &'a str,
    /// A tag or `sha256:` digest, as the manifests URL takes it.
    pub lookup: &'a str,
    /// The manifest (or index) digest the reference pins, if any.
    pub digest: Option<&'a str>,
    /// The login to pull with; `None` pulls anonymously.
    pub credentials: Option<&'a Credentials>,
}

/// A registry login from the secrets store: the value of the secret the
/// task's image names (`Image.credentials_secret`), `USER:PASSWORD` as
/// `docker login` takes them (one trailing newline, as a file may end,
/// is not part of the password). Kept in memory only for the pull; its
/// `Debug` names the secret and leaves the value out, and it has no
/// `Display`.
#[derive(Clone)]
pub struct Credentials {
    secret: String,
    value: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The value `value` of the secret named `secret`.
    pub fn new(secret: impl Into<String>, value: Vec<u8>) -> Credentials {
        Credentials {
            secret: secret.into(),
            value,
        }
    }

    /// The name of the secret they come from, for messages.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// User and password; the error names the secret, never the value.
    fn login(&self) -> Result<Login<'_>, String> {
        let text = std::str::from_utf8(&self.value).ok();
        let text = text.map(|t| t.strip_suffix('\n').map_or(t, |t| t.strip_suffix('\r').unwrap_or(t)));
        match text.and_then(|t| t.split_once(':')) {
            Some((user, password)) if !user.is_empty() => Ok(Login {
                secret: &self.secret,
                user,
                password,
            }),
            _ => Err(format!(
                "secret {} does not hold registry credentials as USER:PASSWORD text",
                self.secret
            )),
        }
    }
}

/// [`Credentials`] split for a request.
#[derive(Clone, Copy)]
struct Login<'a> {
    secret: &'a str,
    user: &'a str,
    password: &'a str,
}

impl Puller {
    /// A client trusting the system's roots (and `extra_ca`), over the
    /// workspace's rustls with ring.
    pub fn new(config: &RegistryConfig) -> Result<Puller, ImageError> {
        let tls = tls_config(config.extra_ca.as_deref())?;
        let insecure: Arc<HashSet<String>> = Arc::new(config.insecure.iter().cloned().collect());
        let redirect_insecure = insecure.clone();
        // Blob downloads are often redirected to a CDN; never from HTTPS
        // to plain HTTP but for an insecure registry. reqwest drops the
        // Authorization header when the redirect leaves the host.
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if attempt.url().scheme() == "https" || redirect_insecure.contains(&host_port(attempt.url())) {
                attempt.follow()
            } else {
                attempt.error("a redirect to plain HTTP")
            }
        });
        let client = Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(TIMEOUT)
            .read_timeout(TIMEOUT)
            .redirect(redirect)
            .user_agent(concat!("mezzo-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImageError::Registry {
                registry: "(client)".to_owned(),
                reason: error_chain(&e),
            })?;
        Ok(Puller { client, insecure })
    }

    /// Pulls `image` into `store` unless the store has it already: a
    /// pinned digest the store knows costs no request, a tag one manifest
    /// GET. Layers the store has are not downloaded. Blocking: call from
    /// a blocking-pool thread of the agent's runtime.
    pub fn pull(&self, store: &Store, image: &RemoteImage<'_>) -> Result<Image, ImageError> {
        self.pull_reporting(store, image, &|_, _| {})
    }

    /// [`Self::pull`], calling `on_fetch` with the bytes of each layer it
    /// downloads received so far (none when the store has them all): 0
    /// before the layer, then on its first bytes and at most every
    /// [`PROGRESS_EVERY`] (10 s). For the task's status.
    pub fn pull_reporting(
        &self,
        store: &Store,
        image: &RemoteImage<'_>,
        on_fetch: &dyn Fn(&LayerDescriptor, u64),
    ) -> Result<Image, ImageError> {
        let pinned = image.digest.map(Digest::parse).transpose()?;
        if let Some(digest) = &pinned
            && let Some(found) = cached(store, digest)?
        {
            return Ok(found);
        }
        let handle = Handle::try_current().map_err(|_| ImageError::Registry {
            registry: image.host.to_owned(),
            reason: "pulls need the agent's async runtime".to_owned(),
        })?;
        let login = image
            .credentials
            .map(Credentials::login)
            .transpose()
            .map_err(|reason| ImageError::Registry {
                registry: image.host.to_owned(),
                reason,
            })?;
        let scheme = if self.insecure.contains(image.host) {
            "http"
        } else {
            "https"
        };
        let session = Session {
            puller: self,
            handle,
            registry: image.host.to_owned(),
            base: format!("{scheme}://{}/v2/{}", image.host, image.repository),
            repository: image.repository.to_owned(),
            login,
            basic: Cell::new(false),
            token: RefCell::new(None),
            top: RefCell::new(None),
        };
        let top = session.top_manifest(image.lookup, pinned.as_ref())?;
        let desc = if is_index(&top.media_type) {
            platform_manifest(&session, &top)?
        } else {
            top
        };
        if let Some(found) = cached(store, &desc.digest)? {
            return Ok(found);
        }
        let resolved = read_image(&session, &desc)?;
        store.import_resolved(resolved, |layer| {
            on_fetch(layer, 0);
            let of = layer.clone();
            session.open_blob(layer, Box::new(move |n| on_fetch(&of, n)))
        })
    }
}

/// The image `manifest` if the store has it, marked used.
fn cached(store: &Store, manifest: &Digest) -> Result<Option<Image>, ImageError> {
    if store.image(manifest)?.is_none() {
        return Ok(None);
    }
    store.mark_used(manifest)?;
    store.image(manifest)
}

/// One pull from one repository: its base URL, the login if the task
/// has one, the Bearer token once the registry gave one (or whether it
/// asked for Basic auth), and the first manifest (kept, as the index or
/// manifest it is). Used by one thread: the one that pulls.
struct Session<'a> {
    puller: &'a Puller,
    handle: Handle,
    registry: String,
    base: String,
    repository: String,
    login: Option<Login<'a>>,
    /// The registry answered with a `Basic` challenge: every request
    /// carries the login.
    basic: Cell<bool>,
    token: RefCell<Option<String>>,
    top: RefCell<Option<JsonBlob>>,
}

impl Session<'_> {
    fn error(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            reason: reason.into(),
        }
    }

    /// Runs `fut` on the agent's runtime, within [`TIMEOUT`].
    fn block_on<T>(&self, what: &str, fut: impl Future<Output = reqwest::Result<T>>) -> Result<T, ImageError> {
        match self.handle.block_on(async { tokio::time::timeout(TIMEOUT, fut).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(format!("{what}: {}", error_chain(&e)))),
            Err(_) => Err(self.error(format!("{what}: no answer in {}s", TIMEOUT.as_secs()))),
        }
    }

    /// GETs `url` (`what` names it in errors), answering one 401
    /// challenge: Bearer with a (new) token, anonymous or asked for with
    /// the login; Basic with the login. A status other than 200 is an error;
    /// 404 says "not found", 401 and 403 whether credentials are wanted
    /// or were refused.
    fn get(&self, url: &str, what: &str, accept: Option<&str>) -> Result<Response, ImageError> {
        let request = || {
            let mut r = self.puller.client.get(url);
            if let Some(accept) = accept {
                r = r.header(ACCEPT, accept);
            }
            self.authorize(r)
        };
        let mut response = self.block_on(what, request().send())?;
        // Without a token yet, or with one that expired during a long
        // pull: one (new) token. A login sent already was refused.
        if response.status() == StatusCode::UNAUTHORIZED && !self.basic.get() {
            self.answer_challenge(response.headers(), what)?;
            response = self.block_on(what, request().send())?;
        }
        match response.status() {
            StatusCode::OK => Ok(response),
            StatusCode::NOT_FOUND => Err(self.error(format!("{what}: not found (404)"))),
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(self.denied(what, status)),
            status => Err(self.error(format!("{what}: HTTP {status}"))),
        }
    }

    fn authorize(&self, r: RequestBuilder) -> RequestBuilder {
        if let Some(token) = self.token.borrow().as_deref() {
            return r.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        match self.login.filter(|_| self.basic.get()) {
            Some(login) => r.basic_auth(login.user, Some(login.password)),
            None => r,
        }
    }

    /// A 401 or 403 for `what`: without a login, the registry wants one;
    /// with one, it refused it (naming the secret, never its value).
    fn denied(&self, what: &str, status: StatusCode) -> ImageError {
        match self.login {
            Some(login) => self.error(format!(
                "{what}: the registry refused the credentials in secret {} ({status})",
                login.secret
            )),
            None => self.error(format!(
                "{what}: the registry wants credentials ({status}); name a secret of the task's role \
                 holding USER:PASSWORD as the image's credentials (`mezzo run --image-credentials SECRET`)"
            )),
        }
    }

    /// Answers a 401's `WWW-Authenticate` challenge: `Bearer` with a
    /// token, `Basic` with the login if there is one.
    fn answer_challenge(&self, headers: &HeaderMap, what: &str) -> Result<(), ImageError> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.error(format!("{what}: 401 without a WWW-Authenticate challenge")))?;
        if let Some(params) = parse_bearer_challenge(challenge) {
            return self.fetch_token(&params);
        }
        let scheme = challenge.split_whitespace().next().unwrap_or_default();
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(self.error(format!(
                "{what}: asks for credentials by {scheme:?}, which the agent does not speak (Basic and Bearer)"
            )));
        }
        if self.login.is_none() {
            return Err(self.denied(what, StatusCode::UNAUTHORIZED));
        }
        self.basic.set(true);
        Ok(())
    }

    /// The token a `Bearer` challenge points to: anonymous, or asked for
    /// with the login (Basic auth to the realm, Docker's token protocol).
    fn fetch_token(&self, params: &[(String, String)]) -> Result<(), ImageError> {
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| self.error("a Bearer challenge without a realm"))?;
        let mut url = Url::parse(realm).map_err(|e| self.error(format!("token realm {realm:?}: {e}")))?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.puller.insecure.contains(&host_port(&url))) {
            return Err(self.error(format!("token realm {realm:?} is not HTTPS")));
        }
        let default_scope = format!("repository:{}:pull", self.repository);
        {
            let mut query = url.query_pairs_mut();
            if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
                query.append_pair("service", service);
            }
            let scope = params.iter().find(|(k, _)| k == "scope").map(|(_, v)| v.as_str());
            query.append_pair("scope", scope.unwrap_or(&default_scope));
        }
        let what = format!("token from {realm}");
        let mut request = self.puller.client.get(url);
        if let Some(login) = self.login {
            request = request.basic_auth(login.user, Some(login.password));
        }
        let response = self.block_on(&what, request.send())?;
        match response.status() {
            StatusCode::OK => {}
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => return Err(self.denied(&what, status)),
            status => return Err(self.error(format!("{what}: HTTP {status}"))),
        }
        let body = self.read_capped(response, MAX_TOKEN_RESPONSE, &what)?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| self.error(format!("{what}: invalid JSON: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(format!("{what}: no token in the answer")))?;
        *self.token.borrow_mut() = Some(token);
        Ok(())
    }

    /// Reads a whole body of at most `cap` bytes.
    fn read_capped(&self, mut response: Response, cap: u64, what: &str) -> Result<Vec<u8>, ImageError> {
        if response.content_length().is_some_and(|n| n > cap) {
            return Err(self.error(format!("{what}: over the limit of {cap} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = self.block_on(what, response.chunk())? {
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(self.error(format!("{what}: over the limit of {cap} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The manifest or index the tag or digest names, verified against
    /// the pinned digest, or else the registry's `Docker-Content-Digest`;
    /// kept for [`JsonSource::json_blob`].
    fn top_manifest(&self, lookup: &str, pinned: Option<&Digest>) -> Result<Descriptor, ImageError> {
        let what = format!("manifest {lookup}");
        let response = self.get(
            &format!("{}/manifests/{lookup}", self.base),
            &what,
            Some(MANIFEST_ACCEPT),
        )?;
        let content_type = media_type(response.headers());
        let claimed = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = self.read_capped(response, MAX_JSON_BLOB, &what)?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = pinned.or(claimed.as_ref())
            && expected != &digest
        {
            return Err(ImageError::DigestMismatch {
                what,
                expected: expected.clone(),
                actual: digest,
            });
        }
        let media_type = match content_type.as_deref() {
            Some(t @ (OCI_INDEX | OCI_MANIFEST | DOCKER_LIST | DOCKER_MANIFEST)) => t.to_owned(),
            // Some registries answer `application/json`: the body says.
            _ => body_media_type(&bytes).unwrap_or_else(|| content_type.unwrap_or_default()),
        };
        if !matches!(
            media_type.as_str(),
            OCI_INDEX | OCI_MANIFEST | DOCKER_LIST | DOCKER_MANIFEST
        ) {
            return Err(ImageError::UnsupportedMediaType(media_type));
        }
        let desc = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
        *self.top.borrow_mut() = Some(JsonBlob { digest, bytes });
        Ok(desc)
    }

    /// The layer blob, streaming; the store checks its digest and size.
    fn open_blob<'s>(
        &'s self,
        layer: &LayerDescriptor,
        on_bytes: Box<dyn Fn(u64) + 's>,
    ) -> Result<Box<dyn Read + 's>, ImageError> {
        let what = format!("layer {}", layer.digest);
        let response = self.get(&format!("{}/blobs/{}", self.base, layer.digest), &what, None)?;
        if let Some(len) = response.content_length().filter(|&n| n != layer.size) {
            return Err(ImageError::SizeMismatch {
                digest: layer.digest.clone(),
                expected: layer.size,
                actual: len,
            });
        }
        Ok(Box::new(BodyReader {
            session: self,
            response,
            chunk: Bytes::new(),
            received: 0,
            reported: None,
            on_bytes,
        }))
    }
}

impl JsonSource for Session<'_> {
    fn json_blob(&self, desc: &Descriptor, kind: JsonKind) -> Result<JsonBlob, ImageError> {
        let what = kind.as_str();
        if let Some(top) = self.top.borrow().as_ref().filter(|t| t.digest == desc.digest) {
            desc.digest
                .verify(desc.size, &top.digest, top.bytes.len() as u64, what)?;
            return Ok(top.clone());
        }
        check_json_size(desc, what)?;
        let (url, accept) = match kind {
            JsonKind::Index | JsonKind::Manifest => (
                format!("{}/manifests/{}", self.base, desc.digest),
                Some(MANIFEST_ACCEPT),
            ),
            JsonKind::Config => (format!("{}/blobs/{}", self.base, desc.digest), None),
        };
        let label = format!("{what} {}", desc.digest);
        let response = self.get(&url, &label, accept)?;
        // One byte past the descriptor's size, to see a longer blob.
        let bytes = self.read_capped(response, desc.size + 1, &label)?;
        let mut reader = DigestReader::new(&bytes[..]);
        io::copy(&mut reader, &mut io::sink()).map_err(ImageError::Archive)?;
        let (actual, len) = reader.finish();
        desc.digest.verify(desc.size, &actual, len, what)?;
        Ok(JsonBlob { digest: actual, bytes })
    }

    fn invalid(&self, reason: String) -> ImageError {
        self.error(reason)
    }

    fn not_found(&self, reference: String) -> ImageError {
        self.error(format!("no image for {reference}"))
    }
}

/// A response body as a blocking reader, each chunk within [`TIMEOUT`].
struct BodyReader<'a> {
    session: &'a Session<'a>,
    response: Response,
    chunk: Bytes,
    /// Bytes of the body read so far, told to `on_bytes` on the first
    /// read and then at most every [`PROGRESS_EVERY`].
    received: u64,
    reported: Option<std::time::Instant>,
    on_bytes: Box<dyn Fn(u64) + 'a>,
}

/// How often a download's progress is told at most: each tell is a status
/// update, journaled and acknowledged, so a slow pull must not make many.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.session.block_on("layer download", self.response.chunk()) {
                Ok(Some(chunk)) => self.chunk = chunk,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        self.received += n as u64;
        if self.reported.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            self.reported = Some(std::time::Instant::now());
            (self.on_bytes)(self.received);
        }
        Ok(n)
    }
}

/// `Content-Type` without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim().to_owned())
}

/// A manifest's own `mediaType` field.
fn body_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Typed {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Typed>(bytes).ok()?.media_type
}

/// `host[:port]` of `url`, the port only if explicit (as the
/// `--insecure-registries` entries are written).
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The parameters of a `Bearer k="v",k2="v2"` challenge; `None` for any
/// other scheme (Basic).
fn parse_bearer_challenge(challenge: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string: up to the next unescaped quote.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key, value));
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

/// A TLS client configuration trusting the system's roots (and those in
/// the PEM file `extra_ca`, `--registry-ca`), over the workspace's rustls
/// with ring: registry pulls and artifact downloads (`crate::fetch`).
pub(crate) fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, ImageError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "image pulls: a system root certificate could not be read");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        let pem = std::fs::read_to_string(path).map_err(ImageError::io("read", path))?;
        let certs = mezzo_proto::security::tls::certs_from_pem("--registry-ca", &pem).map_err(|e| ca_error(path, e))?;
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(path, e))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(mezzo_proto::security::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ca_error(Path::new("(TLS versions)"), e))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn ca_error(path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        registry: "(all)".to_owned(),
        reason: format!("--registry-ca {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn images_pull_bearer_challenges_parse() {
        let c = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#;
        assert_eq!(
            parse_bearer_challenge(c).unwrap(),
            vec![
                ("realm".to_owned(), "https://auth.example.com/token".to_owned()),
                ("service".to_owned(), "registry.example.com".to_owned()),
                ("scope".to_owned(), "repository:a/b:pull,push".to_owned()),
            ]
        );
        assert_eq!(
            parse_bearer_challenge(r#"bearer realm=https://x/t, error="in\"valid""#).unwrap(),
            vec![
                ("realm".to_owned(), "https://x/t".to_owned()),
                ("error".to_owned(), "in\"valid".to_owned()),
            ]
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn images_pull_host_port_matches_the_flag_form() {
        assert_eq!(
            host_port(&Url::parse("http://127.0.0.1:5001/v2/").unwrap()),
            "127.0.0.1:5001"
        );
        assert_eq!(
            host_port(&Url::parse("https://r.example.com/v2/").unwrap()),
            "r.example.com"
        );
    }

    #[test]
    fn images_pull_needs_the_agents_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let puller = Puller::new(&RegistryConfig::default()).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let image = RemoteImage {
            host: "127.0.0.1:1",
            repository: "x",
            lookup: &digest,
            digest: Some(&digest),
            credentials: None,
        };
        let e = puller.pull(&store, &image).unwrap_err();
        assert!(e.to_string().contains("runtime"), "{e}");
    }
}
