//! Property tests of the files API's path handling (DESIGN.md "Bad
//! input", "Containers": no access outside the sandbox; docs/fuzzing.md):
//! paths built from the ways out (`..`, absolute paths, symlinks out, to
//! another task, loops, a fifo) and mutated seeds never see anything
//! outside the task's sandbox, and every refusal is a client error. The
//! invariants are [`crate::fuzz::files_path`]'s, shared with the
//! coverage-guided target in `fuzz/`.

use mezzo_proto::mutate::{config, mutated_text};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::fuzz;

/// Path parts that name something in the work dir, ways out, and
/// encodings the router has already undone.
const PARTS: &[&str] = &[
    ".",
    "..",
    "",
    "stdout",
    "sub",
    "inner",
    "deeper",
    "up",
    "in-link",
    "out-abs",
    "out-rel",
    "neighbour",
    "etc",
    "passwd",
    "loop-a",
    "fifo",
    "t2",
    "f1",
    "sandboxes",
    "secret",
    "%2e%2e",
    "\0",
    "~",
    "\\",
];

fn path() -> impl Strategy<Value = String> {
    let built = (
        prop::bool::ANY,
        prop::collection::vec(prop::sample::select(PARTS), 1..6),
    )
        .prop_map(|(absolute, parts)| format!("{}{}", if absolute { "/" } else { "" }, parts.join("/")));
    let seeds =
        prop::sample::select(&["stdout", "sub/inner", ".", "sub/up/stdout", "in-link"][..]).prop_map(str::to_owned);
    prop_oneof![3 => built, 1 => mutated_text(seeds, PARTS), 1 => "\\PC{0,16}"]
}

/// An input of [`fuzz::files_path`]: the operation byte, sometimes other
/// ids, the path.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let ids = prop_oneof![
        4 => Just(String::new()),
        1 => prop::sample::select(&["f1/t2\n", "f1/..\n", "../f1/t1\n", "f1/t1/x\n", "f2/t1\n", "f1\n"][..]).prop_map(str::to_owned),
    ];
    (any::<u8>(), ids, path()).prop_map(|(op, ids, path)| [&[op], ids.as_bytes(), path.as_bytes()].concat())
}

/// Runs `strategy` against one work dir, removed at the end.
fn run(cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    fuzz::make_work_dir(dir.path()).expect("work dir");
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&strategy, |input| {
        fuzz::files_path(dir.path(), &input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn files_paths_from_the_ways_out() {
    run(512, request());
}

#[test]
fn files_paths_from_any_bytes() {
    run(256, prop::collection::vec(any::<u8>(), 0..64));
}

#[test]
fn seeds_stay_inside() {
    let dir = tempfile::tempdir().expect("tempdir");
    fuzz::make_work_dir(dir.path()).expect("work dir");
    for (target, input) in fuzz::seeds() {
        if target == "files_path" {
            fuzz::files_path(dir.path(), &input);
        }
    }
}
