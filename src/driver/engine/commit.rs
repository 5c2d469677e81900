//! Commits, their answers, and draining: the engine's side of the offsets
//! users hand back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::{Engine, Flight, InflightCommit, Phase};
use crate::consumer::{CommitOutcome, DrainReport, PartitionOffset, Uncommitted};
use crate::driver::context::CommittedPartition;
use crate::driver::CommitRequest;
use crate::error::{Error, ErrorKind, Result};

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How much longer a held revocation waits once a commit of its partitions
/// failed (see `end_revocations_of`).
const HOLD_AFTER_FAILED_COMMIT: Duration = Duration::from_secs(2);

/// A commit waiting for its retry.
pub(super) struct Retry {
    due: Instant,
    pub(super) commit: InflightCommit,
}

/// Capped exponential backoff with ±25% jitter (from the clock's nanoseconds:
/// enough to keep several consumers from retrying in lockstep).
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(10))
        .min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.75 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(jitter)
}

impl Engine {
    pub(super) fn commit(
        &mut self,
        offsets: CommitRequest,
        reply: Option<oneshot::Sender<Result<CommitOutcome>>>,
        retry_until: Option<Instant>,
    ) {
        if matches!(self.phase, Phase::Closing { .. }) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::closed(
                    "the consumer is closing; commit not sent",
                )));
            }
            return;
        }
        let mut commit = InflightCommit {
            reply,
            committed: Vec::with_capacity(offsets.len()),
            stale: Vec::new(),
            started: Instant::now(),
            attempt: 0,
            retry_until,
        };
        for (handle, offset) in offsets {
            let entry = (
                PartitionOffset {
                    tp: handle.tp.clone(),
                    offset,
                },
                handle.generation,
            );
            if handle.link.id != self.link.id {
                commit.stale.push(entry.0);
            } else if let Some(existing) = commit
                .committed
                .iter_mut()
                .find(|(e, g)| e.tp == entry.0.tp && *g == entry.1)
            {
                existing.0.offset = existing.0.offset.max(offset);
            } else {
                commit.committed.push(entry);
            }
        }
        self.send_commit(commit);
    }

    /// Queues a commit and sends what is queued if no commit is in flight.
    fn send_commit(&mut self, commit: InflightCommit) {
        if let Some(commit) = self.drop_stale(commit) {
            self.queued.push(commit);
        }
        self.send_queued();
    }

    /// Moves offsets whose assignment has ended to `stale`; answers the
    /// commit at once when nothing else is left.
    fn drop_stale(&mut self, mut commit: InflightCommit) -> Option<InflightCommit> {
        let partitions = &self.partitions;
        let (current, stale): (Vec<_>, Vec<_>) = commit.committed.drain(..).partition(|(o, g)| {
            partitions
                .iter()
                .any(|p| p.handle.tp == o.tp && p.handle.generation == *g)
        });
        commit.committed = current;
        if !stale.is_empty() {
            let stale: Vec<PartitionOffset> = stale.into_iter().map(|(o, _)| o).collect();
            self.link
                .shared
                .counters
                .offsets_stale
                .fetch_add(stale.len() as u64, Ordering::Relaxed);
            tracing::info!(stale = ?stale, "offsets of revoked partitions not committed");
            commit.stale.extend(stale);
        }
        if !commit.committed.is_empty() {
            return Some(commit);
        }
        if let Some(reply) = commit.reply {
            let _ = reply.send(Ok(CommitOutcome {
                committed: Vec::new(),
                stale: commit.stale,
                elapsed: commit.started.elapsed(),
            }));
        }
        None
    }

    /// One commit at a time goes to the broker (Kafka answers a client's
    /// requests one after another anyway); the commits requested meanwhile
    /// are merged into the next one, the highest offset per partition, and
    /// each is answered when it completes.
    pub(super) fn send_queued(&mut self) {
        if !self.inflight.is_empty() || self.queued.is_empty() {
            self.update_in_flight();
            return;
        }
        // Partitions may have been released while these waited.
        let queued = std::mem::take(&mut self.queued);
        let commits: Vec<InflightCommit> = queued
            .into_iter()
            .filter_map(|c| self.drop_stale(c))
            .collect();
        if commits.is_empty() {
            self.update_in_flight();
            return;
        }
        let mut offsets: Vec<(PartitionOffset, u64)> = Vec::new();
        for (o, g) in commits.iter().flat_map(|c| &c.committed) {
            match offsets.iter_mut().find(|(e, eg)| e.tp == o.tp && eg == g) {
                Some((e, _)) => e.offset = e.offset.max(o.offset),
                None => offsets.push((o.clone(), *g)),
            }
        }
        // Never move a committed offset back: a retried commit may carry an
        // offset that a later commit has already passed.
        offsets.retain(|(o, g)| {
            !self.partitions.iter().any(|p| {
                p.handle.tp == o.tp
                    && p.handle.generation == *g
                    && p.committed_next.is_some_and(|c| c >= o.offset)
            })
        });
        if offsets.is_empty() {
            for commit in commits {
                if let Some(reply) = commit.reply {
                    let _ = reply.send(Ok(CommitOutcome {
                        committed: commit.committed.into_iter().map(|(o, _)| o).collect(),
                        stale: commit.stale,
                        elapsed: commit.started.elapsed(),
                    }));
                }
            }
            self.update_in_flight();
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (e, _) in &offsets {
            if let Err(err) =
                tpl.add_partition_offset(&e.tp.topic, e.tp.partition, Offset::Offset(e.offset))
            {
                let err = Error::with_source(ErrorKind::Commit, "invalid offset", err).at(
                    &e.tp.topic,
                    Some(e.tp.partition),
                    Some(e.offset),
                );
                for commit in commits {
                    self.fail(commit, err.clone());
                }
                return;
            }
        }
        let result = match &self.commit_queue {
            Some(q) => q.commit(self.consumer(), &tpl),
            None => Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::InvalidArgument,
            )),
        };
        drop(tpl);
        match result {
            Ok(()) => self.inflight.push_back(Flight {
                offsets,
                commits,
                started: Instant::now(),
            }),
            Err(e) => {
                for commit in commits {
                    let err = commit_error(&commit.committed, e.clone());
                    self.fail_or_retry(commit, err);
                }
            }
        }
        self.update_in_flight();
    }

    /// Retries a retriable failure while its deadline allows, else fails it.
    fn fail_or_retry(&mut self, mut commit: InflightCommit, err: Error) {
        self.end_revocations_of(&commit.committed, &err);
        let wait = backoff(commit.attempt);
        let retry = (err.is_retriable() || group_moved_on(&err))
            && commit
                .retry_until
                .is_some_and(|until| Instant::now() + wait < until);
        if !retry {
            return self.fail(commit, err);
        }
        commit.attempt += 1;
        self.link
            .shared
            .counters
            .commit_retries
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(error = %err, attempt = commit.attempt, ?wait, "commit failed; retrying");
        self.retries.push(Retry {
            due: Instant::now() + wait,
            commit,
        });
        self.update_in_flight();
    }

    /// A commit of a partition whose revocation is held failed: hold it at
    /// most [`HOLD_AFTER_FAILED_COMMIT`] longer. A broker may refuse commits
    /// for a moment around a rebalance (Apache Kafka while the group
    /// completes a cooperative rebalance: the retry goes through), or for as
    /// long as the group waits for this member to give its partitions up
    /// (the embedded broker during a classic rebalance), where holding on
    /// would only stall the group. Records not committed by then are read
    /// again by the next owner; the commit is retried and reported stale.
    fn end_revocations_of(&mut self, offsets: &[(PartitionOffset, u64)], err: &Error) {
        let limit = Instant::now() + HOLD_AFTER_FAILED_COMMIT;
        for revoke in &mut self.revocations {
            if revoke.deadline > limit
                && revoke
                    .partitions
                    .iter()
                    .any(|tp| offsets.iter().any(|(o, _)| o.tp == *tp))
            {
                tracing::warn!(error = %err, partitions = ?revoke.partitions, "a commit of revoked partitions failed: releasing them within {HOLD_AFTER_FAILED_COMMIT:?} unless a retry succeeds");
                revoke.deadline = limit;
            }
        }
    }

    fn fail(&mut self, commit: InflightCommit, err: Error) {
        self.link
            .shared
            .counters
            .commit_failures
            .fetch_add(1, Ordering::Relaxed);
        self.update_in_flight();
        tracing::warn!(error = %err, elapsed = ?commit.started.elapsed(), "commit failed");
        if let Some(reply) = commit.reply {
            let _ = reply.send(Err(err));
        }
    }

    /// Resends the commits whose retry is due; returns when the next one is.
    pub(super) fn resend_due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let (due, waiting): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.due <= now);
        self.retries = waiting;
        if !due.is_empty() {
            // Queued together, so the retries due now go out as one commit.
            self.queued.extend(due.into_iter().map(|r| r.commit));
            self.send_queued();
        }
        self.retries.iter().map(|r| r.due).min()
    }

    pub(super) fn commits_pending(&self) -> bool {
        !self.inflight.is_empty() || !self.queued.is_empty() || !self.retries.is_empty()
    }

    /// Commits requested and not yet answered: sent, merged into the next
    /// commit, or waiting for a retry.
    fn update_in_flight(&self) {
        let sent: usize = self.inflight.iter().map(|f| f.commits.len()).sum();
        self.link.shared.counters.commits_in_flight.store(
            (sent + self.queued.len() + self.retries.len()) as u64,
            Ordering::Relaxed,
        );
    }

    pub(super) fn on_committed(
        &mut self,
        result: rdkafka::error::KafkaResult<()>,
        partitions: Vec<CommittedPartition>,
    ) {
        // Answers come in request order; match on the partitions anyway.
        let index = self
            .inflight
            .iter()
            .position(|f| {
                f.offsets.len() == partitions.len()
                    && f.offsets.iter().all(|(o, _)| {
                        partitions
                            .iter()
                            .any(|p| p.tp == o.tp && p.offset == Some(o.offset))
                    })
            })
            .unwrap_or(0);
        let Some(flight) = self.inflight.remove(index) else {
            // A commit this engine did not request (auto commit on a plain source).
            tracing::debug!(ok = result.is_ok(), "offsets committed by librdkafka");
            return;
        };
        let failed = partitions
            .iter()
            .find_map(|p| p.error.clone().map(|e| (p, e)));
        let outcome = match (result, failed) {
            (Err(e), _) => Err(commit_error(&flight.offsets, e)),
            (Ok(()), Some((p, e))) => Err(Error::with_source(
                ErrorKind::Commit,
                format!("commit failed: {e}"),
                e,
            )
            .at(&p.tp.topic, Some(p.tp.partition), p.offset)),
            (Ok(()), None) => Ok(()),
        };
        match outcome {
            Ok(()) => {
                let counters = &self.link.shared.counters;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .offsets_committed
                    .fetch_add(flight.offsets.len() as u64, Ordering::Relaxed);
                for (c, g) in &flight.offsets {
                    if let Some(p) = self
                        .partitions
                        .iter_mut()
                        .find(|p| p.handle.tp == c.tp && p.handle.generation == *g)
                    {
                        p.committed_next =
                            Some(p.committed_next.map_or(c.offset, |o| o.max(c.offset)));
                    }
                }
                tracing::debug!(offsets = ?flight.offsets, requests = flight.commits.len(), elapsed = ?flight.started.elapsed(), "committed");
                // Counters first: whoever gets the answer may read them at once.
                self.update_in_flight();
                for commit in flight.commits {
                    if let Some(reply) = commit.reply {
                        let _ = reply.send(Ok(CommitOutcome {
                            committed: commit.committed.into_iter().map(|(o, _)| o).collect(),
                            stale: commit.stale,
                            elapsed: commit.started.elapsed(),
                        }));
                    }
                }
            }
            Err(err) => {
                self.update_in_flight();
                for commit in flight.commits {
                    self.fail_or_retry(commit, err.clone());
                }
            }
        }
        self.send_queued();
    }

    pub(super) fn check_drain(&mut self) {
        let Some((deadline, _)) = &self.drain else {
            return;
        };
        let settled = !self.committable
            || (!self.commits_pending()
                && self
                    .partitions
                    .iter()
                    .all(|p| p.committed_up_to(p.handle.assignment.handed_next())));
        if settled || Instant::now() >= *deadline {
            self.begin_close();
        }
    }

    pub(super) fn drain_report(&self) -> DrainReport {
        let committed = self
            .partitions
            .iter()
            .filter_map(|p| {
                p.committed_next.map(|offset| PartitionOffset {
                    tp: p.handle.tp.clone(),
                    offset,
                })
            })
            .collect();
        let uncommitted: Vec<Uncommitted> = self
            .partitions
            .iter()
            .filter_map(|p| p.uncommitted())
            .collect();
        DrainReport {
            complete: uncommitted.is_empty(),
            committed,
            uncommitted,
        }
    }
}

/// The group has a new generation (or member epoch) this member has not
/// joined yet. Retried: once the member has rejoined the commit goes through
/// for the partitions it kept, and is reported stale for those it lost.
fn group_moved_on(err: &Error) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        err.rdkafka_code(),
        Some(IllegalGeneration | UnknownMemberId | FencedMemberEpoch | StaleMemberEpoch)
    )
}

fn commit_error(offsets: &[(PartitionOffset, u64)], e: KafkaError) -> Error {
    let list: Vec<String> = offsets
        .iter()
        .map(|(o, _)| format!("{}@{}", o.tp, o.offset))
        .collect();
    let err = Error::with_source(
        ErrorKind::Commit,
        format!("commit of [{}] failed: {e}", list.join(", ")),
        e,
    );
    match offsets {
        [(one, _)] => err.at(&one.tp.topic, Some(one.tp.partition), Some(one.offset)),
        _ => err,
    }
}
