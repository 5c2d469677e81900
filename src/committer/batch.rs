use std::sync::Arc;

use futures::future::try_join_all;
use tokio::sync::oneshot;

use crate::consumer::{CommitOutcome, CommittableOffset};
use crate::driver::{Command, CommitRequest, EngineLink, PartitionHandle};
use crate::error::{Error, Result};

/// Offsets gathered for one commit: the highest offset per partition (per
/// consumer), newest assignment first.
///
/// Build one yourself to commit several offsets at once, or let
/// [`committer::sink`](super::sink) do it.
#[derive(Debug, Default, Clone)]
pub struct CommittableOffsetBatch {
    /// One entry per (consumer, partition); few partitions, so a Vec scan is
    /// faster than hashing.
    entries: Vec<(Arc<PartitionHandle>, i64)>,
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
            if Arc::ptr_eq(h, &handle) {
                *o = (*o).max(next);
                return;
            }
        }
        if let Some((i, (h, o))) = self
            .entries
            .iter_mut()
            .enumerate()
            .find(|(_, (h, _))| h.link.id == handle.link.id && h.tp == handle.tp)
        {
            self.last = i;
            if (handle.generation, next) > (h.generation, *o) {
                *h = handle;
                *o = next;
            }
        } else {
            self.last = self.entries.len();
            self.entries.push((handle, next));
        }
    }

    /// How many offsets were added since the batch was created or committed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many partitions the batch commits.
    pub fn partitions(&self) -> usize {
        self.entries.len()
    }

    /// Sends the batch's commits (one per consumer) and returns a future of
    /// their outcome; the batch is left empty.
    pub(crate) fn dispatch(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<impl std::future::Future<Output = Result<CommitOutcome>> + Send + 'static> {
        self.count = 0;
        self.last = 0;
        let mut by_engine: Vec<(Arc<EngineLink>, CommitRequest)> = Vec::new();
        for (handle, offset) in self.entries.drain(..) {
            match by_engine.iter_mut().find(|(l, _)| l.id == handle.link.id) {
                Some((_, req)) => req.push((handle, offset)),
                None => by_engine.push((handle.link.clone(), vec![(handle, offset)])),
            }
        }
        let mut replies = Vec::with_capacity(by_engine.len());
        for (link, offsets) in by_engine {
            let (tx, rx) = oneshot::channel();
            link.send(Command::Commit {
                offsets,
                reply: Some(tx),
                retry_until: Some(std::time::Instant::now() + timeout),
            })?;
            replies.push(async move {
                rx.await
                    .map_err(|_| Error::closed("the consumer closed before answering the commit"))?
            });
        }
        Ok(async move {
            let outcomes = try_join_all(replies).await?;
            let mut total = CommitOutcome::default();
            for o in outcomes {
                total.committed.extend(o.committed);
                total.stale.extend(o.stale);
                total.elapsed = total.elapsed.max(o.elapsed);
            }
            Ok(total)
        })
    }

    /// Commits the batch and waits for the broker's answer, retrying
    /// retriable failures for up to 15 s.
    ///
    /// Cancel safety: dropping the future does not cancel the commit.
    pub async fn commit(mut self) -> Result<CommitOutcome> {
        if self.entries.is_empty() {
            return Ok(CommitOutcome::default());
        }
        self.dispatch(crate::settings::DEFAULT_COMMIT_TIMEOUT)?
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
