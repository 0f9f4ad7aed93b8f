//! `--config FILE` for the daemons: a TOML file whose keys are the long
//! flag names of `mezzo master` / `mezzo agent` (`work_dir` or `work-dir`).
//!
//! The file only fills in what is not given otherwise, so the order of
//! precedence is flag > `MEZZO_*` environment variable > file > default,
//! as with Nomad's agent config. It works by rewriting the argument list
//! before clap parses it, so every flag's own validation applies to file
//! values too and the two can never drift apart.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, CommandFactory};

/// Subcommands that accept `--config`.
const DAEMONS: [&str; 2] = ["master", "agent"];

/// Returns `argv` with the values of the config file (if one is named by
/// `--config` or `MEZZO_CONFIG`) inserted after the subcommand.
pub fn expand<C: CommandFactory>(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(sub_at) = argv.iter().position(|a| DAEMONS.iter().any(|d| a == d)) else {
        return Ok(argv);
    };
    let rest: Vec<String> = argv[sub_at + 1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = match flag_value(&rest, "config") {
        Some(p) => p,
        None => match std::env::var("MEZZO_CONFIG") {
            Ok(p) if !p.is_empty() => p,
            _ => return Ok(argv),
        },
    };
    let sub_name = argv[sub_at].to_string_lossy().into_owned();
    let root = C::command();
    let sub = root
        .find_subcommand(&sub_name)
        .with_context(|| format!("no subcommand {sub_name}"))?;
    let inserted = from_file(sub, Path::new(&path), &rest, |name| std::env::var_os(name).is_some())?;
    let mut out = argv[..=sub_at].to_vec();
    out.extend(inserted.into_iter().map(OsString::from));
    out.extend(argv[sub_at + 1..].iter().cloned());
    Ok(out)
}

/// The `--flag=value` arguments that `path` contributes to `sub`, leaving
/// out flags present in `given` and flags whose env var `env_set` reports.
fn from_file(
    sub: &clap::Command,
    path: &Path,
    given: &[String],
    env_set: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            let known: Vec<&str> = sub
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "config" && *l != "help")
                .collect();
            bail!(
                "config file {}: unknown key `{key}` for `mezzo {}` (known: {})",
                path.display(),
                sub.get_name(),
                known.join(", ")
            );
        };
        if long == "config" {
            bail!("config file {}: `config` cannot name another file", path.display());
        }
        if flag_value(given, &long).is_some() || given.iter().any(|g| g == &format!("--{long}")) {
            continue;
        }
        if arg.get_env().is_some_and(|e| env_set(&e.to_string_lossy())) {
            continue;
        }
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values = match value {
            toml::Value::Array(items) => items.iter().map(|v| scalar(path, key, v)).collect::<Result<Vec<_>>>()?,
            v => vec![scalar(path, key, v)?],
        };
        if is_switch {
            match value {
                toml::Value::Boolean(true) => out.push(format!("--{long}")),
                toml::Value::Boolean(false) => {}
                _ => bail!("config file {}: `{key}` must be true or false", path.display()),
            }
            continue;
        }
        for v in values {
            out.push(format!("--{long}={v}"));
        }
    }
    Ok(out)
}

/// A TOML scalar as the text a flag would take.
fn scalar(path: &Path, key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => bail!(
            "config file {}: `{key}` must be a string, number or boolean",
            path.display()
        ),
    })
}

/// The value of `--name VALUE` or `--name=VALUE` in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let eq = format!("--{name}=");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v.to_owned());
        }
        if a == &flag {
            return it.next().cloned();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Daemon {
        #[arg(long)]
        config: Option<String>,
        #[arg(long, env = "TEST_CFG_LISTEN", default_value = "a")]
        listen: String,
        #[arg(long, default_value = "1")]
        count: u32,
        #[arg(long)]
        verbose: bool,
        #[arg(long)]
        peers: Vec<String>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    fn run(text: &str, given: &[&str], env: &[&str]) -> Result<Vec<String>> {
        let f = file(text);
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        from_file(&Daemon::command(), f.path(), &given, |n| env.contains(&n))
    }

    #[test]
    fn file_fills_in_what_flags_and_env_leave_out() {
        let text = "listen = 'x:1'\ncount = 3\nverbose = true\npeers = ['p1', 'p2']\n";
        assert_eq!(
            run(text, &[], &[]).expect("ok"),
            ["--count=3", "--listen=x:1", "--peers=p1", "--peers=p2", "--verbose"]
        );
        // A flag on the command line wins, in either spelling.
        assert_eq!(run(text, &["--count", "9"], &[]).expect("ok").len(), 4);
        assert_eq!(run(text, &["--count=9"], &[]).expect("ok").len(), 4);
        // So does the flag's environment variable.
        let out = run(text, &[], &["TEST_CFG_LISTEN"]).expect("ok");
        assert!(!out.iter().any(|a| a.starts_with("--listen")));
        // Underscores name the same flag as dashes.
        let parsed =
            Daemon::try_parse_from(std::iter::once("d".to_string()).chain(run("count = 7", &[], &[]).expect("ok")))
                .expect("parse");
        assert_eq!(parsed.count, 7);
    }

    #[test]
    fn bad_files_are_refused_with_the_key_named() {
        let e = run("nope = 1", &[], &[]).expect_err("unknown");
        assert!(e.to_string().contains("unknown key `nope`"), "{e}");
        assert!(e.to_string().contains("listen"), "{e}");
        let e = run("verbose = 'yes'", &[], &[]).expect_err("switch");
        assert!(e.to_string().contains("`verbose` must be true or false"), "{e}");
        let e = run("[listen]\na = 1", &[], &[]).expect_err("table");
        assert!(e.to_string().contains("`listen` must be"), "{e}");
        let e = run("listen = ", &[], &[]).expect_err("syntax");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = run("config = 'x'", &[], &[]).expect_err("nested");
        assert!(e.to_string().contains("cannot name another file"), "{e}");
        let e = from_file(&Daemon::command(), Path::new("/nonexistent/x.toml"), &[], |_| false).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
    }
}
