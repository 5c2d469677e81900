//! The consumer engine: one dedicated thread per consumer owns the librdkafka
//! handle and every blocking call on it. Async code talks to it through
//! commands and receives records through a bounded channel.

mod batch;
mod commit_queue;
mod context;
mod engine;
mod partition_queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::committer::tracker::{Outstanding, PartitionTracker};
use crate::consumer::{CommitOutcome, ConsumerMetrics, DrainReport, Subscription};
use crate::error::{Error, Result};
use crate::record::{ConsumerRecord, TopicPartition};
use crate::settings::ConsumerSettings;

pub(crate) use engine::spawn;

/// What the engine hands to a source: records of one partition, in offset order.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) partition: Arc<PartitionHandle>,
    pub(crate) records: Vec<ConsumerRecord>,
}

/// One assignment of one partition: commits made through it are checked
/// against the generation, so an offset from before a revocation is reported
/// stale instead of being committed.
///
/// Each batch carries its own copy (one allocation per batch): every
/// committable offset clones it, and a counter shared by all batches would
/// have the consuming task and the committer fight over it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionHandle {
    pub(crate) tp: TopicPartition,
    pub(crate) generation: u64,
    pub(crate) link: Arc<EngineLink>,
    /// With out-of-order commits: the acknowledgements of this assignment.
    pub(crate) tracker: Option<Arc<PartitionTracker>>,
}

impl PartitionHandle {
    /// True when both name the same assignment of the same partition.
    pub(crate) fn same_assignment(&self, other: &PartitionHandle) -> bool {
        self.generation == other.generation && self.link.id == other.link.id && self.tp == other.tp
    }
}

/// The command path to an engine. Held by partition handles (and so by every
/// committable offset); does not keep the engine alive.
#[derive(Debug)]
pub(crate) struct EngineLink {
    pub(crate) id: u64,
    commands: mpsc::Sender<Command>,
    thread: Thread,
    pub(crate) shared: Arc<Shared>,
}

impl EngineLink {
    pub(crate) fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .map_err(|_| Error::closed("the consumer is closed"))?;
        self.thread.unpark();
        Ok(())
    }

    pub(crate) fn wake(&self) {
        self.thread.unpark();
    }
}

/// A user's hold on an engine (the source stream and each `Control`). When the
/// last one is dropped, the engine closes the consumer on its own thread.
#[derive(Debug)]
pub(crate) struct EngineHandle {
    pub(crate) link: Arc<EngineLink>,
    pub(crate) close_timeout: Duration,
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // Never blocks: a channel send and an unpark.
        let _ = self.link.send(Command::Released);
    }
}

/// Offsets to commit for one engine: the partition's assignment and the next
/// offset to read (last processed + 1).
pub(crate) type CommitRequest = Vec<(Arc<PartitionHandle>, i64)>;

#[derive(Debug)]
pub(crate) enum Command {
    Commit {
        offsets: CommitRequest,
        reply: Option<oneshot::Sender<Result<CommitOutcome>>>,
        /// Retriable failures are retried (with backoff) until then.
        retry_until: Option<Instant>,
    },
    Stop,
    Drain {
        deadline: Instant,
        reply: oneshot::Sender<DrainReport>,
    },
    Shutdown,
    /// The source was dropped; these offsets had been handed to it but never
    /// pulled, so a drain must not wait for their commit.
    SourceDropped {
        unpulled: Vec<(TopicPartition, i64)>,
    },
    Released,
}

/// Lifecycle of an engine, observed through `Control`.
#[derive(Debug, Clone)]
pub(crate) enum EngineState {
    Running,
    Stopped,
    Closed(Result<()>),
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) assigned_partitions: AtomicU64,
    pub(crate) assignments: AtomicU64,
    pub(crate) revocations: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) commit_retries: AtomicU64,
    pub(crate) commits_in_flight: AtomicU64,
    pub(crate) offsets_committed: AtomicU64,
    pub(crate) offsets_stale: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: watch::Sender<EngineState>,
    pub(crate) counters: Counters,
    /// With out-of-order commits: offsets handed out and not yet committable.
    pub(crate) outstanding: Option<Outstanding>,
}

impl Shared {
    pub(crate) fn metrics(&self) -> ConsumerMetrics {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConsumerMetrics {
            records: get(&c.records),
            batches: get(&c.batches),
            assigned_partitions: get(&c.assigned_partitions),
            assignments: get(&c.assignments),
            revocations: get(&c.revocations),
            commits: get(&c.commits),
            commit_failures: get(&c.commit_failures),
            commit_retries: get(&c.commit_retries),
            commits_in_flight: get(&c.commits_in_flight),
            offsets_committed: get(&c.offsets_committed),
            offsets_stale: get(&c.offsets_stale),
        }
    }
}

/// What `spawn` needs to know.
#[derive(Debug)]
pub(crate) struct EngineConfig {
    pub(crate) settings: ConsumerSettings,
    pub(crate) subscription: Subscription,
    pub(crate) committable: bool,
}

pub(crate) fn next_engine_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
