//! The rebalance listener: a user's hook on assignments and revocations.

use crate::record::TopicPartition;

/// Told of the consumer's rebalances, with plain values; can choose where
/// newly assigned partitions start (offsets kept outside Kafka).
///
/// Called on the consumer's own thread, never on an async worker: a method
/// may block (for example `tokio::runtime::Handle::block_on` a query for
/// stored offsets), but the group waits while it does, so keep it short.
/// Every method has a default that does nothing.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use reactive_kafka::consumer::RebalanceListener;
/// use reactive_kafka::TopicPartition;
///
/// /// Starts each partition after the last offset a database saw.
/// struct FromDatabase {
///     stored: Mutex<HashMap<TopicPartition, i64>>,
/// }
///
/// impl RebalanceListener for FromDatabase {
///     fn on_assigned(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
///         let stored = self.stored.lock().unwrap();
///         partitions
///             .iter()
///             .filter_map(|tp| stored.get(tp).map(|o| (tp.clone(), *o)))
///             .collect()
///     }
/// }
/// ```
pub trait RebalanceListener: Send + Sync + 'static {
    /// Partitions were assigned. Returns the offsets to start some of them
    /// at (the next record to read); the others start at the group's
    /// committed offset, or per `auto.offset.reset`. Called before any record
    /// of these partitions is fetched.
    fn on_assigned(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let _ = partitions;
        Vec::new()
    }

    /// Partitions were revoked and are released now: with rebalance-safe
    /// commits, after their in-flight records were committed (or the revoke
    /// timeout passed). No record of them is handed out after this call.
    /// Also called for the partitions still assigned when the consumer
    /// closes, before [`on_stopped`](Self::on_stopped).
    fn on_revoked(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// Partitions were lost: the consumer left the group without a clean
    /// revocation (session timeout, fencing); another member may already own
    /// them, so their offsets were not committed.
    fn on_lost(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The consumer closed; no method is called after this one.
    fn on_stopped(&self) {}
}

/// A shared listener, so the caller can keep a handle on it.
impl<L: RebalanceListener + ?Sized> RebalanceListener for std::sync::Arc<L> {
    fn on_assigned(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        (**self).on_assigned(partitions)
    }

    fn on_revoked(&self, partitions: &[TopicPartition]) {
        (**self).on_revoked(partitions)
    }

    fn on_lost(&self, partitions: &[TopicPartition]) {
        (**self).on_lost(partitions)
    }

    fn on_stopped(&self) {
        (**self).on_stopped()
    }
}
