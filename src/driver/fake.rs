//! A driver without a consumer, for broker-free tests: commits are recorded
//! and answered on the caller's thread, and the lifecycle commands of a
//! `Control` change its state at once. The test kit's factories build on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{
    next_id, AckTracker, Command, DriverHandle, DriverLink, DriverState, HandOver, PartitionHandle,
    Shared, Target,
};
use crate::counted::Counted;
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::{CommitOutcome, DrainReport, PartitionOffset, Uncommitted};
use crate::record::TopicPartition;

type Reply = oneshot::Sender<Result<CommitOutcome>>;

/// What the fake consumer saw and how it answers.
#[derive(Default)]
struct State {
    /// Each commit as it was answered: partition and next offset to read.
    commits: Vec<Vec<PartitionOffset>>,
    /// Commit commands received, answered or not.
    requests: usize,
    /// Highest next offset committed per partition.
    committed: BTreeMap<TopicPartition, i64>,
    /// Answer nothing until released (a slow broker).
    hold: bool,
    held: Vec<(Vec<PartitionOffset>, Reply)>,
    /// Fail this many commits with a commit error.
    fail: usize,
    /// `Some` once a drain or a shutdown must never complete (a consumer
    /// whose close hangs in librdkafka): the drains' replies, kept
    /// unanswered.
    hung: Option<Vec<oneshot::Sender<DrainReport>>>,
    /// What was handed out of each partition, and with out-of-order
    /// commits its acknowledgements.
    handed: Vec<(TopicPartition, Arc<HandOver>, Option<Arc<AckTracker>>)>,
}

impl State {
    /// Partitions whose handed-out records are not all committed.
    fn uncommitted(&self) -> Vec<Uncommitted> {
        self.handed
            .iter()
            .filter_map(|(tp, h, _)| {
                let handed = h.handed_next()?;
                let c = self.committed.get(tp).copied();
                (c < Some(handed)).then(|| Uncommitted {
                    tp: tp.clone(),
                    committed_next: c,
                    emitted_next: handed,
                })
            })
            .collect()
    }

    fn drain_report(&self) -> DrainReport {
        let uncommitted = self.uncommitted();
        DrainReport {
            complete: uncommitted.is_empty(),
            committed: self
                .committed
                .iter()
                .map(|(tp, offset)| PartitionOffset {
                    tp: tp.clone(),
                    offset: *offset,
                })
                .collect(),
            uncommitted,
            lost: Vec::new(),
        }
    }
}

/// Records commits; answers them, or holds or fails them on request.
#[derive(Default)]
pub(crate) struct Recorder {
    state: Mutex<State>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one command as the driver would, at once.
    pub(super) fn handle(&self, command: Command, shared: &Shared) {
        match command {
            Command::Commit { offsets, reply, .. } => {
                let offsets = plain(offsets);
                let mut state = self.state();
                state.requests += 1;
                if state.hold {
                    state.held.push((offsets, reply));
                } else {
                    answer(&mut state, offsets, reply);
                }
            }
            Command::Stop => {
                if matches!(*shared.state.borrow(), DriverState::Running) {
                    shared.set_state(DriverState::Stopped);
                }
            }
            Command::Drain { reply, .. } => {
                let mut state = self.state();
                if let Some(hung) = &mut state.hung {
                    hung.push(reply);
                    return;
                }
                let _ = reply.send(state.drain_report());
                shared.set_state(DriverState::Closed(Ok(())));
            }
            Command::Shutdown => {
                if self.state().hung.is_none() {
                    shared.set_state(DriverState::Closed(Ok(())));
                }
            }
            Command::Fail(err) => {
                if !matches!(*shared.state.borrow(), DriverState::Closed(_)) {
                    shared.set_state(DriverState::Closed(Err(err)));
                }
            }
            Command::SourceDropped(_) | Command::Released => {}
            // No group here: a transaction cannot be committed for it.
            Command::GroupMetadata(reply) => {
                let _ = reply.send(None);
            }
            Command::CommittedInTransaction { offsets, reply } => {
                let offsets = plain(offsets);
                let _ = reply.send(record(&mut self.state(), offsets));
            }
        }
    }
}

fn answer(state: &mut State, offsets: Vec<PartitionOffset>, reply: Reply) {
    if state.fail > 0 {
        state.fail -= 1;
        let _ = reply.send(Err(Error::new(
            ErrorKind::Commit,
            "commit refused by the test",
        )));
        return;
    }
    let _ = reply.send(Ok(record(state, offsets)));
}

/// The offsets of a command, without their partitions' handles.
fn plain(offsets: super::CommitOffsets) -> Vec<PartitionOffset> {
    offsets
        .into_iter()
        .map(|(h, offset)| PartitionOffset {
            tp: h.tp.clone(),
            offset,
        })
        .collect()
}

/// Records an acknowledged commit of `offsets`.
fn record(state: &mut State, offsets: Vec<PartitionOffset>) -> CommitOutcome {
    for o in &offsets {
        let c = state.committed.entry(o.tp.clone()).or_insert(o.offset);
        *c = (*c).max(o.offset);
    }
    state.commits.push(offsets.clone());
    CommitOutcome {
        committed: offsets,
        ..CommitOutcome::default()
    }
}

