//! The files API refuses every way out of the sandbox (issue 7): `..`,
//! absolute paths, symlinks leading out, and their percent-encoded forms.

use std::os::unix::fs::symlink;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A work dir with one task sandbox holding `stdout`, `sub/inner`, and
/// symlinks in and out; plus a secret beside the sandboxes.
fn setup() -> (tempfile::TempDir, Sandbox) {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let sb = work.join("sandboxes/fw1/t1");
    std::fs::create_dir_all(sb.join("sub")).expect("mkdir");
    std::fs::write(sb.join("stdout"), "hello\nworld\n").expect("write");
    std::fs::write(sb.join("sub/inner"), "inner").expect("write");
    std::fs::write(work.join("secret"), "secret").expect("write");
    std::fs::create_dir_all(work.join("sandboxes/fw1/t2")).expect("mkdir");
    std::fs::write(work.join("sandboxes/fw1/t2/stdout"), "other task").expect("write");
    symlink(work.join("secret"), sb.join("out-abs")).expect("symlink");
    symlink("../../../secret", sb.join("out-rel")).expect("symlink");
    symlink("../t2", sb.join("neighbour")).expect("symlink");
    symlink("/etc", sb.join("etc")).expect("symlink");
    symlink("sub/inner", sb.join("in-link")).expect("symlink");
    let s = Sandbox::of(work, "fw1", "t1").expect("sandbox");
    (dir, s)
}

/// A read that stops inside a character ends before it; the next one
/// starts at its first byte, so neither shows U+FFFD.
#[test]
fn a_read_never_splits_a_character() {
    let (_d, s) = setup();
    let sb = _d.path().join("sandboxes/fw1/t1");
    std::fs::write(sb.join("utf8"), "aé€😀b").expect("write"); // 1+2+3+4+1 bytes
    let mut text = String::new();
    let mut at = 0;
    for length in [2, 1, 3, 2, 4, 5] {
        let c = s.read("utf8", Some(at), Some(length), None).expect("read");
        assert!(!c.data.contains('\u{FFFD}'), "{c:?}");
        text += &c.data;
        at = c.offset + c.length;
    }
    assert_eq!(text, "aé€😀b");
    assert_eq!(utf8_whole(b"a\xff"), 2, "bytes that are not UTF-8 stay");
}

#[test]
fn reads_and_lists_inside_the_sandbox() {
    let (_d, s) = setup();
    let c = s.read("stdout", None, None, None).expect("read");
    assert_eq!(c.data, "hello\nworld\n");
    assert_eq!((c.offset, c.length, c.size), (0, 12, 12));
    let c = s.read("stdout", Some(6), Some(3), None).expect("read");
    assert_eq!(c.data, "wor");
    let c = s.read("stdout", None, None, Some(6)).expect("tail");
    assert_eq!((c.data.as_str(), c.offset), ("world\n", 6));
    let c = s.read("stdout", Some(100), None, None).expect("past the end");
    assert_eq!((c.length, c.offset), (0, 12));
    assert_eq!(s.read("./sub/inner", None, None, None).expect("read").data, "inner");
    assert_eq!(
        s.read("in-link", None, None, None).expect("symlink inside").data,
        "inner"
    );
    let l = s.browse(".").expect("browse");
    let names: Vec<_> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"stdout") && names.contains(&"sub"), "{names:?}");
    assert!(matches!(s.browse("stdout"), Err(FilesError::NotDir(_))));
    assert!(matches!(s.read("sub", None, None, None), Err(FilesError::IsDir(_))));
    assert!(matches!(s.read("nope", None, None, None), Err(FilesError::NotFound(_))));
    assert!(matches!(
        s.read("stdout", None, Some(MAX_READ + 1), None),
        Err(FilesError::Invalid(_))
    ));
}

#[test]
fn dot_dot_is_refused() {
    let (_d, s) = setup();
    for p in [
        "..",
        "../t2/stdout",
        "sub/../../t2/stdout",
        "sub/../stdout",
        "./../../../secret",
    ] {
        assert!(
            matches!(s.read(p, None, None, None), Err(FilesError::Outside(_))),
            "{p}"
        );
        assert!(matches!(s.browse(p), Err(FilesError::Outside(_))), "{p}");
    }
}

#[test]
fn absolute_paths_are_refused() {
    let (d, s) = setup();
    let abs = d.path().join("secret");
    for p in ["/etc/passwd", abs.to_str().expect("utf8"), "/"] {
        assert!(
            matches!(s.read(p, None, None, None), Err(FilesError::Outside(_))),
            "{p}"
        );
    }
    assert!(matches!(
        s.read("stdout\0x", None, None, None),
        Err(FilesError::Outside(_))
    ));
}

#[test]
fn symlinks_out_of_the_sandbox_are_refused() {
    let (_d, s) = setup();
    for p in ["out-abs", "out-rel", "neighbour/stdout", "etc/passwd"] {
        assert!(
            matches!(s.read(p, None, None, None), Err(FilesError::Escapes(_))),
            "{p}"
        );
    }
    for p in ["neighbour", "etc"] {
        assert!(matches!(s.browse(p), Err(FilesError::Escapes(_))), "{p}");
    }
}

