//! `policy-push simulate`: publishes a realistic workload (`simulate`) to the input
//! topics, and creates the raw tables its data sources name.

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::simulate;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Users, each with a profile.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Data sources, each with a raw table and a view.
    #[arg(long, default_value_t = 20)]
    pub data_sources: usize,
    /// Policies over the data sources.
    #[arg(long, default_value_t = 10)]
    pub policies: usize,
    /// Changes after the initial state.
    #[arg(long, default_value_t = 10_000)]
    pub changes: usize,
    /// Share of changes that hit the hot users.
    #[arg(long, default_value_t = 0.8)]
    pub hot_share: f64,
    /// Users the hot share of changes goes to.
    #[arg(long, default_value_t = 10)]
    pub hot_users: usize,
    /// Seed of the generator: the same seed publishes the same workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Integration whose host and database the data sources use (default: the first).
    #[arg(long)]
    pub integration: Option<String>,
    /// Do not create the raw tables in the warehouse.
    #[arg(long)]
    pub no_tables: bool,
}

pub async fn simulate(config: &Config, args: &SimulateArgs) -> anyhow::Result<()> {
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
