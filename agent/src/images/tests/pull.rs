//! Registry pulls against a small in-process registry (axum) that serves
//! a layout fixture behind an anonymous Bearer token, as Docker Hub does:
//! the token dance, verification of every blob, the store answering
//! pinned digests with no request, and errors that name the cause. The
//! real docker-registry is exercised by `tests/tests/images.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::fixtures::{E, LayoutFixture, tar};
use crate::images::{Credentials, Digest, ImageError, Puller, RegistryConfig, RemoteImage, Store};

/// What the fake registry serves and counts.
#[derive(Default)]
struct Fake {
    /// Blobs (manifests included) by digest.
    blobs: HashMap<String, Vec<u8>>,
    /// Tag → manifest digest.
    tags: HashMap<String, String>,
    /// Bytes served for a digest instead of its own (a corrupt registry).
    corrupt: HashMap<String, Vec<u8>>,
    /// The realm in 401 challenges.
    realm: String,
    tokens: AtomicUsize,
    requests: Mutex<Vec<String>>,
    /// The token realm gives a token only for this `Authorization`
    /// (Basic auth, Docker's token protocol); `None`: to anyone.
    login: Option<&'static str>,
    /// The registry challenges with `Basic` and takes `login` itself,
    /// as distribution's htpasswd auth does.
    basic: bool,
}

/// `Authorization` for `alice:s3cret`.
const ALICE: &str = "Basic YWxpY2U6czNjcmV0";

fn header_is(headers: &HeaderMap, value: &str) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(value)
}

fn authorized(fake: &Fake, headers: &HeaderMap) -> bool {
    match (fake.basic, fake.login) {
        (true, Some(login)) => header_is(headers, login),
        _ => header_is(headers, "Bearer tok"),
    }
}

fn challenge(fake: &Fake) -> Response {
    let value = if fake.basic {
        r#"Basic realm="fake""#.to_owned()
    } else {
        format!(
            r#"Bearer realm="{}",service="fake",scope="repository:team/app:pull""#,
            fake.realm
        )
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)]).into_response()
}

async fn manifest(State(fake): State<Arc<Fake>>, Path(reference): Path<String>, headers: HeaderMap) -> Response {
    fake.requests.lock().unwrap().push(format!("manifest {reference}"));
    if !authorized(&fake, &headers) {
        return challenge(&fake);
    }
    let digest = fake.tags.get(&reference).cloned().unwrap_or(reference);
    match fake.blobs.get(&digest) {
        Some(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.manifest.v1+json".to_owned(),
                ),
                (header::HeaderName::from_static("docker-content-digest"), digest.clone()),
            ],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn blob(State(fake): State<Arc<Fake>>, Path(digest): Path<String>, headers: HeaderMap) -> Response {
    fake.requests.lock().unwrap().push(format!("blob {digest}"));
    if !authorized(&fake, &headers) {
        return challenge(&fake);
    }
    match fake.corrupt.get(&digest).or_else(|| fake.blobs.get(&digest)) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn token(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if fake.login.is_some_and(|login| !header_is(&headers, login)) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    fake.tokens.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"token": "tok"})).into_response()
}

/// A fake registry holding the fixture's image `tag` as `team/app:1`.
fn fake_of(fixture: &LayoutFixture, host: &str) -> Fake {
    let mut fake = Fake {
        realm: format!("http://{host}/token"),
        ..Fake::default()
    };
    for entry in std::fs::read_dir(fixture.path().join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        fake.blobs
            .insert(format!("sha256:{name}"), std::fs::read(entry.path()).unwrap());
    }
    fake
}

/// Serves `fake` on `listener` and runs `pull` on a blocking-pool thread,
/// as the agent does.
fn with_registry<T: Send + 'static>(
    listener: std::net::TcpListener,
    fake: Fake,
    pull: impl FnOnce() -> T + Send + 'static,
) -> (T, Arc<Fake>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = Arc::new(fake);
    let app = axum::Router::new()
        .route("/v2/team/app/manifests/{reference}", get(manifest))
        .route("/v2/team/app/blobs/{digest}", get(blob))
        .route("/token", get(token))
        .with_state(fake.clone());
    let out = rt.block_on(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        tokio::task::spawn_blocking(pull).await.unwrap()
    });
    (out, fake)
}

fn image(host: &str, lookup: &str) -> (String, String, Option<String>) {
    let digest = lookup.starts_with("sha256:").then(|| lookup.to_owned());
    (host.to_owned(), lookup.to_owned(), digest)
}

fn pull(
    puller: &Puller,
    store: &Store,
    image: &(String, String, Option<String>),
) -> Result<crate::images::Image, ImageError> {
    pull_as(puller, store, image, None)
}

