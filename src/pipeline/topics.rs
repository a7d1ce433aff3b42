//! The input topics' conditions, checked at start and on a timer.

use std::time::Duration;

use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{Condition, Health, State};

/// The compaction guard, at start and then every `consumer.topic_check_ms`, so that a
/// topic fixed after start (created, or made compacted) clears and one broken after start
/// shows: a topic that is
/// missing or not compacted makes every integration degraded, with the remedy
/// (`consume::compaction`), as does a refusal to say; the condition clears once the
/// topic is fixed. A broker that cannot say or does not answer is only logged, once:
/// `replay --from earliest` refuses it anyway.
pub(super) async fn watch_topics(
    kafka: ClientConfig,
    topics: Vec<String>,
    integrations: Vec<String>,
    health: Health,
    every: Duration,
    stop: CancellationToken,
) {
    let mut logged = std::collections::BTreeSet::new();
    loop {
        let checked = crate::consume::compaction::check(&kafka, &topics).await;
        let risks = crate::consume::compaction::risks(&checked);
        for topic in &topics {
            let subject = format!("topic {topic}");
            let risk = risks.iter().find(|r| r.topic == *topic);
            for name in &integrations {
                match risk {
                    // No answer is no news: what was known stays.
                    Some(r) if r.unanswered => {}
                    Some(r) => health.set_condition(
                        name,
                        &subject,
                        Condition {
                            severity: State::Degraded,
                            error: r.risk.clone(),
                            hint: r.remedy.clone(),
                        },
                    ),
                    None => health.clear_condition(name, &subject),
                }
            }
        }
        for r in &risks {
            if logged.insert((r.topic.clone(), r.risk.clone())) {
                let answer = if r.unanswered {
                    "; the broker did not say whether it is compacted"
                } else {
                    ""
                };
                tracing::warn!(topic = %r.topic, remedy = %r.remedy, "{}{answer}", r.risk);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
