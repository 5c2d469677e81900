use std::time::Duration;

use crate::error::Error;

/// The default [`CommitterSettings::commit_timeout`].
pub(crate) const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the committer waits for the broker to acknowledge a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitDelivery {
    /// Wait for each commit's acknowledgement; a failed commit fails the sink.
    WaitForAck,
    /// Hand the commit to the consumer and go on; failures are only logged.
    SendAndForget,
}

/// When an offset becomes committable (Alpakka's `CommitWhen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitWhen {
    /// As soon as the committer receives it.
    OffsetFirstObserved,
    /// Only once a newer offset of the same partition arrives (or the stream
    /// ends). For pipelines that may emit an offset before the record it
    /// belongs to is complete, such as several outputs per input record.
    NextOffsetObserved,
}

/// Settings of the batched committer, with Alpakka's knobs and defaults.
#[derive(Debug, Clone)]
pub struct CommitterSettings {
    pub(crate) max_batch: usize,
    pub(crate) max_interval: Duration,
    pub(crate) parallelism: usize,
    pub(crate) delivery: CommitDelivery,
    pub(crate) commit_timeout: Duration,
    pub(crate) when: CommitWhen,
}

impl Default for CommitterSettings {
    fn default() -> Self {
        CommitterSettings {
            max_batch: 1000,
            max_interval: Duration::from_secs(10),
            parallelism: 100,
            delivery: CommitDelivery::WaitForAck,
            commit_timeout: DEFAULT_COMMIT_TIMEOUT,
            when: CommitWhen::OffsetFirstObserved,
        }
    }
}

impl CommitterSettings {
    /// The defaults: batches of 1000, at least every 10 s, 100 commits in
    /// flight, waiting for acknowledgements, 60 s commit timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commit once this many offsets were received since the last commit. Default 1000.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Commit at least this often while offsets are pending. Default 10 s.
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.max_interval = interval;
        self
    }

    /// Most commits in flight at once. Default 100. While all of them are in
    /// flight, arriving offsets are merged into the next commit (only the
    /// highest offset per partition counts), so a broker slow to answer
    /// commits means fewer, larger commits rather than a slower stream.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Wait for acknowledgements or not. Default [`CommitDelivery::WaitForAck`].
    pub fn delivery(mut self, delivery: CommitDelivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// How long the retriable failures of one commit are retried
    /// (coordinator moves, rebalances in progress, request timeouts, a
    /// broker restarting), with capped exponential backoff and jitter; the
    /// failure after that fails the commit, saying how many attempts it made
    /// and for how long. A commit librdkafka has sent is not abandoned by a
    /// timer: the broker answers it, or librdkafka fails it after its
    /// `socket.timeout.ms` (60 s by default), so every commit is answered
    /// within `commit_timeout` plus `socket.timeout.ms`. Default 60 s, longer
    /// than a broker restart (7 to 22 s measured on Apache Kafka 4.1).
    pub fn commit_timeout(mut self, timeout: Duration) -> Self {
        self.commit_timeout = timeout;
        self
    }

    /// When an offset becomes committable. Default [`CommitWhen::OffsetFirstObserved`].
    pub fn when(mut self, when: CommitWhen) -> Self {
        self.when = when;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_batch == 0 {
            return Err(Error::config(
                "invalid committer setting `max_batch`: must be at least 1",
            ));
        }
        if self.parallelism == 0 {
            return Err(Error::config(
                "invalid committer setting `parallelism`: must be at least 1",
            ));
        }
        super::positive_duration("max_interval", self.max_interval)?;
        super::positive_duration("commit_timeout", self.commit_timeout)
    }
}
