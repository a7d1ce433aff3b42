//! Command-line interface (SPEC §6): `policy-push [--config FILE] <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::simulate;

#[derive(Debug, Parser)]
#[command(
    name = "policy-push",
    version,
    about = "Applies governance policy changes from Kafka to Redshift/PostgreSQL, exactly once"
)]
pub struct Cli {
    /// Configuration file (TOML). Environment variables POLICY_PUSH_* override it.
    #[arg(
        long,
        short,
        global = true,
        env = "POLICY_PUSH_CONFIG",
        default_value = "policy-push.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume, batch and apply until SIGTERM.
    Run,
    /// Create or update the warehouse objects of every integration (idempotent).
    Bootstrap {
        /// Print the whole script for each integration's dialect, as the system account
        /// and the setup user would run it, without connecting (for a DBA to review).
        #[arg(long)]
        print_sql: bool,
    },
    /// Validate the configuration: exit 0 when valid, else name the offending key.
    CheckConfig {
        /// Then try every broker, the Schema Registry and every warehouse connection,
        /// one line each; exit 1 if any fails.
        #[arg(long)]
        connect: bool,
    },
    /// Print the running instance's /health JSON; exit 1 when any integration is failing.
    Status,
    /// Rebuild one host's state from the records Kafka retains, with progress.
    Replay {
        /// The integration (host) to rebuild.
        #[arg(long)]
        integration: String,
        /// `earliest` (reset and rebuild everything), or an RFC 3339 time or milliseconds
        /// since the Unix epoch (keep the state, apply again every record since then).
        #[arg(long, default_value = "earliest")]
        from: crate::commands::replay::Start,
        /// Replay from the earliest records even from input topics that are not
        /// compacted (or whose cleanup.policy cannot be read): records past their
        /// retention are gone, and views may be rebuilt without them.
        #[arg(long)]
        accept_uncompacted: bool,
    },
    /// Per partition: the offset stored in the warehouse, the one committed to Kafka, the
    /// start and end offsets and the lag; flags a partition whose stored offset does not
    /// belong to it (a recreated topic, a stored offset above the end or below the
    /// start), with what was observed. Exit 1 if any is flagged.
    Offsets {
        /// The integration (`[[integration]] name`).
        #[arg(long)]
        integration: String,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Take every flagged partition as it is now: store the topic's current id, move
        /// a stored offset outside the partition to its nearest end (records in between
        /// are skipped). Running instances resume at their next lag refresh.
        #[arg(long)]
        accept: bool,
    },
    /// List dead letters, or publish them again to their origin topics.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Publish a realistic workload (users, data sources with raw tables, policies, changes).
    Simulate(SimulateArgs),
    /// One-command demo: in-process Kafka (unless configured), local PostgreSQL, bootstrap,
    /// simulate, run, and show what two analysts see through the same view.
    #[cfg(feature = "tooling")]
    Demo(crate::demo::DemoArgs),
    /// Load harness: pipeline vs a per-change baseline and vs the warehouse's own ceiling,
    /// backlog drain, steady-state latency and replay, on the local broker and PostgreSQL.
    #[cfg(feature = "tooling")]
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// One line per dead letter: its position in the dead-letter topic, when it was
    /// dead-lettered, integration, origin topic/partition@offset, stage and reason.
    List {
        #[command(flatten)]
        filter: crate::commands::dead_letters::Filter,
        /// One JSON object per line instead.
        #[arg(long)]
        json: bool,
    },
    /// Publish the selected dead letters again to their origin topic and partition, once
    /// their cause is fixed. Letters superseded since are no-ops (the version guard).
    Redrive {
        #[command(flatten)]
        filter: crate::commands::dead_letters::Filter,
        /// Redrive every dead letter (required when no filter is given).
        #[arg(long)]
        all: bool,
        /// Print what would be redriven, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    #[arg(long, default_value_t = 20)]
    pub data_sources: usize,
    #[arg(long, default_value_t = 10)]
    pub policies: usize,
    /// Changes after the initial state.
    #[arg(long, default_value_t = 10_000)]
    pub changes: usize,
    /// Share of changes that hit the hot users.
    #[arg(long, default_value_t = 0.8)]
    pub hot_share: f64,
    #[arg(long, default_value_t = 10)]
    pub hot_users: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Integration whose host and database the data sources use (default: the first).
    #[arg(long)]
    pub integration: Option<String>,
    /// Do not create the raw tables in the warehouse.
    #[arg(long)]
    pub no_tables: bool,
}

/// Log format from the config file, if it can be read (errors are reported later).
pub fn wants_json_logs(cli: &Cli) -> bool {
    let format = Config::load(&cli.config).map_or(LogFormat::Auto, |c| c.log.format);
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    }
}

