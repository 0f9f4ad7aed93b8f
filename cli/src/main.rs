//! `mezzo`: the one user-facing binary. Runs a master or an agent, runs
//! one-off tasks, and queries the cluster.

#![forbid(unsafe_code)]

mod cmd;
mod config_file;

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
    Agent(cmd::agent::Args),
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
    let args = match config_file::expand::<Cli>(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mezzo: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
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
            Command::Agent(a) => cmd::agent::run(a).await,
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
