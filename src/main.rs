//! The binary: parse the CLI, set up logging and signals, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use policy_push::cli::{self, Cli};
use tokio_util::sync::CancellationToken;

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// First SIGTERM/SIGINT: drain and stop. Second: exit at once.
fn watch_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            for n in 0.. {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                if n > 0 {
                    std::process::exit(130);
                }
                tracing::info!("shutdown requested; draining");
                shutdown.cancel();
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        }
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli::wants_json_logs(&cli));
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
        watch_signals(shutdown.clone());
        match cli::execute(cli, shutdown).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
