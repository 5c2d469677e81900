//! What commits, drains and the consumer report: plain values shared by the
//! consumer API and the driver. Imports nothing but the record types.

use std::time::Duration;

use crate::record::TopicPartition;

/// A partition and an offset: for commits, the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Topic and partition.
    pub tp: TopicPartition,
    /// The offset (for a commit: last processed + 1).
    pub offset: i64,
}

/// What one commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitOutcome {
    /// Offsets the broker acknowledged.
    pub committed: Vec<PartitionOffset>,
    /// Offsets not committed because their partition was revoked since the
    /// record was fetched. Its next owner reads those records again.
    pub stale: Vec<PartitionOffset>,
    /// How long the commit took.
    pub elapsed: Duration,
}

impl CommitOutcome {
    /// Adds another commit's outcome to this one (the elapsed time is the longer one).
    pub(crate) fn merge(&mut self, other: CommitOutcome) {
        self.committed.extend(other.committed);
        self.stale.extend(other.stale);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// A partition whose records were handed out but not all committed at the end
/// of a drain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uncommitted {
    /// Topic and partition.
    pub tp: TopicPartition,
    /// The committed next offset, if anything was committed.
    pub committed_next: Option<i64>,
    /// The offset after the last record handed out.
    pub emitted_next: i64,
}

/// What [`Control::drain_and_shutdown`](crate::Control::drain_and_shutdown) achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// True when every record handed out had its offset committed before the
    /// deadline: nothing `uncommitted`, nothing `lost`.
    pub complete: bool,
    /// The committed next offset of each partition this consumer committed.
    pub committed: Vec<PartitionOffset>,
    /// Partitions with records handed out but not committed.
    pub uncommitted: Vec<Uncommitted>,
    /// Partitions lost while records handed out of them were not all
    /// committed: the consumer left the group without a clean revocation
    /// (session timeout, fencing), so those offsets could not be committed
    /// and the partition's next owner reads those records again.
    pub lost: Vec<Uncommitted>,
}

/// Counters of one consumer, read with [`Control::metrics`](crate::Control::metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerMetrics {
    /// Records read and passed to the source's buffer (some may not have
    /// been pulled yet: see [`records_handed_out`](Self::records_handed_out)).
    pub records: u64,
    /// Records the stream (or its sub-streams) handed out: what your code
    /// pulled.
    pub records_handed_out: u64,
    /// Key and payload bytes of the records read.
    pub bytes: u64,
    /// Batches handed to the source.
    pub batches: u64,
    /// Partitions assigned now.
    pub assigned_partitions: u64,
    /// Assignment events (rebalances that gave partitions).
    pub assignments: u64,
    /// Revocation events (rebalances that took partitions away).
    pub revocations: u64,
    /// Commits acknowledged by the broker.
    pub commits: u64,
    /// Commits that failed (after their retries).
    pub commit_failures: u64,
    /// Commit attempts retried after a retriable failure.
    pub commit_retries: u64,
    /// Commits sent or waiting for a retry, not answered yet.
    pub commits_in_flight: u64,
    /// Partition offsets committed, summed over commits.
    pub offsets_committed: u64,
    /// Offsets not committed because their partition had been revoked.
    pub offsets_stale: u64,
    /// Errors librdkafka reported and retries on its own (a broker away, a
    /// leader moving); logged at most once per 10 s per error.
    pub retried_errors: u64,
    /// Time revoked partitions were held, summed over revocations: from
    /// the revocation until the records handed out of them were committed
    /// (or `revoke_timeout`), while the rebalance waited.
    pub revocation_hold_time: std::time::Duration,
    /// Partitions this consumer paused in librdkafka: a partitioned
    /// source's partition whose sub-stream is full (and more than a read's
    /// worth of records waits for it), or a partition whose records nobody
    /// takes. A pause drops what librdkafka prefetched for the partition
    /// (about one record a pause, as the benchmark's partitioned case
    /// prints) and costs two calls that wait for librdkafka's threads
    /// (pausing, resuming): a count that grows with the records read means
    /// sub-streams that keep falling behind.
    pub partition_pauses: u64,
}

/// How a consumer is doing, read with [`Control::health`](crate::Control::health):
/// for a `/health` endpoint or a watchdog of your own.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// True until the consumer stopped or closed.
    pub running: bool,
    /// Partitions assigned now.
    pub assigned_partitions: u64,
    /// Since the stream (or any sub-stream) was last pulled; `None` if never.
    pub since_pulled: Option<std::time::Duration>,
    /// Since the consumer thread last polled librdkafka; `None` if never.
    pub since_polled: Option<std::time::Duration>,
    /// Since a commit last succeeded; `None` if none did.
    pub since_committed: Option<std::time::Duration>,
    /// Times the stream was found not pulled for longer than
    /// [`max_pull_interval`](crate::ConsumerSettings::max_pull_interval)
    /// while records waited for it.
    pub stalls: u64,
    /// The last error the consumer met, retried or not.
    pub last_error: Option<crate::error::Error>,
}