fn pull_as(
    puller: &Puller,
    store: &Store,
    (host, lookup, digest): &(String, String, Option<String>),
    credentials: Option<&Credentials>,
) -> Result<crate::images::Image, ImageError> {
    puller.pull(
        store,
        &RemoteImage {
            host,
            repository: "team/app",
            lookup,
            digest: digest.as_deref(),
            credentials,
        },
    )
}

/// A puller that reaches `hosts` over plain HTTP.
fn plain_http_puller(hosts: &[&str]) -> Puller {
    Puller::new(&RegistryConfig {
        insecure: hosts.iter().map(|h| (*h).to_owned()).collect(),
        extra_ca: None,
    })
    .unwrap()
}

fn setup() -> (LayoutFixture, Digest, Vec<Digest>, std::net::TcpListener, String) {
    let mut fixture = LayoutFixture::new();
    let layers = [
        tar(vec![E::file("bin/sh", b"sh").mode(0o755)]),
        tar(vec![E::file("app/run", b"run")]),
    ];
    let manifest = fixture.image("1", &layers, true);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    (
        fixture,
        manifest,
        layers.iter().map(|l| Digest::of(l)).collect(),
        listener,
        host,
    )
}

#[test]
fn images_pull_with_an_anonymous_token_then_from_the_store() {
    let (fixture, manifest, diff_ids, listener, host) = setup();
    let mut fake = fake_of(&fixture, &host);
    fake.tags.insert("1".to_owned(), manifest.to_string());
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let puller = plain_http_puller(&[&host]);
    let (by_tag, by_digest) = (image(&host, "1"), image(&host, &manifest.to_string()));
    let (s, p) = (store.clone(), puller.clone());
    let ((first, second), fake) = with_registry(listener, fake, move || {
        (pull(&p, &s, &by_tag), pull(&p, &s, &by_digest))
    });
    let first = first.unwrap();
    assert_eq!(first.manifest_digest, manifest);
    assert_eq!(first.layers, diff_ids);
    assert_eq!(
        std::fs::read(store.layer_dir(&diff_ids[1]).join("app/run")).unwrap(),
        b"run"
    );
    assert_eq!(second.unwrap(), store.image(&manifest).unwrap().unwrap());
    assert_eq!(store.unpacks.load(Ordering::SeqCst), 2);
    assert_eq!(fake.tokens.load(Ordering::SeqCst), 1);
    // The pinned digest was answered by the store: no request for it.
    let requests = fake.requests.lock().unwrap().clone();
    assert!(!requests.contains(&format!("manifest {manifest}")), "{requests:?}");
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("blob")).count(),
        3,
        "{requests:?}"
    );
}

/// A pull tells how far each layer it downloads is: 0 before it, then the
/// bytes received (on the first ones, then at most every 10 s), up to
/// the layer's size; nothing for a store that has the image.
#[test]
fn a_pull_reports_each_layers_bytes_as_they_arrive() {
    let (fixture, manifest, _, listener, host) = setup();
    let mut fake = fake_of(&fixture, &host);
    fake.tags.insert("1".to_owned(), manifest.to_string());
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let puller = plain_http_puller(&[&host]);
    let by_tag = image(&host, "1");
    let (s, p) = (store.clone(), puller.clone());
    let (seen, _) = with_registry(listener, fake, move || {
        let seen = std::sync::Mutex::new(Vec::new());
        let record = |l: &crate::images::layout::LayerDescriptor, n: u64| {
            seen.lock().unwrap().push((l.digest.to_string(), n, l.size));
        };
        let remote = |(host, lookup, digest): &(String, String, Option<String>)| {
            let (host, lookup, digest) = (host.clone(), lookup.clone(), digest.clone());
            move |p: &Puller, s: &Store, f: &dyn Fn(&crate::images::layout::LayerDescriptor, u64)| {
                let image = RemoteImage {
                    host: &host,
                    repository: "team/app",
                    lookup: &lookup,
                    digest: digest.as_deref(),
                    credentials: None,
                };
                p.pull_reporting(s, &image, f)
            }
        };
        let pull = remote(&by_tag);
        pull(&p, &s, &record).unwrap();
        let first = seen.lock().unwrap().clone();
        pull(&p, &s, &record).unwrap();
        (first, seen.into_inner().unwrap())
    });
    let (first, after_warm) = seen;
    assert_eq!(first, after_warm, "a warm pull downloads and reports nothing");
    let layers: std::collections::BTreeSet<&String> = first.iter().map(|(d, ..)| d).collect();
    assert_eq!(layers.len(), 2, "{first:?}");
    for layer in layers {
        let calls: Vec<_> = first.iter().filter(|(d, ..)| d == layer).collect();
        assert_eq!(calls[0].1, 0, "announced before its bytes: {calls:?}");
        assert!(calls.len() >= 2 && calls[1].1 > 0, "its first bytes told: {calls:?}");
        assert!(calls.iter().all(|(_, n, size)| n <= size), "{calls:?}");
    }
}

