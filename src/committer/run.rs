//! Offsets of one partition that reach a committer in a row, folded into the
//! two a commit can need.

use crate::consumer::CommittableOffset;
use crate::counted::Refs;
use crate::driver::PartitionHandle;
use crate::task_sink::{fold_into, Fold};

/// Offsets of one assignment of one partition that arrived one after the
/// other, reduced to the highest and the next highest; the others are
/// acknowledged as they are folded in (which with out-of-order commits
/// marks them processed) and dropped.
///
/// A batch keeps the highest offset of each partition, so adding a run
/// commits what adding each of its offsets would. With out-of-order
/// commits the two kept are acknowledged last, as the batch adds them, and
/// the watermark that returns covers the others. The next highest is kept
/// for [`CommitWhen::NextOffsetObserved`](crate::CommitWhen::NextOffsetObserved),
/// which holds the highest back and commits the one before it.
///
/// The committer's sink folds where the offsets are sent, each one straight
/// into the run its buffer ends with ([`Run::absorb`]), so its task
/// receives one value per run, not per offset, and each offset's handle is
/// cloned and dropped on the same thread; `committer::flow` folds each
/// chunk it takes, so both batch runs alike.
///
/// The sink, with [`CommitWhen::OffsetFirstObserved`](crate::CommitWhen::OffsetFirstObserved),
/// acknowledges each offset as it receives it (see [`Run::received`]):
/// the offsets then wait in its buffer and in the task's batch without
/// holding a partition's watermark back.
#[derive(Debug)]
pub(crate) struct Run {
    pub(super) highest: CommittableOffset,
    pub(super) next_highest: Option<CommittableOffset>,
    /// Offsets folded in besides these two.
    pub(super) folded: usize,
    /// Every offset of the run was acknowledged when it arrived.
    pub(super) acknowledged: bool,
    /// The handle references of the offsets folded away, given back
    /// together (one atomic operation per batch of the source instead of
    /// one per offset).
    folded_refs: Refs<PartitionHandle>,
}

impl Run {
    pub(crate) fn new(offset: CommittableOffset) -> Self {
        Run {
            highest: offset,
            next_highest: None,
            folded: 0,
            acknowledged: false,
            folded_refs: Refs::default(),
        }
    }

    /// A run of `offset`. With `acknowledged`, the caller acknowledged the
    /// offset as it received it: with out-of-order commits its record then
    /// counts as processed at once, so the partition's watermark (and the
    /// source's room under `out_of_order_commits`) does not wait until the
    /// offset reaches a batch, which may be a commit round trip later.
    /// Adding the run to a batch acknowledges its two kept offsets again,
    /// which returns the watermark reached by then.
    pub(crate) fn received(offset: CommittableOffset, acknowledged: bool) -> Self {
        Run {
            acknowledged,
            ..Run::new(offset)
        }
    }

    /// Folds `offset` in as [`Fold::fold`] folds `Run::received(offset,
    /// acknowledged)`, without building that run; gives it back when it
    /// belongs to another assignment.
    #[inline]
    pub(crate) fn absorb(
        &mut self,
        offset: CommittableOffset,
        acknowledged: bool,
    ) -> Option<CommittableOffset> {
        if !self.highest.same_assignment(&offset) {
            return Some(offset);
        }
        self.acknowledged &= acknowledged;
        self.keep(offset);
        None
    }

    /// Keeps `offset` (of the same assignment) if it is one of the two
    /// highest; the one of the three that is not is acknowledged, as a batch
    /// would on adding it, and counted. Its value is covered by the two kept
    /// (in order, a higher offset; out of order, a watermark that only grows).
    #[inline]
    fn keep(&mut self, offset: CommittableOffset) {
        let mut lowest = offset;
        if lowest.offset > self.highest.offset {
            std::mem::swap(&mut lowest, &mut self.highest);
        }
        let Some(next) = &mut self.next_highest else {
            self.next_highest = Some(lowest);
            return;
        };
        if lowest.offset > next.offset {
            std::mem::swap(&mut lowest, next);
        }
        if !self.acknowledged {
            let _ = lowest.next_to_commit();
        }
        self.folded += 1;
        self.folded_refs.keep(lowest.partition);
    }
}

impl Fold for Run {
    fn fold(&mut self, next: Self) -> Option<Self> {
        if !self.highest.same_assignment(&next.highest) {
            return Some(next);
        }
        self.folded += next.folded;
        // Offsets of a run not acknowledged on arrival are acknowledged here.
        self.acknowledged &= next.acknowledged;
        if let Some(o) = next.next_highest {
            self.keep(o);
        }
        self.keep(next.highest);
        None
    }
}

/// Folds `offsets` into runs, in order.
pub(crate) fn runs(offsets: impl IntoIterator<Item = CommittableOffset>) -> Vec<Run> {
    let mut out = Vec::new();
    for offset in offsets {
        fold_into(&mut out, Run::new(offset));
    }
    out
}
