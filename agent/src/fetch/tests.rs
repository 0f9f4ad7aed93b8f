//! The fetcher against a real HTTP server on loopback (issue 19): archives
//! unpacked with their executable bits and owner, checksums checked, the
//! cache used once and evicted by size, hostile archives and local paths
//! outside `--artifact-paths` refused; and the supervisor's handling of a
//! fetch (FAILED with FETCH_FAILED before the command ever runs, a kill
//! during a fetch).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, CommandUri, StatusReason};

use super::{FetchConfig, FetchError, Fetcher, check};
use crate::images::tests::fixtures::{E, gzip, tar};
use crate::metrics::Metrics;

/// Files served by path, and how many requests came.
#[derive(Default)]
struct Files {
    files: HashMap<String, Vec<u8>>,
    requests: AtomicUsize,
    /// Requests of `/wait` being answered, and the most at once.
    waiting: AtomicUsize,
    most_waiting: AtomicUsize,
}

/// Where `/redirect?to=N` sends its requests.
const REDIRECTS: &[&str] = &[
    "http://127.0.0.1:1/refused?X-Amz-Signature=secret",
    "http://169.254.169.254/latest/meta-data/",
];

async fn serve_file(State(files): State<Arc<Files>>, uri: Uri) -> Response {
    files.requests.fetch_add(1, Ordering::SeqCst);
    if uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if uri.path().starts_with("/wait") {
        let now = files.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        files.most_waiting.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        files.waiting.fetch_sub(1, Ordering::SeqCst);
        return b"waited".to_vec().into_response();
    }
    if uri.path() == "/redirect" {
        let to = uri.query().and_then(|q| q.strip_prefix("to=")?.parse::<usize>().ok());
        let location = REDIRECTS[to.unwrap_or(0)];
        return (StatusCode::FOUND, [(axum::http::header::LOCATION, location)]).into_response();
    }
    match files.files.get(uri.path()) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An HTTP server on loopback serving `files` (path → bytes); its base URL.
async fn server(files: &[(&str, Vec<u8>)]) -> (String, Arc<Files>) {
    let files = Arc::new(Files {
        files: files.iter().map(|(p, b)| (format!("/{p}"), b.clone())).collect(),
        ..Files::default()
    });
    let app = axum::Router::new().fallback(serve_file).with_state(files.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), files)
}

fn sha256(bytes: &[u8]) -> String {
    crate::images::Digest::of(bytes).hex().to_owned()
}

fn uri(value: String) -> CommandUri {
    CommandUri {
        value,
        ..Default::default()
    }
}

/// The defaults, and loopback allowed: the test servers are there.
fn config() -> FetchConfig {
    FetchConfig {
        allow_loopback: true,
        ..FetchConfig::default()
    }
}

fn fetcher(work: &Path, config: FetchConfig) -> (Fetcher, Metrics) {
    let metrics = Metrics::new();
    (Fetcher::new(config, work, metrics.clone()).unwrap(), metrics)
}

async fn fetch(f: &Fetcher, uri: &CommandUri, sandbox: &Path) -> Result<super::Fetched, FetchError> {
    f.fetch(&check(uri)?, sandbox, None).await
}

const SCRIPT: &[u8] = b"#!/bin/sh\necho fetched-ok\n";

fn tool_tgz() -> Vec<u8> {
    gzip(&tar(vec![
        E::dir("tool"),
        E::file("tool/run.sh", SCRIPT).mode(0o4755),
        // Owners are the task's user, whatever the archive says.
        E::file("tool/data/readme", b"docs").owner(1234, 5678),
        E::symlink("tool/latest", "run.sh"),
    ]))
}

fn metric(m: &Metrics, name: &str) -> String {
    m.encode()
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_owned()
}

