//! Contract tests for the container init with a user namespace (issue
//! 15, `mezzo agent --user-namespaces`), on the harness of `init_tests.rs`.

use std::path::PathBuf;

use super::*;

/// Host ids of the user namespace tests: container id N is host 300000+N.
const USERNS: super::super::super::userns::IdRange = super::super::super::userns::IdRange {
    base: 300_000,
    count: 65536,
};

/// A container with the task's own view and user namespace, running as
/// container user `uid`, with its sandbox handed to that user as the
/// agent does, and a shared writable host dir (`shared`, mode 1777) that
/// holds a root-owned 0644 file `root-file`.
fn in_userns(uid: u32, script: &str) -> (Container, PathBuf) {
    let (mut c, _) = with_view(&["/bin/sh", "-c", script]);
    let shared = c.spec.run_dir.parent().expect("temp dir").join("shared");
    std::fs::create_dir(&shared).expect("shared dir");
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).expect("chmod");
    std::fs::write(shared.join("root-file"), b"host root's\n").expect("root file");
    if let Some(view) = c.spec.view.as_mut() {
        view.host_paths = vec![super::super::super::rootfs::HostPath {
            path: shared.clone(),
            writable: true,
        }];
    }
    let host = USERNS.host(uid).expect("mapped");
    std::os::unix::fs::chown(&c.spec.sandbox, Some(host), Some(host)).expect("chown sandbox");
    c.spec.uid = uid;
    c.spec.gid = uid;
    c.spec.groups = vec![uid];
    c.spec.userns = Some(USERNS);
    c.spec.argv[2] = script.replace("SHARED", &shared.display().to_string());
    (c, shared)
}

/// Issue 15: with a user namespace, root in a task is host uid BASE: it
/// sees the mapping, is uid 0 inside, and what it creates (in its
/// sandbox, in a shared host dir) is BASE's on the host; it cannot write
/// a host root's file that host root could. The rest of the view (read-only
/// host, private /tmp and /dev with working devices, masked /proc) and the
/// confinement (root's three capabilities, no_new_privs, the filter) hold.
#[test]
fn root_in_a_user_namespace_is_an_unprivileged_host_user() {
    if !is_root() || super::super::super::userns::unsupported().is_some() {
        return;
    }
    let script = r#"try() { if out=$(sh -c "$2" 2>&1); then echo "$1: ok"; else echo "$1: ${out##*: }"; fi; }
echo "uid_map: $(awk '{print $1, $2, $3}' /proc/self/uid_map)"
echo "gid_map: $(awk '{print $1, $2, $3}' /proc/self/gid_map)"
echo "id: $(id -u):$(id -g)"
try sandbox 'echo x > ./from-task'
try shared 'echo x > SHARED/from-task'
try root_file 'echo x >> SHARED/root-file'
try chown 'chown 0 SHARED/root-file'
try etc ': > /etc/mezzo-userns'
try tmp ': > /tmp/x'
try null 'echo x > /dev/null'
try urandom 'head -c 4 /dev/urandom > /dev/null'
try mknod 'mknod /tmp/kmsg c 1 11'
echo "dev: $(ls /dev | tr '\n' ' ')"
echo "keys: $(wc -c < /proc/keys)"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t' ' '
"#;
    let (mut c, shared) = in_userns(0, script);
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    for expected in [
        "uid_map: 0 300000 65536",
        "gid_map: 0 300000 65536",
        "id: 0:0",
        "sandbox: ok",
        "shared: ok",
        "root_file: Permission denied",
        "chown: Operation not permitted",
        "etc: Read-only file system",
        "tmp: ok",
        "null: ok",
        "urandom: ok",
        "mknod: Operation not permitted",
        "dev: fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero",
        "keys: 0",
        "CapEff: 0000000020000420",
        "CapBnd: 0000000020000420",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ] {
        assert!(
            out.lines().any(|l| l.trim_end() == expected),
            "no {expected:?} in:\n{out}"
        );
    }
    use std::os::unix::fs::MetadataExt;
    for file in [c.spec.sandbox.join("from-task"), shared.join("from-task")] {
        let meta = std::fs::metadata(&file).expect("written by the task");
        assert_eq!((meta.uid(), meta.gid()), (300_000, 300_000), "{}", file.display());
    }
    assert_eq!(
        std::fs::read_to_string(shared.join("root-file")).expect("root file"),
        "host root's\n"
    );
    // Control: host root can write it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(shared.join("root-file"))
        .expect("host root writes the file");
}

/// Issue 15: the default user (nobody) works in a user namespace too:
/// its uid inside is its own, and its sandbox file is BASE+65534's.
#[test]
fn nobody_in_a_user_namespace_writes_its_sandbox() {
    if !is_root() || super::super::super::userns::unsupported().is_some() {
        return;
    }
    let (mut c, _) = in_userns(65534, "id -u; echo x > ./from-task; grep -c . /proc/self/uid_map");
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert_eq!(c.stdout(), "65534\n1\n");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(c.spec.sandbox.join("from-task")).expect("written by the task");
    assert_eq!(meta.uid(), 300_000 + 65534);
    assert_eq!(
        super::super::super::claim::read(&c.spec.run_dir),
        Some(super::super::super::claim::Claim::Started),
        "the supervisor took the claim"
    );
}

/// Issue 15: in a user namespace the supervisor moves the init into the
/// cgroups before it runs anything (only the init and the task are in
/// them), and the exit is recorded; a claim already dropped by recovery
/// still keeps the task from starting.
#[test]
fn a_user_namespace_keeps_the_cgroups_and_the_claim() {
    let Some(root) = pids_root() else { return };
    if super::super::super::userns::unsupported().is_some() {
        return;
    }
    let (mut c, _) = in_userns(0, "grep pids /proc/self/cgroup; cat /proc/self/uid_map");
    let name = c.join_new_cgroup(root);
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert!(
        c.stdout()
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(&format!(":pids:/{name}"))),
        "stdout: {}",
        c.stdout()
    );

    let (mut dropped, _) = in_userns(0, "echo ran");
    assert_eq!(
        super::super::super::claim::take(&dropped.spec.run_dir, super::super::super::claim::Claim::Dropped)
            .expect("claim"),
        super::super::super::claim::Claim::Dropped
    );
    assert_eq!(dropped.run(), ExitRecord::Error(DROPPED_BY_RECOVERY.into()));
    assert_eq!(dropped.stdout(), "", "the task never ran");
}

/// Issue 15: the UTS and network namespaces are made with the user
/// namespace and belong to it: its root sets the hostname and brings `lo`
/// up, as without one.
#[test]
fn hostname_and_loopback_in_a_user_namespace() {
    if !is_root() || super::super::super::userns::unsupported().is_some() {
        return;
    }
    let ip = "/usr/sbin/ip";
    if !Path::new(ip).exists() {
        eprintln!("skipped: no {ip}");
        return;
    }
    let (mut c, _) = in_userns(65534, &format!("hostname; {ip} -o link show"));
    c.spec.hostname = Some("in-userns".into());
    c.spec.namespaces.net = true;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "the hostname and only lo: {out}");
    assert_eq!(lines[0], "in-userns");
    assert!(lines[1].contains(": lo: <LOOPBACK,UP"), "lo up: {out}");
}
