//! What the warehouse keeps for the consumer and the operator: the offsets stored with
//! the last applied batch of each partition (where consumption resumes), and the id of
//! each topic they were taken from (`consume::identity`).

use super::sql::statements;
use super::{ApplyError, Warehouse};
use crate::consume::{Holds, StoreError, StoredOffsets, TopicIds};
use crate::record::TopicPartition;

impl crate::consume::OffsetStore for Warehouse {
    fn load_offsets<'a>(&'a self, group: &'a str) -> crate::consume::store::Loading<'a> {
        Box::pin(async move {
            Warehouse::load_offsets(self, group)
                .await
                .map_err(|e| store_error("cannot read the stored offsets", e))
        })
    }

    fn load_topic_ids<'a>(
        &'a self,
        group: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<TopicIds, crate::consume::StoreError>> {
        Box::pin(async move {
            Warehouse::load_topic_ids(self, group)
                .await
                .map_err(|e| store_error("cannot read the stored topic ids", e))
        })
    }

    fn load_holds<'a>(
        &'a self,
        group: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Holds, StoreError>> {
        Box::pin(async move {
            self.held(group)
                .await
                .map_err(|e| store_error("cannot read the partition holds", e))
        })
    }

    fn hold<'a>(
        &'a self,
        group: &'a str,
        tp: &'a TopicPartition,
        observed: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.hold_partition(group, tp, observed)
                .await
                .map_err(|e| store_error("cannot keep the partition's hold", e))
        })
    }

    fn store_topic_ids<'a>(
        &'a self,
        group: &'a str,
        ids: &'a TopicIds,
        replace: bool,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::consume::StoreError>> {
        Box::pin(async move {
            Warehouse::store_topic_ids(self, group, ids, replace)
                .await
                .map_err(|e| store_error("cannot store the topic ids", e))
        })
    }
}

impl Warehouse {
    async fn held(&self, group: &str) -> Result<Holds, ApplyError> {
        let client = self.client().await?;
        let rows = client.query(statements::LOAD_HOLDS, &[&group]).await?;
        rows.iter()
            .map(|r| {
                let tp = TopicPartition::new(r.try_get::<_, &str>(0)?, r.try_get(1)?);
                Ok((tp, r.try_get(2)?))
            })
            .collect()
    }

    async fn hold_partition(
        &self,
        group: &str,
        tp: &TopicPartition,
        observed: &str,
    ) -> Result<(), ApplyError> {
        let client = self.client().await?;
        let topic: &str = &tp.topic;
        client
            .execute(
                statements::HOLD,
                &[&group, &topic, &tp.partition, &observed],
            )
            .await?;
        Ok(())
    }

    /// Releases a held partition (`offsets --accept`).
    pub async fn release_hold(&self, group: &str, tp: &TopicPartition) -> Result<(), ApplyError> {
        let client = self.client().await?;
        let topic: &str = &tp.topic;
        client
            .execute(statements::RELEASE_HOLD, &[&group, &topic, &tp.partition])
            .await?;
        Ok(())
    }
}

fn store_error(what: &str, e: ApplyError) -> crate::consume::StoreError {
    crate::consume::StoreError {
        what: what.to_string(),
        hint: e.hint(),
        source: Some(e.into()),
    }
}

impl Warehouse {
    /// The topic ids stored with `group`'s offsets (`consume::identity`).
    pub async fn load_topic_ids(
        &self,
        group: &str,
    ) -> Result<crate::consume::TopicIds, ApplyError> {
        let client = self.client().await?;
        let rows = client.query(statements::LOAD_TOPIC_IDS, &[&group]).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Stores the ids of `ids`' topics that have none yet for `group`, or, with
    /// `replace`, over the stored ones.
    pub async fn store_topic_ids(
        &self,
        group: &str,
        ids: &crate::consume::TopicIds,
        replace: bool,
    ) -> Result<(), ApplyError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for (topic, id) in ids {
            if replace {
                tx.execute(statements::FORGET_TOPIC_ID, &[&group, topic])
                    .await?;
            }
            tx.execute(statements::REMEMBER_TOPIC_ID, &[&group, topic, id])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves a partition's stored offset from `from` to `to` (`offsets --accept`); false
    /// when it is no longer `from` (an instance committed since). A batch of that
    /// partition in flight is fenced by it and reads the new offset.
    pub async fn move_offset(
        &self,
        group: &str,
        tp: &TopicPartition,
        from: i64,
        to: i64,
    ) -> Result<bool, ApplyError> {
        let client = self.client().await?;
        let topic: &str = &tp.topic;
        let moved = client
            .execute(
                statements::MOVE_OFFSET,
                &[&group, &topic, &tp.partition, &to, &from],
            )
            .await?;
        Ok(moved == 1)
    }

    /// Stored `next_offset` per topic-partition for a consumer group.
    pub async fn load_offsets(&self, group: &str) -> Result<StoredOffsets, ApplyError> {
        let client = self.client().await?;
        let rows = client.query(statements::LOAD_OFFSETS, &[&group]).await?;
        rows.iter()
            .map(|r| {
                let tp = TopicPartition::new(r.try_get::<_, &str>(0)?, r.try_get(1)?);
                Ok((tp, r.try_get(2)?))
            })
            .collect()
    }
}