/// Root, which giving artifacts to another user needs; else the test is
/// skipped (as the container init tests are).
fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: giving artifacts to another user needs root");
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_archive_is_extracted_and_executable() {
    if !is_root() {
        return;
    }
    let tgz = tool_tgz();
    let (base, _) = server(&[("dl/tool.tar.gz", tgz.clone()), ("bin/helper", SCRIPT.to_vec())]).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = fetcher(dir.path(), config());
    let sandbox = dir.path().join("sandbox");
    let owner = (65534, 65534);
    let archive = CommandUri {
        extract: true,
        sha256: sha256(&tgz),
        ..uri(format!("{base}/dl/tool.tar.gz"))
    };
    f.fetch(&check(&archive).unwrap(), &sandbox, Some(owner)).await.unwrap();
    let helper = CommandUri {
        executable: true,
        output_file: "bin/helper.sh".into(),
        ..uri(format!("{base}/bin/helper"))
    };
    f.fetch(&check(&helper).unwrap(), &sandbox, Some(owner)).await.unwrap();

    for (path, executable) in [
        ("tool/run.sh", true),
        ("tool/data/readme", false),
        ("bin/helper.sh", true),
    ] {
        let meta = std::fs::metadata(sandbox.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), owner, "{path}");
        assert_eq!(meta.mode() & 0o111 != 0, executable, "{path}: {:o}", meta.mode());
        // No set-id bits come out of an archive.
        assert_eq!(meta.mode() & 0o7000, 0, "{path}");
    }
    for dir in ["", "tool", "tool/data", "bin"] {
        let meta = std::fs::metadata(sandbox.join(dir)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), owner, "dir {dir:?}");
    }
    assert_eq!(
        std::fs::read_link(sandbox.join("tool/latest")).unwrap(),
        Path::new("run.sh")
    );
    assert!(!sandbox.join("tool.tar.gz").exists(), "the archive itself is not kept");
    let out = std::process::Command::new(sandbox.join("tool/run.sh"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"fetched-ok\n");
    // No download is left behind.
    assert_eq!(std::fs::read_dir(dir.path().join("artifacts/tmp")).unwrap().count(), 0);
}

