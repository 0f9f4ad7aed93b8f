//! What a task may say about secrets: their names, and where in its
//! sandbox a secret file goes. Checked by the master when the task
//! arrives and again by the agent before it writes a file.

use std::path::{Component, Path, PathBuf};

/// A secret's name: 1 to 128 letters, digits, `-`, `_` or `.`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A secret file's path inside the sandbox: relative, plain components
/// (no `..`, no `.`), at most 16 deep and 1 KiB long; the result joins
/// onto the sandbox safely (symlinks are the writer's to refuse).
pub fn sandbox_path(p: &str) -> Result<PathBuf, String> {
    sandbox_relative("secret file path", p)
}

/// [`sandbox_path`]'s checks for any path the agent writes into a
/// sandbox, `what` naming it in the error (a fetched artifact's too).
pub fn sandbox_relative(what: &str, p: &str) -> Result<PathBuf, String> {
    let bad = |why: &str| format!("{what} {p:?}: {why}");
    if p.is_empty() || p.len() > 1024 || p.contains('\0') {
        return Err(bad("must be 1 to 1024 bytes"));
    }
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            _ => return Err(bad("must be relative to the sandbox, without `.` or `..`")),
        }
    }
    if out.components().count() > 16 || out.as_os_str().is_empty() {
        return Err(bad("at most 16 parts"));
    }
    if matches!(out.to_str(), Some("stdout" | "stderr")) {
        return Err(bad("stdout and stderr are the task's logs"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(valid_name("db-password.v2") && !valid_name("") && !valid_name("a/b") && !valid_name("a b"));
        assert_eq!(sandbox_path("conf/db.pw"), Ok(PathBuf::from("conf/db.pw")));
        // (`a/./b` is `a/b`: std's components drop an inner `.`.)
        assert_eq!(sandbox_path("a/./b"), Ok(PathBuf::from("a/b")));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x", "stdout", "a\0b"] {
            assert!(sandbox_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(sandbox_path(&"a/".repeat(17)).is_err());
    }
}
