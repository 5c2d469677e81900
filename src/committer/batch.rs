use std::future::Future;
use std::time::{Duration, Instant};

use super::run::Run;
use crate::consumer::CommittableOffset;
use crate::counted::Counted;
use crate::driver::{self, CommitOffsets, PartitionHandle};
use crate::error::Result;
use crate::outcome::CommitOutcome;

/// Offsets gathered for one commit: the highest offset per partition (per
/// consumer), newest assignment first.
///
/// Build one yourself to commit several offsets at once, or let
/// [`committer::sink`](super::sink) do it.
#[derive(Debug, Default, Clone)]
pub struct CommittableOffsetBatch {
    /// One entry per (consumer, partition); few partitions, so a Vec scan is
    /// faster than hashing.
    entries: CommitOffsets,
    count: usize,
    /// The entry the previous offset went to: offsets come in runs per partition.
    last: usize,
}

impl CommittableOffsetBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an offset. Within one partition, a later assignment generation
    /// wins, then the higher offset.
    pub fn add(&mut self, offset: CommittableOffset) {
        self.count += 1;
        let Some(next) = offset.next_to_commit() else {
            return; // out-of-order: an earlier record is still being processed
        };
        let handle = offset.partition;
        if let Some((h, o)) = self.entries.get_mut(self.last) {
            if Counted::ptr_eq(h, &handle) {
                *o = (*o).max(next);
                return;
            }
        }
        if let Some((i, (h, o))) = self
            .entries
            .iter_mut()
            .enumerate()
            .find(|(_, (h, _))| h.same_partition(&handle))
        {
            self.last = i;
            if (handle.generation(), next) > (h.generation(), *o) {
                *h = handle;
                *o = next;
            }
        } else {
            self.last = self.entries.len();
            self.entries.push((handle, next));
        }
    }

    /// Adds the offsets of a run: what adding each of them would do.
    pub(crate) fn add_run(&mut self, run: Run) {
        self.count_folded(run.folded);
        if let Some(o) = run.next_highest {
            self.add(o);
        }
        self.add(run.highest);
    }

    /// Counts offsets folded into a run (and acknowledged there) without
    /// adding them: the run's kept offsets cover them.
    pub(crate) fn count_folded(&mut self, n: usize) {
        self.count += n;
    }

    /// How many offsets were added since the batch was created or committed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each partition's offset to commit, in entry order.
    #[cfg(test)]
    pub(crate) fn offsets(&self) -> Vec<(crate::record::TopicPartition, i64)> {
        self.entries
            .iter()
            .map(|(h, o)| (h.tp().clone(), *o))
            .collect()
    }

    /// How many partitions the batch commits.
    pub fn partitions(&self) -> usize {
        self.entries.len()
    }

    /// True when an offset of a partition whose revocation is held is in
    /// the batch (a scan of one entry per partition).
    pub(crate) fn has_revoking(&self) -> bool {
        self.entries.iter().any(|(h, _)| h.handover().is_revoking())
    }

    /// One partition handle of each consumer the batch commits for.
    pub(crate) fn consumers(&self) -> Vec<Counted<PartitionHandle>> {
        let mut out: Vec<Counted<PartitionHandle>> = Vec::new();
        for (h, _) in &self.entries {
            if !out.iter().any(|o| o.same_consumer(h)) {
                out.push(h.clone());
            }
        }
        out
    }

    /// Sends the batch's commits (one per consumer) and returns a future of
    /// their outcome; the batch is left empty. Retriable failures are retried
    /// for up to `timeout`. `spaced`: a committer's batch (see
    /// `driver::commit`).
    pub(crate) fn dispatch(
        &mut self,
        timeout: Duration,
        spaced: bool,
    ) -> impl Future<Output = Result<CommitOutcome>> + Send + 'static {
        self.count = 0;
        self.last = 0;
        driver::commit(
            std::mem::take(&mut self.entries),
            Instant::now() + timeout,
            spaced,
        )
    }

    /// Commits the batch and waits for the broker's answer, retrying
    /// retriable failures for up to 60 s (the default `commit_timeout`).
    ///
    /// Cancel safety: dropping the future does not cancel the commit.
    pub async fn commit(mut self) -> Result<CommitOutcome> {
        if self.entries.is_empty() {
            return Ok(CommitOutcome::default());
        }
        self.dispatch(crate::settings::DEFAULT_COMMIT_TIMEOUT, false)
            .await
    }
}

impl Extend<CommittableOffset> for CommittableOffsetBatch {
    fn extend<T: IntoIterator<Item = CommittableOffset>>(&mut self, iter: T) {
        for o in iter {
            self.add(o);
        }
    }
}

impl FromIterator<CommittableOffset> for CommittableOffsetBatch {
    fn from_iter<T: IntoIterator<Item = CommittableOffset>>(iter: T) -> Self {
        let mut b = Self::new();
        b.extend(iter);
        b
    }
}