/// A `.tar.zst` (or `.tzst`) is unpacked like a `.tar.gz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_archive_is_extracted() {
    let tar_bytes = tar(vec![E::dir("tool"), E::file("tool/run.sh", SCRIPT).mode(0o755)]);
    let zst = crate::images::tests::fixtures::zstd(&tar_bytes);
    let (base, _) = server(&[("dl/tool.tar.zst", zst.clone()), ("dl/tool.tzst", zst)]).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = fetcher(dir.path(), config());
    for name in ["tool.tar.zst", "tool.tzst"] {
        let sandbox = dir.path().join(name);
        let archive = CommandUri {
            extract: true,
            ..uri(format!("{base}/dl/{name}"))
        };
        f.fetch(&check(&archive).unwrap(), &sandbox, None).await.unwrap();
        assert_eq!(std::fs::read(sandbox.join("tool/run.sh")).unwrap(), SCRIPT, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_is_refused_and_nothing_is_kept() {
    let (base, _) = server(&[("tool.tgz", tool_tgz())]).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = fetcher(dir.path(), config());
    let sandbox = dir.path().join("sandbox");
    let wrong = sha256(b"something else");
    let bad = CommandUri {
        extract: true,
        cache: true,
        sha256: wrong.to_uppercase(),
        ..uri(format!("{base}/tool.tgz"))
    };
    let e = fetch(&f, &bad, &sandbox).await.unwrap_err();
    let expected = format!(
        "artifact {base}/tool.tgz: sha256 is {}, expected {wrong}",
        sha256(&tool_tgz())
    );
    assert_eq!(e.to_string(), expected);
    assert!(!sandbox.join("tool").exists());
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("artifacts")).unwrap().collect();
    assert_eq!(cached.len(), 1, "only tmp/, empty: {cached:?}");
    assert_eq!(std::fs::read_dir(dir.path().join("artifacts/tmp")).unwrap().count(), 0);

    let missing = fetch(&f, &uri(format!("{base}/nothing-here")), &sandbox)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("404"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_fetch_of_a_uri_uses_the_cache() {
    let tgz = tool_tgz();
    let (base, files) = server(&[("tool.tgz", tgz.clone())]).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, metrics) = fetcher(dir.path(), config());
    let cached = CommandUri {
        extract: true,
        cache: true,
        sha256: sha256(&tgz),
        ..uri(format!("{base}/tool.tgz"))
    };
    let first = fetch(&f, &cached, &dir.path().join("s1")).await.unwrap();
    let second = fetch(&f, &cached, &dir.path().join("s2")).await.unwrap();
    assert!(!first.from_cache && second.from_cache);
    assert_eq!(files.requests.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read(dir.path().join("s2/tool/run.sh")).unwrap(), SCRIPT);
    assert_eq!(
        metric(&metrics, "mezzo_agent_artifact_cache_hits"),
        "mezzo_agent_artifact_cache_hits_total 1"
    );
    assert_eq!(
        metric(&metrics, "mezzo_agent_artifact_cache_misses"),
        "mezzo_agent_artifact_cache_misses_total 1"
    );

    // A task's copy is its own: changing it leaves the cache as it was.
    std::fs::write(dir.path().join("s2/tool/run.sh"), b"changed").unwrap();
    fetch(&f, &cached, &dir.path().join("s3")).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("s3/tool/run.sh")).unwrap(), SCRIPT);

    // Without `cache`, every fetch downloads.
    let plain = CommandUri {
        cache: false,
        ..cached.clone()
    };
    fetch(&f, &plain, &dir.path().join("s4")).await.unwrap();
    assert_eq!(files.requests.load(Ordering::SeqCst), 2);

    // Concurrent fetches of one new key download it once.
    let other = CommandUri {
        sha256: String::new(),
        ..cached
    };
    let (s5, s6) = (dir.path().join("s5"), dir.path().join("s6"));
    let (a, b) = tokio::join!(fetch(&f, &other, &s5), fetch(&f, &other, &s6));
    assert!(a.unwrap().from_cache != b.unwrap().from_cache);
    assert_eq!(files.requests.load(Ordering::SeqCst), 3);
}

/// A cache of 250 bytes: two of [`blob_server`]'s blobs.
fn small_cache() -> FetchConfig {
    FetchConfig {
        cache_max_bytes: 250,
        ..config()
    }
}