#[test]
fn images_pull_refuses_corrupt_blobs_missing_tags_and_unreachable_registries() {
    let (fixture, manifest, diff_ids, listener, host) = setup();
    let mut fake = fake_of(&fixture, &host);
    fake.tags.insert("1".to_owned(), manifest.to_string());
    // The top layer's blob, as served, is another gzip of the same size.
    let manifest_json: serde_json::Value = serde_json::from_slice(&fake.blobs[&manifest.to_string()]).unwrap();
    let top = manifest_json["layers"][1]["digest"].as_str().unwrap().to_owned();
    let mut bad = fake.blobs[&top].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    fake.corrupt.insert(top.clone(), bad);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let puller = plain_http_puller(&[&host, "127.0.0.1:1"]);
    let (s, p) = (store.clone(), puller.clone());
    let (tag, missing, unreachable) = (image(&host, "1"), image(&host, "2"), image("127.0.0.1:1", "1"));
    let ((corrupt, missing, unreachable), _) = with_registry(listener, fake, move || {
        (pull(&p, &s, &tag), pull(&p, &s, &missing), pull(&p, &s, &unreachable))
    });
    let corrupt = corrupt.unwrap_err();
    assert!(
        matches!(&corrupt, ImageError::DigestMismatch { .. } | ImageError::Archive(_)),
        "{corrupt}"
    );
    assert!(store.image(&manifest).unwrap().is_none());
    assert!(!store.layer_dir(&diff_ids[1]).exists());
    let missing = missing.unwrap_err().to_string();
    assert!(missing.contains("manifest 2: not found (404)"), "{missing}");
    let unreachable = unreachable.unwrap_err().to_string();
    assert!(
        unreachable.contains("registry 127.0.0.1:1") && unreachable.contains("refused"),
        "{unreachable}"
    );
}

/// Pulls of `team/app:1` from `fake` (login `alice:s3cret`): without
/// credentials, with a wrong password, with a value that is no
/// `USER:PASSWORD`, then with the right one (as a file ends, with a
/// newline). The errors say what went wrong and name the secret; none
/// holds a password.
fn pulls_with_logins(basic: bool) -> [Result<crate::images::Image, ImageError>; 4] {
    let (fixture, manifest, _, listener, host) = setup();
    let mut fake = fake_of(&fixture, &host);
    fake.tags.insert("1".to_owned(), manifest.to_string());
    fake.login = Some(ALICE);
    fake.basic = basic;
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let puller = plain_http_puller(&[&host]);
    let tag = image(&host, "1");
    let wrong = Credentials::new("regcreds", b"alice:WRONG-pw-1".to_vec());
    let malformed = Credentials::new("regcreds", b"MALFORMED-no-colon".to_vec());
    let right = Credentials::new("regcreds", b"alice:s3cret\n".to_vec());
    assert_eq!(format!("{right:?}"), r#"Credentials { secret: "regcreds", .. }"#);
    let (s, p) = (store.clone(), puller.clone());
    let (results, _) = with_registry(listener, fake, move || {
        [
            pull_as(&p, &s, &tag, None),
            pull_as(&p, &s, &tag, Some(&wrong)),
            pull_as(&p, &s, &tag, Some(&malformed)),
            pull_as(&p, &s, &tag, Some(&right)),
        ]
    });
    results
}

fn check_login_outcomes(results: [Result<crate::images::Image, ImageError>; 4]) {
    let [anonymous, wrong, malformed, right] = results;
    let anonymous = anonymous.unwrap_err().to_string();
    assert!(anonymous.contains("wants credentials"), "{anonymous}");
    let wrong = wrong.unwrap_err().to_string();
    assert!(
        wrong.contains("refused the credentials in secret regcreds") && !wrong.contains("WRONG-pw-1"),
        "{wrong}"
    );
    let malformed = malformed.unwrap_err().to_string();
    assert!(
        malformed.contains("secret regcreds does not hold registry credentials") && !malformed.contains("MALFORMED"),
        "{malformed}"
    );
    right.unwrap();
}

#[test]
fn images_pull_asks_the_token_realm_with_the_login() {
    check_login_outcomes(pulls_with_logins(false));
}

#[test]
fn images_pull_answers_a_basic_challenge_with_the_login() {
    check_login_outcomes(pulls_with_logins(true));
}
