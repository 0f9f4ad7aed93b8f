//! The artifacts a task asks its agent to fetch (`CommandInfo.uris`,
//! docs/frameworks.md "Artifacts"), checked when the task arrives: at most
//! [`MAX_URIS`], each an http(s) URL or an absolute local path with a
//! plain output name, a well-formed checksum, and `extract` only for an
//! archive the agent unpacks ([`mezzo_proto::artifact::check`], which the
//! agent applies again).

use mezzo_proto::artifact::{MAX_URIS, check};
use mezzo_proto::v1;

use super::invalid;
use crate::error::MasterError;

/// Refuses the task `t`'s artifacts with a message naming the task and
/// the URI, if any is wrong.
pub(super) fn check_uris(what: &str, uris: &[v1::CommandUri]) -> Result<(), MasterError> {
    if uris.len() > MAX_URIS {
        return Err(invalid(format!(
            "{what}: at most {MAX_URIS} artifacts, not {}",
            uris.len()
        )));
    }
    for uri in uris {
        check(uri).map_err(|e| invalid(format!("{what}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: &str) -> v1::CommandUri {
        v1::CommandUri {
            value: value.into(),
            ..Default::default()
        }
    }

    fn refused(uris: &[v1::CommandUri]) -> String {
        match check_uris("task t1", uris) {
            Err(MasterError::Invalid(m)) => m,
            other => panic!("{uris:?} not refused: {other:?}"),
        }
    }

    #[test]
    fn good_artifacts_pass() {
        let ok = [
            uri("http://127.0.0.1:8000/app.tar.gz"),
            uri("https://example.com/a/b/tool"),
            uri("/srv/artifacts/data.csv"),
            uri("file:///srv/artifacts/run.sh"),
            v1::CommandUri {
                extract: true,
                cache: true,
                output_file: "app".into(),
                sha256: "0a".repeat(32),
                ..uri("http://h/app.tgz")
            },
        ];
        check_uris("task t1", &ok).expect("valid");
        check_uris("task t1", &[]).expect("none is fine");
    }

    /// Each refusal names the task and the URI, and says why.
    #[test]
    fn bad_artifacts_are_refused_with_the_reason() {
        let cases: Vec<(Vec<v1::CommandUri>, &str)> = vec![
            (vec![uri("/a/b"); MAX_URIS + 1], "at most 64 artifacts"),
            (vec![uri("")], "1 to 4096 bytes"),
            (vec![uri(&format!("http://h/{}", "a".repeat(5000)))], "1 to 4096 bytes"),
            (vec![uri("http://h/a\0b")], "NUL"),
            (vec![uri("relative/path")], "neither an absolute path nor a URL"),
            (vec![uri("ftp://h/x")], "unsupported scheme \"ftp\""),
            (vec![uri("http://")], "empty host"),
            (vec![uri("file://host/x")], "file:///PATH"),
            (vec![uri("/srv/../etc/shadow")], "no `.` or `..`"),
            (vec![uri("http://h/dir/")], "name the file with output_file"),
            (
                vec![v1::CommandUri {
                    output_file: "../escape".into(),
                    ..uri("http://h/x")
                }],
                "output_file \"../escape\"",
            ),
            (
                vec![v1::CommandUri {
                    output_file: "/abs".into(),
                    ..uri("http://h/x")
                }],
                "relative to the sandbox",
            ),
            (
                vec![v1::CommandUri {
                    output_file: "stdout".into(),
                    ..uri("http://h/x")
                }],
                "the task's logs",
            ),
            (
                vec![v1::CommandUri {
                    sha256: "abc".into(),
                    ..uri("http://h/x")
                }],
                "not 64 hex digits",
            ),
            (
                vec![v1::CommandUri {
                    sha256: "g".repeat(64),
                    ..uri("http://h/x")
                }],
                "not 64 hex digits",
            ),
            (
                vec![v1::CommandUri {
                    extract: true,
                    ..uri("http://h/app.zip")
                }],
                "not an archive the agent unpacks (.tar, .tar.gz, .tgz, .tar.zst, .tzst)",
            ),
        ];
        for (uris, why) in cases {
            let m = refused(&uris);
            assert!(m.starts_with("task t1: "), "{m}");
            assert!(m.contains(why), "{m} lacks {why:?}");
            if uris.len() == 1 && !uris[0].value.is_empty() && !uris[0].value.contains('\0') {
                assert!(m.contains(&format!("{:?}", uris[0].value)), "{m} names no URI");
            }
        }
    }
}
