//! The binary: parse the CLI, set up logging and signals, hand over to the library (or,
//! for `demo` and `bench`, to the tooling built on it, `tooling/`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use policy_push::cli;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "tooling")]
mod tooling;

#[derive(Debug, Parser)]
#[command(
    name = "policy-push",
    version,
    about = "Applies governance policy changes from Kafka to Redshift/PostgreSQL, exactly once"
)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Product(cli::Command),
    /// One-command demo: in-process Kafka (unless configured), local PostgreSQL, bootstrap,
    /// simulate, run, and show what two analysts see through the same view.
    #[cfg(feature = "tooling")]
    Demo(tooling::demo::DemoArgs),
    /// Load harness: pipeline vs a per-change baseline and vs the warehouse's own ceiling,
    /// backlog drain, steady-state latency and replay, on the local broker and PostgreSQL.
    #[cfg(feature = "tooling")]
    Bench(tooling::bench::BenchArgs),
}

async fn execute(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Product(command) => cli::execute(&cli.global.config, command, shutdown).await,
        #[cfg(feature = "tooling")]
        Command::Demo(args) => tooling::demo::run(&args, shutdown)
            .await
            .map(|_| ExitCode::SUCCESS),
        #[cfg(feature = "tooling")]
        Command::Bench(args) => tooling::bench::run(&args, shutdown)
            .await
            .map(|_| ExitCode::SUCCESS),
    }
}

/// The demo tells its story on stdout: only warnings and errors are logged in between.
fn log_filter(command: &Command) -> &'static str {
    #[cfg(feature = "tooling")]
    if matches!(command, Command::Demo(_)) {
        return "warn,librdkafka=error";
    }
    let _ = command;
    "info,librdkafka=warn"
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log lines to stderr: `default` unless RUST_LOG says otherwise.
fn init_tracing(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Registers SIGTERM and SIGINT at once (so that no signal is lost while starting up),
/// then watches them: the first drains and stops, a second exits at once.
#[cfg(unix)]
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            if n > 0 {
                std::process::exit(130);
            }
            tracing::info!("shutdown requested; draining");
            shutdown.cancel();
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(e) = watch_signals(shutdown.clone()) {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        init_tracing(
            cli::wants_json_logs(&cli.global.config),
            log_filter(&cli.command),
        );
        match execute(cli, shutdown).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", policy_push::error::chain(e.as_ref()));
                if let Some(hint) = cli::hint(&e) {
                    eprintln!("hint: {hint}");
                }
                ExitCode::FAILURE
            }
        }
    })
}
