//! `mezzo`: the one user-facing binary. Runs a master or an agent, runs
//! one-off tasks, and queries the cluster.

mod alloc;
mod cmd;
mod config_file;

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mezzo", version, about = "Mezzo: a two-level cluster resource manager")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, env = "MEZZO_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master.
    Master(cmd::master::Args),
    /// Run an agent.
    Agent(Box<cmd::agent::Args>),
    /// Run a command as one task (or N copies) and wait for it, like mesos-execute.
    Run(cmd::run::Args),
    /// Show the masters, agents, frameworks and tasks.
    Status(cmd::status::Args),
    /// List, add or remove masters of the Raft group.
    Masters(cmd::masters::Args),
    #[command(flatten)]
    Roles(cmd::roles::Command),
    /// Long-running services: run the framework, deploy, scale, update, discover.
    Service(cmd::service::Args),
    #[command(flatten)]
    Ops(cmd::ops::Command),
    /// Batch jobs: run the batch framework, submit jobs, follow them.
    Batch(cmd::batch::Args),
    #[command(flatten)]
    Security(cmd::security::Command),
}

/// `default` is the filter when `MEZZO_LOG` sets none.
fn init_logging(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEZZO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    // A container's supervisor: a fresh single-threaded process that sets
    // up namespaces and runs the task; no async runtime, no argument parser.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "__container-init" {
        mezzo_agent::containerizer::init::main(std::path::Path::new(&args[2]));
    }
    // One more process in a running container (a health check's command).
    if args.len() >= 4 && args[1] == "__container-enter" {
        mezzo_agent::containerizer::enter::main(std::path::Path::new(&args[2]), &args[3..]);
    }
    let args = match config_file::expand::<Cli>(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mezzo: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    if let Command::Master(a) = &cli.command {
        alloc::use_mimalloc();
        // Runs beside the master's start; nothing waits for it.
        let _warming = alloc::keep_warm(a.standby_heap());
    }
    mezzo_proto::security::tls::ensure_provider();
    // `mezzo run` shares stderr with its task's: only warnings join it.
    let default_log = match cli.command {
        Command::Run(_) => "warn",
        _ => "info,h2=warn,tower=warn,hyper=warn",
    };
    init_logging(&cli.log_format, default_log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mezzo: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(70);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Master(a) => cmd::master::run(a).await,
            Command::Agent(a) => cmd::agent::run(*a).await,
            Command::Run(a) => cmd::run::run(a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Masters(a) => cmd::masters::run(a).await,
            Command::Roles(c) => cmd::roles::run(c).await,
            Command::Service(a) => cmd::service::run(a).await,
            Command::Ops(c) => cmd::ops::run(c).await,
            Command::Batch(a) => cmd::batch::run(a).await,
            Command::Security(c) => cmd::security::run(c).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mezzo: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Every `mezzo …` command the docs show parses as this binary takes it
/// (issue 21: docs examples that had drifted from the flags). Synopsis
/// lines (with `[optional]`, `A|B`, `<placeholder>` or `…`) are skipped;
/// upper-case placeholders such as `AGENT` parse as plain values.
#[cfg(test)]
mod docs_tests {
    use clap::Parser;

    use super::Cli;

    /// The commands in a line of a code block: `mezzo …` after an optional
    /// `$ `, as words (shell quoting and `#` comments handled), split at
    /// `;`, `&&` and `&`, and at a second `mezzo` (two commands side by
    /// side). Shell variables become a sample address, or a port after
    /// `:`. `None` for quotes that do not balance.
    fn commands(line: &str) -> Option<Vec<Vec<String>>> {
        let line = line.trim().trim_start_matches("$ ");
        if !line.starts_with("mezzo ") && line != "mezzo" {
            return Some(vec![]);
        }
        let line = line.replace("\\", "");
        let words = shlex::split(&line)?;
        let mut out: Vec<Vec<String>> = vec![vec![]];
        for w in words {
            if matches!(w.as_str(), "&&" | "&" | ";") {
                out.push(vec![]);
                continue;
            }
            let (w, ends) = match w.strip_suffix([';', '&']) {
                Some(w) => (w.to_owned(), true),
                None => (w, false),
            };
            if w == "mezzo" && out.last().is_some_and(|c| !c.is_empty()) {
                out.push(vec![]);
            }
            if !w.is_empty() {
                out.last_mut()?.push(with_samples(&w));
            }
            if ends {
                out.push(vec![]);
            }
        }
        out.retain(|c| c.first().is_some_and(|w| w == "mezzo"));
        Some(out)
    }

    /// `$VAR` replaced by a sample value.
    fn with_samples(word: &str) -> String {
        let mut out = String::new();
        let mut rest = word;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let name_len = rest[i + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - i - 1);
            out.push_str(if out.ends_with(':') { "5050" } else { "127.0.0.1:5050" });
            rest = &rest[i + 1 + name_len..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn every_mezzo_command_in_the_docs_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("README.md")];
        for e in std::fs::read_dir(root.join("docs")).expect("docs dir").flatten() {
            if e.path().extension().is_some_and(|x| x == "md") {
                files.push(e.path());
            }
        }
        let mut checked = 0;
        let mut bad = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).expect("doc");
            let mut in_code = false;
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("```") {
                    in_code = !in_code;
                    continue;
                }
                if !in_code {
                    continue;
                }
                let Some(cmds) = commands(line) else {
                    bad.push(format!("{}:{}: unbalanced quotes: {line}", f.display(), n + 1));
                    continue;
                };
                for words in cmds {
                    let cmd = words.join(" ");
                    if cmd.contains(['[', ']', '|', '<', '>', '…']) {
                        continue;
                    }
                    // An upper-case placeholder (`ID`) where a number goes.
                    let placeholder = words
                        .iter()
                        .any(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
                    checked += 1;
                    match Cli::try_parse_from(&words) {
                        Ok(_) => {}
                        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {}
                        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {}
                        Err(e) if placeholder && e.kind() == clap::error::ErrorKind::ValueValidation => {}
                        Err(e) => bad.push(format!(
                            "{}:{}: {cmd}\n  {}",
                            f.display(),
                            n + 1,
                            e.to_string().lines().next().unwrap_or_default()
                        )),
                    }
                }
            }
        }
        assert!(checked > 50, "only {checked} commands found in the docs");
        assert!(
            bad.is_empty(),
            "{} of {checked} commands do not parse:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    fn doc(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name);
        std::fs::read_to_string(path).expect("doc")
    }

    /// The bodies of `cat > F <<'TAG'` here-documents in a doc.
    fn heredocs(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some((_, tag)) = line.split_once("<<'") else {
                continue;
            };
            let tag = tag.trim_end_matches('\'');
            out.push(
                lines
                    .by_ref()
                    .take_while(|l| l.trim() != tag)
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        out
    }

    /// The job and service files the docs show are accepted as written.
    #[test]
    fn the_docs_job_and_service_files_parse() {
        let jobs = heredocs(&doc("batch.md"));
        assert!(!jobs.is_empty(), "no job file in docs/batch.md");
        for text in jobs {
            if let Err(e) = mezzo_batch::spec::parse(&text, &Default::default()) {
                panic!("docs/batch.md job file: {e}\n{text}");
            }
        }
        let services = heredocs(&doc("service.md"));
        assert!(!services.is_empty(), "no service file in docs/service.md");
        for text in services {
            if let Err(e) = mezzo_service::ServiceSpec::parse(&text) {
                panic!("docs/service.md service file: {e}\n{text}");
            }
        }
    }

    /// Every flag in docs/operators.md's tables for `mezzo master` and
    /// `mezzo agent` is one the daemon takes, and the example config file
    /// is accepted (issue 21: a flag-name review).
    #[test]
    fn the_documented_daemon_flags_exist() {
        use clap::CommandFactory;
        let text = doc("operators.md");
        let root = Cli::command();
        let mut checked = 0;
        let mut section: Option<&str> = None;
        for line in text.lines() {
            if line.starts_with("#") {
                section = ["master", "agent"]
                    .into_iter()
                    .find(|d| line.trim_start_matches('#').trim() == format!("`mezzo {d}`"));
                continue;
            }
            let (Some(daemon), Some(cell)) = (section, line.strip_prefix("| `--")) else {
                continue;
            };
            let flag: String = cell
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let sub = root.find_subcommand(daemon).expect("daemon subcommand");
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some(flag.as_str())),
                "docs/operators.md documents `mezzo {daemon} --{flag}`, which it does not take"
            );
            checked += 1;
        }
        assert!(checked > 30, "only {checked} flags found");
        // The example `--config` file.
        let example = text
            .split("```toml\n")
            .nth(1)
            .and_then(|t| t.split("```").next())
            .expect("toml example");
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, example).expect("write");
        let argv = ["mezzo", "agent", "--config", file.to_str().expect("utf-8")].map(std::ffi::OsString::from);
        let argv = crate::config_file::expand::<Cli>(argv.to_vec()).expect("the example config is accepted");
        Cli::try_parse_from(argv).expect("the expanded example parses");
    }

    #[test]
    fn lines_split_into_commands() {
        let words = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            commands("$ mezzo why app-1"),
            Some(vec![words(&["mezzo", "why", "app-1"])])
        );
        assert_eq!(
            commands("mezzo agents; mezzo frameworks && mezzo tasks --state running &"),
            Some(vec![
                words(&["mezzo", "agents"]),
                words(&["mezzo", "frameworks"]),
                words(&["mezzo", "tasks", "--state", "running"])
            ])
        );
        assert_eq!(
            commands("mezzo gone AGENT      mezzo teardown FRAMEWORK   # both"),
            Some(vec![
                words(&["mezzo", "gone", "AGENT"]),
                words(&["mezzo", "teardown", "FRAMEWORK"])
            ])
        );
        assert_eq!(
            commands("mezzo agent --resources 'cpus:4;mem:8' --master $PEERS --listen 127.0.0.1:$port"),
            Some(vec![words(&[
                "mezzo",
                "agent",
                "--resources",
                "cpus:4;mem:8",
                "--master",
                "127.0.0.1:5050",
                "--listen",
                "127.0.0.1:5050"
            ])])
        );
        assert_eq!(commands("cargo build"), Some(vec![]));
        assert_eq!(commands("mezzo run 'x"), None);
    }
}
