//! Command-line interface (SPEC §6): `policy-push [--config FILE] <command>`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::commands::{self, SimulateArgs};
use crate::config::{Config, LogFormat};

/// The options every command takes. The binary puts them, the product's commands
/// ([`Command`]) and its tooling's (`policy-push demo`, `bench`) in one parser.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file (TOML). Environment variables POLICY_PUSH_* override it.
    #[arg(
        long,
        short,
        global = true,
        env = "POLICY_PUSH_CONFIG",
        default_value = "policy-push.toml"
    )]
    pub config: PathBuf,
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
    /// The running instance's /health: a table on a terminal (integration, state, lag,
    /// last commit, hint, then each error and condition), the JSON otherwise; exit 1
    /// when any integration is failing.
    Status {
        /// Print the /health JSON, also on a terminal.
        #[arg(long)]
        json: bool,
    },
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
    /// Why a user sees what they see: for each view (or one data source's), whether they
    /// are subscribed, each policy that targets it and whether and why each rule applies
    /// to them, which mask each column shows, and the rows they see, in words. Reads what
    /// the warehouse stores, so it explains what is enforced.
    Explain {
        /// The integration (`[[integration]] name`).
        #[arg(long)]
        integration: String,
        /// The user, as their profile names them (an analyst's login name).
        #[arg(long)]
        user: String,
        /// Only the view of this data source.
        #[arg(long)]
        data_source: Option<String>,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List dead letters, or publish them again to their origin topics.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Publish a realistic workload (users, data sources with raw tables, policies, changes).
    Simulate(SimulateArgs),
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// A table of the dead letters, oldest first: position in the dead-letter topic, when
    /// it was dead-lettered (RFC 3339, UTC), integration, origin topic/partition@offset,
    /// stage, its last redrive and the reason. Reads the topic to its true end and says
    /// on stderr how far it read.
    List {
        #[command(flatten)]
        filter: crate::commands::dead_letters::Filter,
        /// One JSON object per line instead.
        #[arg(long)]
        json: bool,
    },
    /// Publish the selected dead letters again to their origin topic and partition, once
    /// their cause is fixed, and mark each redriven. Letters superseded since are no-ops
    /// (the version guard). Exits 1 when a selected letter could not be redriven.
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

/// Log format from the config file, if it can be read (errors are reported later).
pub fn wants_json_logs(config: &Path) -> bool {
    let format = Config::load(config).map_or(LogFormat::Auto, |c| c.log.format);
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    }
}

/// What to do about `e`, where one of its causes says (a failed bootstrap's hint): the
/// command line prints it after the error.
pub fn hint(e: &anyhow::Error) -> Option<&str> {
    e.chain()
        .find_map(|c| c.downcast_ref::<crate::apply::BootstrapError>())
        .map(|b| b.hint.as_str())
}

/// Runs `command` with the configuration file `config`.
pub async fn execute(
    config: &Path,
    command: Command,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) if matches!(command, Command::CheckConfig { .. }) => {
            eprintln!("{}", crate::error::Chain(&e));
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    match command {
        Command::CheckConfig { connect } => Ok(commands::check_config(&config, connect).await),
        Command::Bootstrap { print_sql } => {
            commands::bootstrap(&config, print_sql).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            crate::run(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => {
            commands::simulate(&config, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => commands::status(&config, json).await,
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
        Command::Explain {
            integration,
            user,
            data_source,
            json,
        } => {
            crate::commands::explain::explain(
                &config,
                &integration,
                &user,
                data_source.as_deref(),
                json,
            )
            .await
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
            Ok(match done.skipped {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            })
        }
    }
}