pub async fn execute(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "tooling")]
    match &cli.command {
        Command::Demo(args) => {
            return crate::demo::run(args, shutdown)
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Bench(args) => return crate::bench::run(args).await.map(|_| ExitCode::SUCCESS),
        _ => {}
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Command::CheckConfig { .. }) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    match cli.command {
        Command::CheckConfig { connect } => {
            if let Err(e) = check_clients(&config) {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
            println!("configuration is valid\n{}", config.redacted());
            if connect && !crate::commands::reach::report(&config).await {
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap { print_sql: true } => {
            for integration in &config.integrations {
                println!(
                    "-- integration {}\n{}",
                    integration.name,
                    crate::apply::bootstrap_sql(integration)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap { print_sql: false } => {
            bootstrap(&config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            crate::run(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => {
            simulate_cmd(&config, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => status(&config).await,
        Command::Replay {
            integration,
            from,
            accept_uncompacted,
        } => {
            let n = crate::commands::replay::replay(
                &config,
                &integration,
                from,
                accept_uncompacted,
                shutdown,
            )
            .await?;
            println!("replayed {n} records into integration {integration}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Offsets {
            integration,
            json,
            accept,
        } => {
            let kafka = crate::pipeline::kafka_config(&config);
            let flagged =
                crate::offsets::report::print(&config, &kafka, &integration, json, accept).await?;
            Ok(if flagged {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::DeadLetters(DeadLettersCommand::List { filter, json }) => {
            let n = crate::commands::dead_letters::list(&config, &filter, json).await?;
            eprintln!("{n} dead letters");
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLettersCommand::Redrive {
            filter,
            all,
            dry_run,
        }) => {
            let done =
                crate::commands::dead_letters::redrive(&config, &filter, all, dry_run).await?;
            eprintln!(
                "{} redriven{}, {} skipped; each integration applies a redriven record only if it is newer than what it holds",
                done.published,
                if dry_run { " (dry run)" } else { "" },
                done.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "tooling")]
        Command::Demo(_) | Command::Bench(_) => Ok(ExitCode::SUCCESS),
    }
}

/// Reads /health from the instance serving `[http] listen`, so that the answer is the
/// same JSON an HTTP probe sees.
async fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let listen = &config.http.listen;
    anyhow::ensure!(
        !listen.is_empty(),
        "status reads /health from a running instance, but [http] listen is empty"
    );
    let (code, body) = crate::telemetry::http_get(listen, "/health")
        .await
        .with_context(|| format!("no policy-push instance answers at {listen}: is `policy-push run` running with this config?"))?;
    anyhow::ensure!(code == 200, "{listen}/health answered HTTP {code}");
    println!("{body}");
    let report: serde_json::Value =
        serde_json::from_str(&body).context("/health did not return JSON")?;
    Ok(if report["status"] == "failing" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What `run` would refuse beyond the configuration's own rules: the librdkafka client
/// configurations, and each warehouse connection's settings and TLS (a root certificate
/// that cannot be read).
fn check_clients(config: &Config) -> anyhow::Result<()> {
    crate::consume::check::client_configs(&crate::pipeline::kafka_config(config))?;
    for i in &config.integrations {
        i.pg_config()?;
        i.setup_config()?;
        let setup = i.setup_url.as_ref().map(|_| ("setup_url", i.setup_tls()));
        for (key, tls) in std::iter::once(("url", i.tls())).chain(setup) {
            let tls = tls?;
            crate::apply::connect::Connector::new(&tls, Default::default())
                .map_err(|e| anyhow::anyhow!("integration.{}.{key}: {e}", i.name))?;
        }
    }
    Ok(())
}

pub async fn bootstrap(config: &Config) -> anyhow::Result<()> {
    Ok(crate::apply::bootstrap_all(config).await?)
}

async fn simulate_cmd(config: &Config, args: &SimulateArgs) -> anyhow::Result<()> {
    let integration = match &args.integration {
        Some(name) => config
            .integrations
            .iter()
            .find(|i| &i.name == name)
            .with_context(|| format!("no integration named {name}"))?,
        None => &config.integrations[0],
    };
    let spec = simulate::Spec {
        users: args.users,
        data_sources: args.data_sources,
        policies: args.policies,
        changes: args.changes,
        hot_share: args.hot_share,
        hot_users: args.hot_users,
        seed: args.seed,
        host: integration.host.clone(),
        database: integration.database()?,
        ..simulate::Spec::default()
    };
    if !args.no_tables {
        let client = crate::apply::connect::system_client(integration).await?;
        simulate::create_raw_tables(&client, &spec).await?;
    }
    let records = simulate::workload(&spec);
    let codec = crate::codec::Codec::embedded()?;
    let producer = simulate::producer(&crate::pipeline::kafka_config(config))?;
    let started = std::time::Instant::now();
    simulate::publish(&producer, &config.topics, &codec, &records).await?;
    let sent = records.len();
    println!(
        "published {sent} records in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