/// A consumer that exists only in the test: partition handles to build
/// committable offsets from, and a handle for a `Control`.
#[derive(Debug)]
pub(crate) struct FakeConsumer {
    link: Arc<DriverLink>,
    recorder: Arc<Recorder>,
}

impl FakeConsumer {
    pub(crate) fn new() -> Self {
        Self::with_outstanding(None)
    }

    /// A consumer with out-of-order commits, at most `max_outstanding`
    /// records handed out and not covered by a watermark.
    #[cfg(test)]
    pub(crate) fn out_of_order(max_outstanding: usize) -> Self {
        Self::with_outstanding(Some(max_outstanding))
    }

    fn with_outstanding(max_outstanding: Option<usize>) -> Self {
        let recorder = Arc::new(Recorder::default());
        let link = Arc::new(DriverLink::new(
            next_id(),
            Target::Fake(recorder.clone()),
            Shared::new(max_outstanding),
        ));
        FakeConsumer { link, recorder }
    }

    /// With out-of-order commits: true while a source would hand out more
    /// records (fewer than the limit wait behind the watermark).
    #[cfg(test)]
    pub(crate) fn has_room(&self) -> bool {
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        self.control_handle().poll_room(&mut cx).is_ready()
    }

    /// The handle of `tp` (one assignment per partition), with `offset`
    /// marked handed out.
    pub(crate) fn hand_out(&self, tp: &TopicPartition, offset: i64) -> Counted<PartitionHandle> {
        self.hand_out_batch(tp, offset..offset + 1)
    }

    /// One handle of `tp` for the records at `offsets` (not empty), marked
    /// handed out: the handle a source's batch shares among its records.
    pub(crate) fn hand_out_batch(
        &self,
        tp: &TopicPartition,
        offsets: std::ops::Range<i64>,
    ) -> Counted<PartitionHandle> {
        debug_assert!(!offsets.is_empty(), "a batch of no records");
        let mut state = self.recorder.state();
        let (handover, acks) = match state.handed.iter().find(|(t, _, _)| t == tp) {
            Some((_, h, a)) => (h.clone(), a.clone()),
            None => {
                let h = Arc::new(HandOver::new());
                let a = self.link.shared.outstanding.is_some().then(Arc::default);
                state.handed.push((tp.clone(), h.clone(), a.clone()));
                (h, a)
            }
        };
        // Offsets may be made in any order; keep the highest handed out.
        let before = handover.handed_next().unwrap_or(0);
        let next = before.max(offsets.end);
        handover.hand(next - 1);
        if let (Some(acks), Some(outstanding)) = (&acks, &self.link.shared.outstanding) {
            // Registered in order: only offsets above every earlier one.
            acks.register(offsets.filter(|o| *o >= before), outstanding);
        }
        Counted::new(PartitionHandle {
            tp: tp.clone(),
            generation: 1,
            link: self.link.clone(),
            acks,
            handover,
            copies: Arc::new(()),
        })
    }

    /// From now on a drain or a shutdown never completes, as when
    /// librdkafka's close of the consumer hangs.
    #[cfg(test)]
    pub(crate) fn hang_close(&self) {
        self.recorder.state().hung.get_or_insert_with(Vec::new);
    }

    /// A handle for a `Control` of this consumer.
    pub(crate) fn control_handle(&self) -> Arc<DriverHandle> {
        Arc::new(DriverHandle {
            link: self.link.clone(),
            close_timeout: Duration::from_secs(1),
        })
    }

    pub(crate) fn commits(&self) -> Vec<Vec<PartitionOffset>> {
        self.recorder.state().commits.clone()
    }

    /// How many commit commands arrived, answered or not.
    #[cfg(test)]
    pub(crate) fn requests(&self) -> usize {
        self.recorder.state().requests
    }

    pub(crate) fn committed(&self) -> BTreeMap<TopicPartition, i64> {
        self.recorder.state().committed.clone()
    }

    /// What a drain would report now.
    pub(crate) fn drain_report(&self) -> DrainReport {
        self.recorder.state().drain_report()
    }

    pub(crate) fn hold_answers(&self, hold: bool) {
        let mut state = self.recorder.state();
        state.hold = hold;
        if !hold {
            for (offsets, reply) in std::mem::take(&mut state.held) {
                answer(&mut state, offsets, reply);
            }
        }
    }

    pub(crate) fn fail_commits(&self, n: usize) {
        self.recorder.state().fail = n;
    }

    /// Holds a revocation of `tp`, as the driver does with rebalance-safe
    /// commits: committers send its offsets at once.
    pub(crate) fn hold_revocation(&self, tp: &TopicPartition) {
        let state = self.recorder.state();
        if let Some((_, h, _)) = state.handed.iter().find(|(t, _, _)| t == tp) {
            h.start_revoking();
        }
        drop(state);
        self.link.shared.revoking.send_modify(|n| *n += 1);
    }

    /// Ends the consumer as a fatal error would.
    pub(crate) fn fail(&self, err: Error) {
        self.link.shared.set_state(DriverState::Closed(Err(err)));
    }
}