/// A server of `n` blobs of 100 bytes, `PREFIXi`; their names and bytes.
async fn blob_server(prefix: &str, n: u8) -> (Vec<(String, Vec<u8>)>, (String, Arc<Files>)) {
    let blobs: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("{prefix}{i}"), vec![i; 100])).collect();
    let served: Vec<(&str, Vec<u8>)> = blobs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let server = server(&served).await;
    (blobs, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_evicts_the_least_recently_used_beyond_its_size() {
    let (blobs, (base, files)) = blob_server("a", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_cache();
    let (f, metrics) = fetcher(dir.path(), config);
    let cached = |name: &str| CommandUri {
        cache: true,
        ..uri(format!("{base}/{name}"))
    };
    for (i, (name, _)) in blobs.iter().enumerate() {
        fetch(&f, &cached(name), &dir.path().join(format!("s{i}")))
            .await
            .unwrap();
        // Distinct last uses, whatever the file system's time resolution.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count()
    };
    assert_eq!(entries(&dir.path().join("artifacts")), 2);
    assert_eq!(
        metric(&metrics, "mezzo_agent_artifact_cache_evictions"),
        "mezzo_agent_artifact_cache_evictions_total 1"
    );
    // The newest two are still there; the oldest is fetched again.
    assert!(
        fetch(&f, &cached("a2"), &dir.path().join("x"))
            .await
            .unwrap()
            .from_cache
    );
    assert!(
        !fetch(&f, &cached("a0"), &dir.path().join("y"))
            .await
            .unwrap()
            .from_cache
    );
    assert_eq!(files.requests.load(Ordering::SeqCst), 4);

    // One larger than the whole cache is fetched, not kept.
    let (big_base, _) = server(&[("big", vec![7; 400])]).await;
    let big = CommandUri {
        cache: true,
        ..uri(format!("{big_base}/big"))
    };
    assert!(!fetch(&f, &big, &dir.path().join("z")).await.unwrap().from_cache);
    assert_eq!(std::fs::read(dir.path().join("z/big")).unwrap().len(), 400);
    assert_eq!(entries(&dir.path().join("artifacts")), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_cannot_escape_the_sandbox() {
    let hostile = [
        ("dotdot.tar", tar(vec![E::file("../escaped", b"x")])),
        ("deep.tar", tar(vec![E::file("a/../../escaped", b"x")])),
        ("link-out.tar", tar(vec![E::symlink("etc", "../../../etc")])),
        ("link-abs.tar", tar(vec![E::symlink("etc", "/etc")])),
        (
            "link-loop.tar",
            tar(vec![E::symlink("here", "."), E::symlink("up", "here/..")]),
        ),
        (
            "through-link.tar",
            tar(vec![E::symlink("d", "."), E::file("d/x", b"x")]),
        ),
        ("device.tar", tar(vec![E::device("null", tar::EntryType::Char, 1, 3)])),
        ("whiteout.tar", tar(vec![E::device("wh", tar::EntryType::Char, 0, 0)])),
    ];
    let served: Vec<(&str, Vec<u8>)> = hostile.iter().map(|(n, b)| (*n, b.clone())).collect();
    let (base, _) = server(&served).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = fetcher(dir.path(), config());
    for (name, _) in &hostile {
        let sandbox = dir.path().join("s").join(name);
        let u = CommandUri {
            extract: true,
            ..uri(format!("{base}/{name}"))
        };
        let e = fetch(&f, &u, &sandbox).await.unwrap_err();
        assert!(matches!(e, FetchError::Extract { .. }), "{name}: {e}");
        assert!(
            e.to_string()
                .contains(&format!("artifact {base}/{name}: cannot unpack it")),
            "{e}"
        );
    }
    assert!(!dir.path().join("s/escaped").exists() && !dir.path().join("escaped").exists());
    // The output name is checked by the agent too.
    let e = fetch(
        &f,
        &CommandUri {
            output_file: "../x".into(),
            ..uri(format!("{base}/dotdot.tar"))
        },
        &dir.path().join("s"),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FetchError::Invalid(_)), "{e}");
}

/// `allowed/` (for --artifact-paths) and `outside/`, made in `root`.
fn allowed_and_outside(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let dirs = (root.join("allowed"), root.join("outside"));
    std::fs::create_dir_all(&dirs.0).unwrap();
    std::fs::create_dir_all(&dirs.1).unwrap();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_paths_come_only_from_the_allowed_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let (allowed, outside) = allowed_and_outside(dir.path());
    std::fs::write(allowed.join("tool.sh"), SCRIPT).unwrap();
    std::fs::set_permissions(allowed.join("tool.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(outside.join("secret"), b"agent-only").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), allowed.join("sneaky")).unwrap();
    let sandbox = dir.path().join("sandbox");
    let local = |p: &Path| CommandUri {
        executable: true,
        ..uri(p.display().to_string())
    };

    // No --artifact-paths: no local file at all.
    let (none, _) = fetcher(&dir.path().join("w1"), config());
    let e = fetch(&none, &local(&allowed.join("tool.sh")), &sandbox)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::NotAllowed { .. }), "{e}");
    let e = fetch(&none, &uri("/etc/shadow".into()), &sandbox).await.unwrap_err();
    assert!(e.to_string().contains("--artifact-paths"), "{e}");

    let config = FetchConfig {
        allowed_paths: vec![allowed.clone()],
        ..config()
    };
    let (f, _) = fetcher(&dir.path().join("w2"), config);
    fetch(&f, &local(&allowed.join("tool.sh")), &sandbox).await.unwrap();
    let meta = std::fs::metadata(sandbox.join("tool.sh")).unwrap();
    assert!(meta.permissions().mode() & 0o111 != 0);
    let file_url = CommandUri {
        output_file: "copy.sh".into(),
        ..uri(format!("file://{}", allowed.join("tool.sh").display()))
    };
    fetch(&f, &file_url, &sandbox).await.unwrap();
    assert_eq!(std::fs::read(sandbox.join("copy.sh")).unwrap(), SCRIPT);
    let e = fetch(&f, &local(&outside.join("secret")), &sandbox).await.unwrap_err();
    assert!(matches!(e, FetchError::NotAllowed { .. }), "{e}");
    let e = fetch(&f, &local(&allowed.join("sneaky")), &sandbox).await.unwrap_err();
    assert!(matches!(e, FetchError::Refused { .. }), "{e}");
    assert!(!sandbox.join("secret").exists() && !sandbox.join("sneaky").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_over_the_size_limit_is_refused() {
    let (base, _) = server(&[("big", vec![1; 1000])]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = FetchConfig {
        max_bytes: 100,
        ..config()
    };
    let (f, _) = fetcher(dir.path(), config);
    let e = fetch(&f, &uri(format!("{base}/big")), &dir.path().join("s"))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { limit: 100, .. }), "{e}");
    assert!(!dir.path().join("s/big").exists());
}

/// Runs a task with `uris` under a real supervisor and the posix
/// containerizer, killed once it announces a fetch if asked; its updates
/// to the end.
async fn supervise(
    base_dir: &Path,
    fetcher: Arc<Fetcher>,
    uris: Vec<CommandUri>,
    kill_while_fetching: bool,
) -> Vec<v1::TaskStatus> {
    use crate::task::supervisor::{self, SupervisorSpec};
    let key = crate::key::TaskKey::parse("fw-1", "task-1").unwrap();
    let task = v1::TaskInfo {
        task_id: "task-1".into(),
        command: Some(v1::CommandInfo {
            value: "touch ran".into(),
            shell: true,
            uris,
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = SupervisorSpec {
        key,
        task,
        secrets: Default::default(),
        agent_id: "agent-1".into(),
        sandbox: base_dir.join("sandbox"),
        run_dir: base_dir.join("run"),
        default_kill_grace: Duration::from_secs(1),
        launched_at: 0.0,
        fetcher,
        volumes: Arc::new(crate::volumes::Volumes::open(base_dir, vec![]).unwrap()),
        busy_volume: None,
        container_id: None,
    };
    let (tx, mut reports) = tokio::sync::mpsc::channel(16);
    let containerizer = Arc::new(crate::containerizer::PosixContainerizer::new());
    let handle = supervisor::spawn(spec, containerizer, tx, Metrics::new(), None);
    let mut out = Vec::new();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .unwrap()
            .unwrap();
        // Once the fetch has begun, not before (a loaded machine).
        if kill_while_fetching && r.status.message.starts_with("fetching ") {
            handle.kill(None);
        }
        let state = TaskState::from_proto(r.status.state);
        out.push(r.status);
        if state.is_some_and(|s| s.is_terminal()) {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_fails_the_task_before_its_command_runs() {
    let (base, _) = server(&[("tool.tgz", tool_tgz())]).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = CommandUri {
        extract: true,
        sha256: "0".repeat(64),
        ..uri(format!("{base}/tool.tgz"))
    };
    let f = Arc::new(fetcher(&dir.path().join("work"), config()).0);
    let updates = supervise(dir.path(), f, vec![bad], false).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, v1::TaskState::TaskFailed as i32, "{updates:?}");
    assert_eq!(last.reason, StatusReason::ReasonFetchFailed as i32);
    assert!(
        last.message
            .starts_with(&format!("artifact {base}/tool.tgz: sha256 is ")),
        "{}",
        last.message
    );
    assert!(
        updates.iter().any(|u| u.message == format!("fetching {base}/tool.tgz")),
        "{updates:?}"
    );
    assert!(!dir.path().join("sandbox/ran").exists(), "the command ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_fetch_ends_the_task_at_once() {
    let (base, _) = server(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let f = Arc::new(fetcher(&dir.path().join("work"), config()).0);
    let slow = vec![uri(format!("{base}/slow"))];
    let updates = supervise(dir.path(), f, slow, true).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, v1::TaskState::TaskKilled as i32, "{updates:?}");
    assert_eq!(last.reason, StatusReason::ReasonTaskKilledDuringLaunch as i32);
    assert_eq!(last.message, format!("killed while fetching {base}/slow"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dir.path().join("sandbox/ran").exists(), "the command ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_is_told_in_a_starting_update() {
    let (base, _) = server(&[("tool.tgz", tool_tgz())]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(fetcher(&dir.path().join("work"), config()).0);
    let cached = CommandUri {
        extract: true,
        cache: true,
        ..uri(format!("{base}/tool.tgz"))
    };
    let told = format!("fetched {base}/tool.tgz from cache");
    for (i, hit) in [(1, false), (2, true)] {
        let task_dir = dir.path().join(format!("t{i}"));
        let updates = supervise(&task_dir, f.clone(), vec![cached.clone()], false).await;
        assert_eq!(
            updates.last().unwrap().state,
            v1::TaskState::TaskFinished as i32,
            "{updates:?}"
        );
        assert_eq!(updates.iter().any(|u| u.message == told), hit, "{updates:?}");
        assert!(task_dir.join("sandbox/ran").exists() && task_dir.join("sandbox/tool/run.sh").exists());
    }
}

/// Review item 7: the sandbox is reused when a task is launched again
/// under its id; the earlier run's copy is replaced, and a symlink the
/// task left at the artifact's name is replaced, not written through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaunch_under_the_same_id_replaces_the_earlier_copy() {
    let (base, _) = server(&[("bin/helper", SCRIPT.to_vec())]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(fetcher(&dir.path().join("work"), config()).0);
    let helper = CommandUri {
        executable: true,
        ..uri(format!("{base}/bin/helper"))
    };
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"not the task's").unwrap();
    let copy = dir.path().join("sandbox/helper");
    for run in 0..3 {
        if run == 2 {
            std::fs::remove_file(&copy).unwrap();
            std::os::unix::fs::symlink(&outside, &copy).unwrap();
        }
        let updates = supervise(dir.path(), f.clone(), vec![helper.clone()], false).await;
        let last = updates.last().unwrap();
        assert_eq!(last.state, v1::TaskState::TaskFinished as i32, "run {run}: {updates:?}");
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"not the task's");
    assert!(std::fs::symlink_metadata(&copy).unwrap().file_type().is_file());
    assert_eq!(std::fs::read(&copy).unwrap(), SCRIPT);
    let names: Vec<_> = std::fs::read_dir(dir.path().join("sandbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".mezzo-fetch-")), "{names:?}");
}

/// Review item 2, DESIGN.md "Trust": credentials and presigned queries in
/// a URI never reach a status message, also through a redirect whose
/// failure reqwest would tell with its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_a_uri_never_reach_a_status_message() {
    let (base, _) = server(&[]).await;
    let authority = base.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(fetcher(&dir.path().join("work"), config()).0);
    let cases = [
        (
            format!("http://user:secret@{authority}/nothing?X-Amz-Signature=secret"),
            format!("artifact {base}/nothing?…: the server answered 404 Not Found"),
        ),
        (
            format!("http://user:secret@{authority}/redirect?to=0&token=secret"),
            format!("artifact {base}/redirect?…: "),
        ),
    ];
    for (i, (value, told)) in cases.into_iter().enumerate() {
        let task_dir = dir.path().join(format!("t{i}"));
        let updates = supervise(&task_dir, f.clone(), vec![uri(value)], false).await;
        let last = updates.last().unwrap();
        assert_eq!(last.reason, StatusReason::ReasonFetchFailed as i32, "{updates:?}");
        assert!(last.message.starts_with(&told), "{}", last.message);
        for u in &updates {
            assert!(!u.message.contains("secret"), "{}", u.message);
        }
    }
}

/// Review item 1 (SSRF): by default nothing is fetched from loopback, an
/// IP literal or a name resolving to it, and the task is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_without_the_flag() {
    let (base, files) = server(&[("tool.tgz", tool_tgz())]).await;
    let port = base.rsplit(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let strict = Arc::new(fetcher(&dir.path().join("work"), FetchConfig::default()).0);
    let updates = supervise(dir.path(), strict.clone(), vec![uri(format!("{base}/tool.tgz"))], false).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, v1::TaskState::TaskFailed as i32, "{updates:?}");
    assert_eq!(last.reason, StatusReason::ReasonFetchFailed as i32);
    assert_eq!(
        last.message,
        format!(
            "artifact {base}/tool.tgz: 127.0.0.1 is a loopback address, which this agent does not fetch artifacts from without --artifact-allow-loopback"
        )
    );
    for host in ["localhost", "[::ffff:127.0.0.1]"] {
        let e = fetch(
            &strict,
            &uri(format!("http://{host}:{port}/tool.tgz")),
            &dir.path().join("s"),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FetchError::Download { .. }), "{e}");
        assert!(e.to_string().contains("is a loopback address"), "{e}");
    }
    assert_eq!(files.requests.load(Ordering::SeqCst), 0);
}

/// Review item 1: link-local addresses (the cloud metadata service) are
/// refused even with loopback allowed, directly or through a redirect;
/// the check fails before anything is connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_local_is_refused_even_with_loopback_allowed() {
    let (base, files) = server(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = fetcher(dir.path(), config());
    let sandbox = dir.path().join("s");
    for value in [
        "http://169.254.169.254/latest/meta-data/iam/info".to_owned(),
        "http://[::ffff:169.254.169.254]/latest/meta-data/x".to_owned(),
        "http://[fe80::1]/x".to_owned(),
    ] {
        let e = fetch(&f, &uri(value.clone()), &sandbox).await.unwrap_err();
        assert!(matches!(e, FetchError::Download { .. }), "{value}: {e}");
        assert!(e.to_string().contains("is a link-local address"), "{e}");
    }
    let e = fetch(&f, &uri(format!("{base}/redirect?to=1")), &sandbox)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "a redirect to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a link-local address"
        ),
        "{e}"
    );
    assert_eq!(files.requests.load(Ordering::SeqCst), 1, "only the redirect");
}

/// Review item 3: a local file is opened beneath its allowed directory
/// through no symlink (a parent swapped for one cannot lead out), only if
/// it is a regular file all users may read, and a FIFO does not block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_are_refused_unless_plain_and_readable_by_all() {
    let dir = tempfile::tempdir().unwrap();
    let (allowed, outside) = allowed_and_outside(dir.path());
    let write = |p: &Path, mode: u32| {
        std::fs::write(p, b"bytes").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(&outside.join("shadow"), 0o644);
    std::os::unix::fs::symlink(&outside, allowed.join("sub")).unwrap();
    write(&allowed.join("private"), 0o600);
    write(&allowed.join("public"), 0o644);
    nix::unistd::mkfifo(&allowed.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let config = FetchConfig {
        allowed_paths: vec![allowed.clone()],
        ..config()
    };
    let (f, _) = fetcher(&dir.path().join("work"), config);
    let sandbox = dir.path().join("sandbox");
    for (name, why) in [
        ("sub/shadow", "it is, or goes through, a symlink"),
        ("private", "not readable by all users (the agent serves only those)"),
        ("fifo", "not a regular file"),
    ] {
        let path = allowed.join(name);
        let e = tokio::time::timeout(
            Duration::from_secs(5),
            fetch(&f, &uri(path.display().to_string()), &sandbox),
        )
        .await
        .expect("the fetch hung")
        .unwrap_err();
        assert!(matches!(e, FetchError::Refused { .. }), "{name}: {e}");
        assert_eq!(
            e.to_string(),
            format!("artifact {}: {} is refused: {why}", path.display(), path.display())
        );
    }
    fetch(&f, &uri(allowed.join("public").display().to_string()), &sandbox)
        .await
        .unwrap();
    assert_eq!(std::fs::read(sandbox.join("public")).unwrap(), b"bytes");
    assert!(!sandbox.join("shadow").exists() && !sandbox.join("private").exists());
}

/// Review item 5: the cache holds other frameworks' private artifacts:
/// its directories are 0700 (also those an older agent left 0755), its
/// entries 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_private_to_the_agent() {
    let (base, _) = server(&[("blob", vec![3; 100])]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (f, _) = fetcher(dir.path(), config());
    let cached = CommandUri {
        cache: true,
        ..uri(format!("{base}/blob"))
    };
    fetch(&f, &cached, &dir.path().join("s")).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("tmp")), 0o700);
    let entries: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(mode(&entries[0]), 0o600);
    // The task's copy is its own, readable.
    assert_eq!(mode(&dir.path().join("s/blob")), 0o644);
}

/// Review item 8: inserts that finish together each evict; one that
/// finds an entry already gone (or fails to evict) still serves its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evictions_fail_no_fetch() {
    let (blobs, (base, _)) = blob_server("b", 17).await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_cache();
    let f = Arc::new(fetcher(dir.path(), config).0);
    let mut fetches = tokio::task::JoinSet::new();
    for (name, _) in &blobs[..16] {
        let (f, sandbox) = (f.clone(), dir.path().join(format!("s-{name}")));
        let cached = CommandUri {
            cache: true,
            ..uri(format!("{base}/{name}"))
        };
        fetches.spawn(async move { fetch(&f, &cached, &sandbox).await });
    }
    while let Some(done) = fetches.join_next().await {
        done.unwrap().unwrap();
    }
    // Entries in use were skipped; the next insert evicts down to the limit.
    let last = CommandUri {
        cache: true,
        ..uri(format!("{base}/b16"))
    };
    fetch(&f, &last, &dir.path().join("s-last")).await.unwrap();
    let left = std::fs::read_dir(dir.path().join("artifacts"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert!(left <= 2, "{left} entries left");
}

/// Review item 4: one fetch ends within the agent's deadline, however
/// slowly the server answers, and at most MAX_CONCURRENT_FETCHES run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_have_a_deadline_and_a_concurrency_cap() {
    let (base, files) = server(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = FetchConfig {
        deadline: Duration::from_secs(1),
        ..config()
    };
    let f = Arc::new(fetcher(dir.path(), config).0);
    let started = std::time::Instant::now();
    let e = fetch(&f, &uri(format!("{base}/slow")), &dir.path().join("s"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        e.to_string(),
        format!("artifact {base}/slow: not fetched within this agent's deadline of 1s")
    );

    let mut fetches = tokio::task::JoinSet::new();
    for i in 0..super::MAX_CONCURRENT_FETCHES + 4 {
        let (f, sandbox) = (f.clone(), dir.path().join(format!("w{i}")));
        let waiting = uri(format!("{base}/wait{i}"));
        fetches.spawn(async move { fetch(&f, &waiting, &sandbox).await });
    }
    while let Some(done) = fetches.join_next().await {
        done.unwrap().unwrap();
    }
    let most = files.most_waiting.load(Ordering::SeqCst);
    assert!((2..=super::MAX_CONCURRENT_FETCHES).contains(&most), "{most} at once");
}
