//! Property tests of the service file decoder over arbitrary and mutated
//! TOML (DESIGN.md "Bad input"; docs/fuzzing.md). The invariants are
//! [`crate::fuzz::service_file`]'s, shared with the coverage-guided target
//! in `fuzz/`.

use mezzo_proto::mutate::{config, mutated_text};
use proptest::prelude::*;

use crate::fuzz::{self, SERVICE_FILES};

/// Grammar tokens of TOML and of the service file, spliced in by mutations.
const SERVICE_TOKENS: &[&str] = &[
    "\n",
    " = ",
    "\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    "[health]\n",
    "[restart]\n",
    "[upgrade]\n",
    "[env]\n",
    "name",
    "instances",
    "command",
    "resources",
    "ports",
    "constraints",
    "http",
    "tcp",
    "path",
    "port",
    "interval",
    "timeout",
    "grace_period",
    "failures",
    "backoff",
    "max_backoff",
    "factor",
    "max_surge",
    "max_unavailable",
    "progress_deadline",
    "kill_grace",
    "volume",
    "disk_mib",
    "\"/proc/x\"",
    "\"../x\"",
    "\"584942417355years\"",
    "\"300000000000years\"",
    "\"31days\"",
    "\"0s\"",
    "\"1ns\"",
    "0",
    "-1",
    "4294967296",
    "nan",
    "1e308",
    ":LIKE:",
    "(",
    "*",
    ":MAX_PER:",
    "\\u0000",
];

/// Mostly a valid value, so that files get past the first checks to the
/// later ones; sometimes a bad one.
fn pick(valid: &'static [&'static str], bad: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![6 => prop::sample::select(valid), 1 => prop::sample::select(bad)].prop_map(str::to_owned)
}

fn duration() -> impl Strategy<Value = String> {
    pick(
        &["\"1s\"", "\"2h\"", "\"31days\"", "\"300000000000years\"", "\"250ms\""],
        &["\"0s\"", "\"584942417355years\"", "\"x\"", "1"],
    )
}

/// A file built from the structure: every section and field, with values
/// at and around the limits, of the right type or not.
fn file() -> impl Strategy<Value = String> {
    let top = (
        pick(&["\"web\"", "\"a\""], &["\"Web\"", "\"-a\"", "\"\""]),
        pick(&["1", "0", "200"], &["201", "-1"]),
        pick(&["\"cpus:0.1;mem:32\"", "\"mem:1\""], &["\"ports:[1-2]\"", "\"disk:5\"", "\"cpus:-1\"", "\"cpus(eng):1\""]),
        pick(&["[]", "[\"http\"]", "[\"a\", \"b\"]"], &["[\"a\", \"A\"]", "[\"a-b\"]"]),
        pick(
            &["[]", "[\"hostname:MAX_PER:2\"]", "[\"rack:LIKE:r[12]\"]"],
            &["[\"rack:LIKE:(\"]", "[\"rack:NOPE\"]", "[\"hostname:MAX_PER:0\"]", "[\"x:CLUSTER\"]"],
        ),
        pick(&["\"1s\"", "\"1h\""], &["\"2h\"", "\"300000000000years\""]),
    )
        .prop_map(|(name, instances, resources, ports, constraints, kill_grace)| {
            format!(
                "name = {name}\ninstances = {instances}\ncommand = \"x\"\nresources = {resources}\nports = {ports}\nconstraints = {constraints}\nkill_grace = {kill_grace}\n"
            )
        });
    let health = prop::option::of((
        pick(
            &["tcp = {}", "command = \"true\""],
            &["http = { path = \"/\" }", "command = \" \"", "http = { path = \"x\", port = \"nope\" }", ""],
        ),
        duration(),
        duration(),
        duration(),
        pick(&["3"], &["0"]),
    ))
    .prop_map(|h| match h {
        Some((probe, grace, interval, timeout, failures)) => format!(
            "[health]\n{probe}\ngrace_period = {grace}\ninterval = {interval}\ntimeout = {timeout}\nfailures = {failures}\n"
        ),
        None => String::new(),
    });
    let restart = (
        duration(),
        duration(),
        pick(&["2.0", "1", "100"], &["0.5", "101", "nan", "inf"]),
    )
        .prop_map(|(b, m, f)| format!("[restart]\nbackoff = {b}\nmax_backoff = {m}\nfactor = {f}\n"));
    let upgrade = (pick(&["1"], &["0"]), pick(&["0", "1"], &["2"]), duration())
        .prop_map(|(s, u, d)| format!("[upgrade]\nmax_surge = {s}\nmax_unavailable = {u}\nprogress_deadline = {d}\n"));
    let volume = prop::option::of((
        pick(&["64", "1", "16777216"], &["0", "16777217", "-1", "1.5"]),
        pick(
            &["\"data\"", "\"a/b\""],
            &["\"\"", "\"../x\"", "\"/data\"", "\"stdout\"", "\"a/./b\""],
        ),
    ))
    .prop_map(|v| match v {
        Some((mib, path)) => format!("volume = {{ disk_mib = {mib}, path = {path} }}\n"),
        None => String::new(),
    });
    (top, volume, health, restart, upgrade).prop_map(|(t, v, h, r, u)| format!("{t}{v}{h}{r}{u}"))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn service_file_from_any_text(text in "\\PC{0,200}") {
        fuzz::service_file(text.as_bytes());
    }

    #[test]
    fn service_file_from_generated_files(text in file()) {
        fuzz::service_file(text.as_bytes());
    }

    #[test]
    fn service_file_from_mutated_files(text in mutated_text(prop_oneof![prop::sample::select(SERVICE_FILES).prop_map(str::to_owned), file()], SERVICE_TOKENS)) {
        fuzz::service_file(text.as_bytes());
    }
}

/// Writes this crate's seeds for `scripts/fuzz` (see
/// `mezzo_proto::fuzz::write_seeds`), after checking that each passes.
#[test]
fn write_fuzz_seeds() -> std::io::Result<()> {
    let seeds = fuzz::seeds();
    for (_, input) in &seeds {
        assert!(crate::ServiceSpec::parse(&String::from_utf8_lossy(input)).is_ok());
        fuzz::service_file(input);
    }
    mezzo_proto::fuzz::write_seeds(&seeds)
}
