use std::fmt;

use crate::counted::Counted;
use crate::driver::{self, PartitionHandle};
use crate::error::{Error, Result};
use crate::outcome::CommitOutcome;
use crate::record::{ConsumerRecord, TopicPartition};

/// The offset to commit once a record is processed.
///
/// Owned and `'static + Send`: it carries a handle to its consumer's commit
/// path and the assignment generation the record came from, never a borrow.
/// Committing it after its partition was revoked does not fail and does not
/// pretend to succeed: the offset is reported in
/// [`CommitOutcome::stale`] and counted in
/// [`ConsumerMetrics::offsets_stale`](super::ConsumerMetrics::offsets_stale).
#[derive(Clone)]
pub struct CommittableOffset {
    pub(crate) partition: Counted<PartitionHandle>,
    /// Offset of the record itself.
    pub(crate) offset: i64,
}

impl CommittableOffset {
    /// Topic and partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        self.partition.tp()
    }

    /// The record's offset. The committed value is this plus one (the next
    /// record to read), as Kafka expects.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Marks the record processed and returns the offset to commit: the
    /// record's offset + 1, or with out-of-order commits the partition's
    /// watermark (`None` while no prefix is complete).
    #[inline]
    pub(crate) fn next_to_commit(&self) -> Option<i64> {
        self.partition.ack(self.offset)
    }

    /// A committer holds this offset back until a newer one of its
    /// partition arrives: with out-of-order commits its record stops taking
    /// up the source's room (the source must hand out that newer record),
    /// and the watermark still waits for it.
    pub(crate) fn hold(&self) {
        self.partition.free_room(self.offset);
    }

    pub(crate) fn same_partition(&self, other: &CommittableOffset) -> bool {
        self.partition.same_partition(&other.partition)
    }

    /// True when both come from the same assignment of the same partition
    /// (records of one batch share their handle, so this is mostly a
    /// pointer comparison).
    #[inline]
    pub(crate) fn same_assignment(&self, other: &CommittableOffset) -> bool {
        Counted::ptr_eq(&self.partition, &other.partition)
            || (self.partition.generation() == other.partition.generation()
                && self.same_partition(other))
    }

    /// Ends the consumer this offset came from with `err`, as the pipeline
    /// that processes its records has failed: its stream ends with the
    /// error, `Control::is_shutdown` resolves with it, and its held
    /// revocations are released.
    pub(crate) fn fail_consumer(&self, err: Error) {
        self.partition.fail_consumer(err);
    }

    /// The assignment generation the record was fetched in.
    pub fn generation(&self) -> u64 {
        self.partition.generation()
    }

    /// Commits this offset alone and waits for the broker's answer. For
    /// throughput, batch commits with [`committer::sink`](crate::committer::sink).
    ///
    /// Retriable failures (coordinator moves, rebalances in progress,
    /// timeouts) are retried with backoff for up to 60 s (the committer's
    /// default `commit_timeout`). With
    /// [`out_of_order_commits`](crate::ConsumerSettings::out_of_order_commits)
    /// the partition's watermark is committed, and nothing while an earlier
    /// record is still being processed.
    ///
    /// Cancel safety: dropping the future does not cancel the commit.
    pub async fn commit(self) -> Result<CommitOutcome> {
        let Some(next) = self.next_to_commit() else {
            // Out-of-order commits: an earlier record is still in flight.
            return Ok(CommitOutcome::default());
        };
        let retry_until = std::time::Instant::now() + crate::settings::DEFAULT_COMMIT_TIMEOUT;
        driver::commit(vec![(self.partition, next)], retry_until, false).await
    }
}

impl fmt::Debug for CommittableOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommittableOffset")
            .field("topic", &self.partition.tp().topic)
            .field("partition", &self.partition.tp().partition)
            .field("offset", &self.offset)
            .field("generation", &self.partition.generation())
            .finish()
    }
}

/// A record and the offset to commit after processing it.
#[derive(Debug, Clone)]
pub struct CommittableMessage {
    /// The record.
    pub record: ConsumerRecord,
    /// Its offset, to hand to a committer once the record is processed.
    pub offset: CommittableOffset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committable_message_stays_small_enough_to_move_without_memcpy() {
        // Larger values are moved by calls to memcpy through every stream
        // combinator of a pipeline.
        assert!(std::mem::size_of::<CommittableMessage>() <= 128);
        assert!(std::mem::size_of::<crate::Result<CommittableMessage>>() <= 128);
    }
}
