use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::driver::{Command, EngineHandle, EngineState};
use crate::error::{Error, ErrorKind, Result};
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
pub struct CommitOutcome {
    /// Offsets the broker acknowledged.
    pub committed: Vec<PartitionOffset>,
    /// Offsets not committed because their partition was revoked since the
    /// record was fetched. Its next owner reads those records again.
    pub stale: Vec<PartitionOffset>,
    /// How long the commit took.
    pub elapsed: Duration,
}

/// A partition whose records were handed out but not all committed at the end
/// of a drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncommitted {
    /// Topic and partition.
    pub tp: TopicPartition,
    /// The committed next offset, if anything was committed.
    pub committed_next: Option<i64>,
    /// The offset after the last record handed out.
    pub emitted_next: i64,
}

/// What [`Control::drain_and_shutdown`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// True when every record handed out had its offset committed before the deadline.
    pub complete: bool,
    /// The committed next offset of each partition this consumer committed.
    pub committed: Vec<PartitionOffset>,
    /// Partitions with records handed out but not committed.
    pub uncommitted: Vec<Uncommitted>,
}

/// Counters of one consumer, read with [`Control::metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerMetrics {
    /// Records handed to the source.
    pub records: u64,
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
}

/// Stops, drains and shuts down a source's consumer, and reports how it ended.
///
/// Cloneable; every clone controls the same consumer. The consumer is closed
/// when [`shutdown`](Self::shutdown) is called, when it fails, or when the
/// source stream and every `Control` have been dropped.
///
/// Cancel safety: each method sends its command before its first `.await`;
/// dropping the returned future does not cancel the command, only the wait.
#[derive(Clone)]
pub struct Control {
    handle: Arc<EngineHandle>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("engine", &self.handle.link.id)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl Control {
    pub(crate) fn new(handle: Arc<EngineHandle>) -> Self {
        Control { handle }
    }

    /// Stops fetching: the source ends after the records already handed to
    /// it. The consumer stays in its group, so offsets of records still being
    /// processed can be committed. Resolves once the engine has stopped.
    pub async fn stop(&self) -> Result<()> {
        self.send(Command::Stop)?;
        let mut rx = self.handle.link.shared.state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, EngineState::Running))
            .await
            .map_err(|_| Error::closed("the consumer engine is gone"))?
            .clone();
        match state {
            EngineState::Closed(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops, waits for in-flight commits, leaves the group and closes the
    /// consumer. Resolves when it is closed, with the error that ended it if
    /// one did. Bounded by [`close_timeout`](crate::ConsumerSettings::close_timeout).
    pub async fn shutdown(&self) -> Result<()> {
        // If the engine is already gone this is not an error: wait reports how it ended.
        let _ = self.send(Command::Shutdown);
        self.wait_closed(self.handle.close_timeout * 2 + Duration::from_secs(1))
            .await
    }

    /// Stops fetching, waits up to `timeout` until every record the source
    /// handed out has had its offset committed (through any committer), then
    /// shuts down. The report says what was committed and what was not.
    ///
    /// Records are "handed out" when the stream returned them; if the stream
    /// is dropped, records it held but never returned do not count. A record
    /// your pipeline filters out must still have its offset committed, or a
    /// later one of the same partition, for the drain to complete early.
    pub async fn drain_and_shutdown(&self, timeout: Duration) -> Result<DrainReport> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Drain {
            deadline: Instant::now() + timeout,
            reply: tx,
        })?;
        let report = rx.await;
        self.wait_closed(self.handle.close_timeout * 2 + Duration::from_secs(1))
            .await?;
        report.map_err(|_| Error::closed("the consumer closed before the drain finished"))
    }

    /// Resolves when the consumer is closed: `Ok` after a clean shutdown, the
    /// error otherwise (a fatal consumer error, an unreachable broker, a close
    /// that timed out). Does not ask it to close.
    pub async fn is_shutdown(&self) -> Result<()> {
        let mut rx = self.handle.link.shared.state.subscribe();
        let state = rx
            .wait_for(|s| matches!(s, EngineState::Closed(_)))
            .await
            .map_err(|_| Error::closed("the consumer engine is gone"))?
            .clone();
        match state {
            EngineState::Closed(result) => result,
            _ => unreachable!("wait_for returned a state that is not closed"),
        }
    }

    /// True once the consumer is closed.
    pub fn is_closed(&self) -> bool {
        matches!(
            *self.handle.link.shared.state.borrow(),
            EngineState::Closed(_)
        )
    }

    /// A snapshot of the consumer's counters.
    pub fn metrics(&self) -> ConsumerMetrics {
        self.handle.link.shared.metrics()
    }

    fn send(&self, command: Command) -> Result<()> {
        self.handle.link.send(command)
    }

    async fn wait_closed(&self, limit: Duration) -> Result<()> {
        match tokio::time::timeout(limit, self.is_shutdown()).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("the consumer did not close within {limit:?}"),
            )),
        }
    }
}
