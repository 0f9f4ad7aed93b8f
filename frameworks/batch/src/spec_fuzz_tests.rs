//! Property tests of the job file decoder over arbitrary and mutated TOML
//! (DESIGN.md "Bad input"; docs/fuzzing.md). The invariants are
//! [`crate::fuzz::job_file`]'s, shared with the coverage-guided target in
//! `fuzz/`.

use mezzo_proto::mutate::{config, mutated_text};
use proptest::prelude::*;

use crate::fuzz::{self, JOB_FILES, JOB_KEYS};

/// Grammar tokens of TOML and values at the limits, spliced in by
/// mutations (with the field names).
const TOKENS: &[&str] = &[
    "[[job]]\n",
    "[job]",
    "\n",
    " = ",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "0",
    "-1",
    "4294967296",
    "1e308",
    "nan",
    "inf",
    "0.0001",
    "\"1000000000years\"",
    "\"0s\"",
    "\"old\"",
    "\"a\"",
    "\\u0000",
    "\"\"\"",
    "true",
];

/// A value for `key`, at and around the limits, of the right type or not.
fn value(key: &'static str) -> impl Strategy<Value = String> {
    let typed = match key {
        "count" | "retries" | "max_parallel" | "mem" | "disk" => {
            prop::sample::select(&["0", "1", "100", "100001", "4294967295", "-1", "1.5"][..]).boxed()
        }
        "cpus" => prop::sample::select(&["0.1", "0", "-1", "0.0001", "1e12", "1e13", "nan", "inf", "3"][..]).boxed(),
        "backoff" | "timeout" => {
            prop::sample::select(&["\"1s\"", "\"0s\"", "\"10m\"", "\"584942417355years\"", "\"soon\"", "5"][..]).boxed()
        }
        "env" => prop::sample::select(
            &[
                "{ A = \"1\" }",
                "{ \"\" = \"x\" }",
                "{ MEZZO_TASK_INDEX = \"1\" }",
                "{ \"A=B\" = \"1\" }",
            ][..],
        )
        .boxed(),
        "depends_on" => prop::sample::select(&["[\"a\"]", "[\"old\"]", "[\"zz\"]", "[\"b\", \"a\"]", "[]"][..]).boxed(),
        "name" => prop::sample::select(&["\"a\"", "\"b\"", "\"old\"", "\"a b\"", "\"\"", "\"x\""][..]).boxed(),
        _ => prop::sample::select(&["\"true\"", "\"  \"", "\"a\\u0000\"", "1"][..]).boxed(),
    };
    typed.prop_map(str::to_owned)
}

/// One `[[job]]` table with any of the fields, each with a value from the
/// pools.
fn job() -> impl Strategy<Value = String> {
    let keys = [JOB_KEYS, &["cuont"]].concat();
    let field = prop::sample::select(keys).prop_flat_map(|k| value(k).prop_map(move |v| format!("{k} = {v}\n")));
    (value("name"), prop::collection::vec(field, 0..6))
        .prop_map(|(name, fields)| format!("[[job]]\nname = {name}\ncommand = \"x\"\n{}", fields.concat()))
}

fn file() -> impl Strategy<Value = String> {
    prop::collection::vec(job(), 1..5).prop_map(|jobs| jobs.join("\n"))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn job_file_from_any_text(text in "\\PC{0,200}") {
        fuzz::job_file(text.as_bytes());
    }

    #[test]
    fn job_file_from_generated_files(text in file()) {
        fuzz::job_file(text.as_bytes());
    }

    #[test]
    fn job_file_from_mutated_files(text in mutated_text(prop_oneof![prop::sample::select(JOB_FILES).prop_map(str::to_owned), file()], [JOB_KEYS, TOKENS].concat())) {
        fuzz::job_file(text.as_bytes());
    }
}

/// Writes this crate's seeds for `scripts/fuzz` (see
/// `mezzo_proto::fuzz::write_seeds`), after checking that each passes.
#[test]
fn write_fuzz_seeds() -> std::io::Result<()> {
    let seeds = fuzz::seeds();
    for (_, input) in &seeds {
        assert!(crate::spec::parse(&String::from_utf8_lossy(input), &["old".to_owned()].into()).is_ok());
        fuzz::job_file(input);
    }
    mezzo_proto::fuzz::write_seeds(&seeds)
}