/// Found by fuzzing (docs/fuzzing.md): a path through a file
/// (`stdout/x`), a symlink loop or an overlong name was answered 500, and
/// past a symlink out, "not found" against "leads out" told whether a file
/// exists on the host. Now each is the caller's mistake, and anything
/// beyond a way out is a way out.
#[test]
fn unresolvable_paths_are_client_errors_that_tell_nothing_of_the_host() {
    let (d, s) = setup();
    let sb = d.path().join("sandboxes/fw1/t1");
    symlink("loop-b", sb.join("loop-a")).expect("symlink");
    symlink("loop-a", sb.join("loop-b")).expect("symlink");
    assert!(matches!(
        s.read("stdout/x", None, None, None),
        Err(FilesError::NotFound(_))
    ));
    assert!(matches!(
        s.read("loop-a", None, None, None),
        Err(FilesError::Invalid(_))
    ));
    let long = "n".repeat(300);
    assert!(matches!(s.read(&long, None, None, None), Err(FilesError::Invalid(_))));
    for p in ["etc/passwd", "etc/no-such-file", "out-abs/x", "neighbour/none"] {
        assert!(
            matches!(s.read(p, None, None, None), Err(FilesError::Escapes(_))),
            "{p}"
        );
    }
}

#[test]
fn bad_ids_and_missing_sandboxes_are_refused() {
    let (d, _s) = setup();
    assert!(matches!(Sandbox::of(d.path(), "..", "t1"), Err(FilesError::Invalid(_))));
    assert!(matches!(
        Sandbox::of(d.path(), "fw1", "../t2"),
        Err(FilesError::Invalid(_))
    ));
    assert!(matches!(
        Sandbox::of(d.path(), "fw1", "t9"),
        Err(FilesError::NoSandbox { .. })
    ));
}

/// Sends one raw request (so no client normalises the path) and returns
/// the status code and body.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

#[tokio::test]
async fn percent_encoded_traversal_is_refused_over_http() {
    let (d, _s) = setup();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(d.path().to_path_buf());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (code, body) = raw_get(addr, "/files/fw1/t1/read?path=stdout").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello"), "{body}");
    for target in [
        "/files/fw1/t1/read?path=%2e%2e%2ft2%2fstdout",
        "/files/fw1/t1/read?path=%2E%2E/t2/stdout",
        "/files/fw1/t1/read?path=..%2F..%2F..%2Fsecret",
        "/files/fw1/t1/read?path=%2fetc%2fpasswd",
        "/files/fw1/t1/read?path=sub%2f..%2f..%2ft2%2fstdout",
        "/files/fw1/t1/browse?path=%2e%2e",
        "/files/fw1/t1/read?path=out-rel",
        "/files/fw1/t1/read?path=%6f%75%74-abs",
    ] {
        let (code, body) = raw_get(addr, target).await;
        assert!(code == 400 || code == 403, "{target}: {code} {body}");
        assert!(
            !body.contains("secret\"") && !body.contains("other task"),
            "{target}: {body}"
        );
    }
    // Double encoding is decoded once: `%252e%252e` names a file called
    // `%2e%2e`, which does not exist; it never becomes `..`.
    let (code, _) = raw_get(addr, "/files/fw1/t1/read?path=%252e%252e%252fsecret").await;
    assert_eq!(code, 404);
    // Path segments are ids: encoded `..` there is refused too.
    let (code, _) = raw_get(addr, "/files/%2e%2e/t1/read?path=stdout").await;
    assert_eq!(code, 400);
}

/// A custom executor's sandbox (which its tasks share) is served under
/// `executors/ID`, confined as a task's: its files read, `..` and ids
/// that are not ids refused, a task's sandbox not reachable through it.
#[tokio::test]
async fn an_executors_sandbox_is_served_and_confined() {
    let (d, _s) = setup();
    let sb = d.path().join("sandboxes/fw1/+executors/echo");
    std::fs::create_dir_all(&sb).expect("mkdir");
    std::fs::write(sb.join("stderr"), "executor says hi").expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(d.path().to_path_buf());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (code, body) = raw_get(addr, "/files/fw1/executors/echo/read?path=stderr").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("executor says hi"), "{body}");
    let (code, body) = raw_get(addr, "/files/fw1/executors/echo/browse").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("stderr"), "{body}");
    for (target, want) in [
        ("/files/fw1/executors/echo/read?path=..%2f..%2ft1%2fstdout", 400),
        ("/files/fw1/executors/%2e%2e/read?path=stdout", 400),
        ("/files/fw1/executors/nope/read?path=stderr", 404),
    ] {
        let (code, body) = raw_get(addr, target).await;
        assert_eq!(code, want, "{target}: {body}");
        assert!(!body.contains("hello"), "{target}: {body}");
    }
}
