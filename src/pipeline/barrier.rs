//! The policy barrier's watch: no view is created before the policies have caught up
//! (`apply::barrier`).

use super::*;

/// Reads the policies topic's end offsets for the policy barrier, then builds the views
/// waiting for it once the policies have caught up (`apply::barrier`).
pub(super) struct BarrierWatch {
    pub(super) warehouse: Arc<Warehouse>,
    pub(super) metadata: Arc<rdkafka::consumer::BaseConsumer>,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) max_backoff: Duration,
}

impl BarrierWatch {
    pub(super) async fn run(self, stop: CancellationToken) {
        let barrier = self.warehouse.barrier();
        let mut attempt = 0;
        while barrier.needs_ends() {
            let read = crate::offsets::watermarks_blocking(
                self.metadata.clone(),
                vec![self.topic.clone()],
                Duration::from_secs(10),
            )
            .await;
            match read {
                Ok(marks) => {
                    barrier.set_ends(
                        marks
                            .into_iter()
                            .map(|(tp, (_, high))| (tp.partition, high))
                            .collect(),
                    );
                    continue;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot read the policies topic's end offsets; no view is created until they are known");
                }
            }
            let delay = telemetry::backoff(attempt, self.max_backoff);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(crate::apply::barrier::CHECK_EVERY) => {}
            }
            if let Err(e) = self.warehouse.open_views_if_caught_up(&self.group).await {
                tracing::debug!(error = %e, "pending views not built yet; retrying");
            }
        }
    }
}
