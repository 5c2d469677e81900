//! The commit pipeline: the driver's side of the offsets users hand back.
//!
//! Rules, each unit-tested below with a clock the test moves by hand:
//!
//! - **Stale**: an offset whose assignment has ended (another generation, or
//!   another consumer) is not committed; it is reported in
//!   [`CommitOutcome::stale`], checked again before every send.
//! - **One in flight**: one commit at a time goes to the broker (Kafka
//!   answers a client's requests one after another anyway); requests that
//!   arrive meanwhile are merged into the next commit, the highest offset per
//!   partition and generation, and each request is answered when the commit
//!   that carried it is.
//! - **Spaced**: a committer's batch, or any request that arrived while a
//!   commit was in flight, goes out no sooner than `min_interval` after the
//!   last commit, so a busy pipeline does not send a commit every round trip
//!   (each costs the group coordinator CPU); requests wait merged until
//!   then. Any other request that finds nothing in flight goes out at once
//!   (a caller that commits and waits, one commit at a time, is not
//!   slowed), and so does everything while the target says it is urgent (a
//!   revocation waits for commits, or the consumer drains or closes).
//! - **Never back**: an offset at or below what the broker already
//!   acknowledged for its partition is not sent again.
//! - **Retry**: a retriable failure (or one that says the group moved on) is
//!   retried with capped exponential backoff and jitter until the request's
//!   deadline; retries due together go out as one commit.
//! - **Deadline**: a request still unanswered at its deadline (its commit
//!   held by librdkafka, which waits for an unreachable group coordinator
//!   without a bound of its own, or queued behind such a commit) is answered
//!   with a timeout error; the commit stays in flight, and a late answer
//!   still records what the broker acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::oneshot;

use super::context::CommittedPartition;
use super::{CommitOffsets, Counters, DriverLink};
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Report, Result};
use crate::outcome::{CommitOutcome, PartitionOffset};
use crate::record::TopicPartition;

/// Commit retries wait 40 to 60 ms first, doubling up to 2 to 3 s.
pub(super) const RETRY_BACKOFF: Backoff =
    Backoff::constant_parts(Duration::from_millis(40), Duration::from_secs(2), 0.5);

/// What the pipeline needs from the rest of the driver.
pub(crate) trait CommitTarget {
    /// True while `tp` is assigned in `generation`.
    fn is_current(&self, tp: &TopicPartition, generation: u64) -> bool;
    /// The acknowledged committed offset of `tp` in `generation`.
    fn committed_next(&self, tp: &TopicPartition, generation: u64) -> Option<i64>;
    /// True when commits must not wait for `min_interval`: a revocation
    /// waits for them, or the consumer is draining or closing.
    fn urgent(&self) -> bool;
    /// Sends a commit; its answer must come back through
    /// [`CommitPipeline::answered`].
    fn send(&mut self, offsets: &[PartitionOffset]) -> std::result::Result<(), KafkaError>;
    /// The broker acknowledged `next` for `tp` in `generation`.
    fn committed(&mut self, tp: &TopicPartition, generation: u64, next: i64);
    /// A commit of `offsets` failed (it may still be retried).
    fn failed(&mut self, offsets: &[(PartitionOffset, u64)], err: &Error, now: Instant);
}

/// Offsets with the assignment generation each came from.
type Offsets = Vec<(PartitionOffset, u64)>;

/// One user request (a committer's batch, or one offset's `commit()`).
struct Request {
    reply: Option<oneshot::Sender<Result<CommitOutcome>>>,
    offsets: Offsets,
    stale: Vec<PartitionOffset>,
    started: Instant,
    attempt: u32,
    /// Retriable failures are retried until then.
    retry_until: Instant,
}

impl Request {
    fn answer(self, result: Result<CommitOutcome>) {
        if let Some(reply) = self.reply {
            let _ = reply.send(result);
        }
    }

    fn succeed(self, now: Instant) {
        let outcome = CommitOutcome {
            committed: self.offsets.iter().map(|(o, _)| o.clone()).collect(),
            stale: self.stale.clone(),
            elapsed: now.saturating_duration_since(self.started),
        };
        self.answer(Ok(outcome));
    }
}

/// A commit sent to the broker: the merged offsets of the requests it answers.
struct SentCommit {
    offsets: Offsets,
    requests: Vec<Request>,
    started: Instant,
    /// The commit's span (feature `opentelemetry`), closed with the answer.
    span: tracing::Span,
}

/// A request waiting for its retry.
struct Retry {
    due: Instant,
    request: Request,
}

pub(crate) struct CommitPipeline {
    link: Arc<DriverLink>,
    /// Sent, oldest first; at most one (see the module docs).
    sent: VecDeque<SentCommit>,
    /// Waiting for the commit in flight, merged into the next.
    queued: Vec<Request>,
    retries: Vec<Retry>,
    group: Option<String>,
    /// Commit durations and revocation holds (feature `metrics`).
    pub(crate) timings: crate::export::Timings,
    /// The least time between two commits sent (see the module docs).
    min_interval: Duration,
    /// When the last commit was sent.
    last_sent: Option<Instant>,
    /// A request queued now is a committer's or arrived while a commit was
    /// in flight: the next commit waits for `min_interval`.
    busy: bool,
}

impl CommitPipeline {
    /// `client_id` and `group` label the commit spans and durations; commits
    /// go out at least `min_interval` apart unless urgent.
    pub(crate) fn new(
        link: Arc<DriverLink>,
        client_id: &str,
        group: Option<&str>,
        min_interval: Duration,
    ) -> Self {
        CommitPipeline {
            link,
            sent: VecDeque::new(),
            queued: Vec::new(),
            retries: Vec::new(),
            group: group.map(str::to_owned),
            timings: crate::export::Timings::new(client_id, group),
            min_interval,
            last_sent: None,
            busy: false,
        }
    }

    fn counters(&self) -> &Counters {
        &self.link.shared.counters
    }

    /// True while a request is sent, queued or waiting for a retry.
    pub(crate) fn is_busy(&self) -> bool {
        !self.sent.is_empty() || !self.queued.is_empty() || !self.retries.is_empty()
    }

    /// Takes a user's request: offsets (next to read) with their assignments;
    /// `spaced` (a committer's batch) waits for `min_interval` even when no
    /// commit is in flight.
    pub(crate) fn submit(
        &mut self,
        offsets: CommitOffsets,
        reply: oneshot::Sender<Result<CommitOutcome>>,
        retry_until: Instant,
        spaced: bool,
        now: Instant,
        target: &mut impl CommitTarget,
    ) {
        let mut request = Request {
            reply: Some(reply),
            offsets: Vec::with_capacity(offsets.len()),
            stale: Vec::new(),
            started: now,
            attempt: 0,
            retry_until,
        };
        for (handle, offset) in offsets {
            let entry = PartitionOffset {
                tp: handle.tp.clone(),
                offset,
            };
            if handle.link.id != self.link.id {
                request.stale.push(entry);
            } else {
                merge(&mut request.offsets, entry, handle.generation);
            }
        }
        if let Some(request) = self.drop_stale(request, now, target) {
            self.busy |= spaced || !self.sent.is_empty();
            self.queued.push(request);
        }
        self.send_queued(now, target);
    }

    /// Moves offsets whose assignment has ended to `stale`; answers the
    /// request at once when nothing else is left.
    fn drop_stale(
        &self,
        mut request: Request,
        now: Instant,
        target: &impl CommitTarget,
    ) -> Option<Request> {
        let (current, stale): (Offsets, Offsets) = request
            .offsets
            .drain(..)
            .partition(|(o, g)| target.is_current(&o.tp, *g));
        request.offsets = current;
        if !stale.is_empty() {
            let stale: Vec<PartitionOffset> = stale.into_iter().map(|(o, _)| o).collect();
            Counters::add(&self.counters().offsets_stale, stale.len() as u64);
            tracing::info!(stale = ?stale, "offsets of revoked partitions not committed");
            request.stale.extend(stale);
        }
        if !request.offsets.is_empty() {
            return Some(request);
        }
        request.succeed(now);
        None
    }

    /// Sends what is queued, merged into one commit, unless one is in flight
    /// or requests keep coming and the last went out less than
    /// `min_interval` ago (and nothing is urgent).
    fn send_queued(&mut self, now: Instant, target: &mut impl CommitTarget) {
        if self.sent.is_empty()
            && !self.queued.is_empty()
            && (self.spacing_due(now).is_none() || target.urgent())
        {
            self.send_merged(now, target);
        }
        self.update_in_flight();
    }

    /// When the next commit may go out, by `min_interval` alone; `None`
    /// once it may go out now.
    fn spacing_due(&self, now: Instant) -> Option<Instant> {
        if !self.busy {
            return None;
        }
        let due = self.last_sent? + self.min_interval;
        (due > now).then_some(due)
    }

    fn send_merged(&mut self, now: Instant, target: &mut impl CommitTarget) {
        self.busy = false;
        // Partitions may have been released while these waited.
        let requests: Vec<Request> = std::mem::take(&mut self.queued)
            .into_iter()
            .filter_map(|r| self.drop_stale(r, now, target))
            .collect();
        let mut offsets: Offsets = Vec::new();
        for (o, g) in requests.iter().flat_map(|r| &r.offsets) {
            merge(&mut offsets, o.clone(), *g);
        }
        // Never move a committed offset back: a retried request may carry an
        // offset that a later commit has already passed.
        offsets.retain(|(o, g)| {
            target
                .committed_next(&o.tp, *g)
                .is_none_or(|c| c < o.offset)
        });
        if offsets.is_empty() {
            for request in requests {
                request.succeed(now);
            }
            return;
        }
        let plain: Vec<PartitionOffset> = offsets.iter().map(|(o, _)| o.clone()).collect();
        match target.send(&plain) {
            Ok(()) => {
                self.last_sent = Some(now);
                let span = crate::otel::commit(self.group.as_deref(), offsets.len());
                self.sent.push_back(SentCommit {
                    offsets,
                    requests,
                    started: now,
                    span,
                })
            }
            Err(e) => {
                let err = commit_error(&offsets, e);
                target.failed(&offsets, &err, now);
                for request in requests {
                    self.fail_or_retry(request, err.clone(), now);
                }
            }
        }
    }

    /// Retries a retriable failure while its deadline allows, else fails it.
    fn fail_or_retry(&mut self, mut request: Request, err: Error, now: Instant) {
        let wait = RETRY_BACKOFF.delay(request.attempt);
        let retry =
            (err.is_retriable() || group_moved_on(&err)) && now + wait < request.retry_until;
        if !retry {
            let err = match request.attempt {
                0 => err,
                retries => err.with_note(&format!(
                    "gave up after {} attempts over {:?} (retried until commit_timeout)",
                    retries + 1,
                    now.saturating_duration_since(request.started)
                )),
            };
            Counters::add(&self.counters().commit_failures, 1);
            self.update_in_flight();
            tracing::warn!(error = %Report(&err), elapsed = ?now.saturating_duration_since(request.started), "commit failed");
            return request.answer(Err(err));
        }
        request.attempt += 1;
        Counters::add(&self.counters().commit_retries, 1);
        tracing::info!(error = %Report(&err), attempt = request.attempt, ?wait, "commit failed; retrying");
        self.retries.push(Retry {
            due: now + wait,
            request,
        });
    }

    /// Answers, with a timeout error, every request whose deadline passed
    /// while its commit was in flight or queued behind one.
    fn expire(&mut self, now: Instant) {
        let expired = |r: &Request| r.retry_until <= now;
        if !self.sent.iter().flat_map(|s| &s.requests).any(expired)
            && !self.queued.iter().any(expired)
        {
            return;
        }
        let mut late = Vec::new();
        for sent in &mut self.sent {
            let (gone, kept): (Vec<Request>, Vec<Request>) = std::mem::take(&mut sent.requests)
                .into_iter()
                .partition(expired);
            sent.requests = kept;
            late.extend(gone.into_iter().map(|r| (r, "sent")));
        }
        let (gone, kept): (Vec<Request>, Vec<Request>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(expired);
        self.queued = kept;
        late.extend(
            gone.into_iter()
                .map(|r| (r, "queued behind a commit in flight")),
        );
        for (request, state) in late {
            let list: Vec<String> = request
                .offsets
                .iter()
                .map(|(o, _)| format!("{}@{}", o.tp, o.offset))
                .collect();
            let waited = now.saturating_duration_since(request.started);
            let err = Error::new(
                ErrorKind::Timeout,
                format!(
                    "commit of [{}] got no answer within {waited:?} (commit_timeout; {state}, {} attempts): the group coordinator does not answer; librdkafka may still apply the commit later",
                    list.join(", "),
                    request.attempt + 1
                ),
            );
            Counters::add(&self.counters().commit_failures, 1);
            tracing::warn!(error = %Report(&err), "commit failed");
            request.answer(Err(err));
        }
        self.update_in_flight();
    }

    /// Sends the retries that are due, and what waited for `min_interval`
    /// (or for an urgent send), and answers the requests whose deadline
    /// passed; returns when the next retry or spaced commit is due.
    pub(crate) fn resend_due(
        &mut self,
        now: Instant,
        target: &mut impl CommitTarget,
    ) -> Option<Instant> {
        self.expire(now);
        if self.retries.iter().any(|r| r.due <= now) {
            let (due, waiting): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
                .into_iter()
                .partition(|r| r.due <= now);
            self.retries = waiting;
            // Queued together, so the retries due now go out as one commit.
            self.queued.extend(due.into_iter().map(|r| r.request));
        }
        let spaced = if self.sent.is_empty() && !self.queued.is_empty() {
            self.send_queued(now, target);
            self.spacing_due(now).filter(|_| !self.queued.is_empty())
        } else {
            None
        };
        self.retries.iter().map(|r| r.due).chain(spaced).min()
    }

    /// The broker answered a commit.
    pub(crate) fn answered(
        &mut self,
        result: rdkafka::error::KafkaResult<()>,
        partitions: Vec<CommittedPartition>,
        now: Instant,
        target: &mut impl CommitTarget,
    ) {
        // Answers come in request order; match on the partitions anyway.
        let index = self
            .sent
            .iter()
            .position(|s| {
                s.offsets.len() == partitions.len()
                    && s.offsets.iter().all(|(o, _)| {
                        partitions
                            .iter()
                            .any(|p| p.tp == o.tp && p.offset == Some(o.offset))
                    })
            })
            .unwrap_or(0);
        let Some(sent) = self.sent.remove(index) else {
            // A commit this driver did not request (auto commit on a plain source).
            tracing::debug!(ok = result.is_ok(), "offsets committed by librdkafka");
            return;
        };
        let failed = partitions
            .iter()
            .find_map(|p| p.error.clone().map(|e| (p, e)));
        let outcome = match (result, failed) {
            (Err(e), _) => Err(commit_error(&sent.offsets, e)),
            (Ok(()), Some((p, e))) => Err(Error::with_source(
                ErrorKind::Commit,
                "commit failed",
                e,
            )
            .at(&p.tp.topic, Some(p.tp.partition), p.offset)),
            (Ok(()), None) => Ok(()),
        };
        match outcome {
            Ok(()) => {
                let counters = self.counters();
                Counters::add(&counters.commits, 1);
                let health = &self.link.shared.health;
                health.mark(&health.committed);
                Counters::add(&counters.offsets_committed, sent.offsets.len() as u64);
                for (o, g) in &sent.offsets {
                    target.committed(&o.tp, *g, o.offset);
                }
                let elapsed = now.saturating_duration_since(sent.started);
                self.timings.commit(elapsed);
                tracing::debug!(offsets = ?sent.offsets, requests = sent.requests.len(), ?elapsed, "committed");
                // Counters first: whoever gets the answer may read them at once.
                self.update_in_flight();
                for request in sent.requests {
                    request.succeed(now);
                }
            }
            Err(err) => {
                sent.span.record("otel.status_code", "ERROR");
                sent.span
                    .record("error.type", tracing::field::debug(err.kind()));
                target.failed(&sent.offsets, &err, now);
                for request in sent.requests {
                    self.fail_or_retry(request, err.clone(), now);
                }
            }
        }
        self.send_queued(now, target);
    }

    /// Answers every request with `err` (the consumer is closing).
    pub(crate) fn fail_all(&mut self, err: &Error) {
        let sent = self.sent.drain(..).flat_map(|s| s.requests);
        let retries = self.retries.drain(..).map(|r| r.request);
        for request in sent.chain(self.queued.drain(..)).chain(retries) {
            request.answer(Err(err.clone()));
        }
        self.update_in_flight();
    }

    /// Requests not answered yet: sent, merged into the next commit, or
    /// waiting for a retry.
    fn update_in_flight(&self) {
        let sent: usize = self.sent.iter().map(|s| s.requests.len()).sum();
        let n = sent + self.queued.len() + self.retries.len();
        self.counters()
            .commits_in_flight
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Adds `offset` of `generation`, keeping the highest offset per partition and generation.
fn merge(offsets: &mut Offsets, offset: PartitionOffset, generation: u64) {
    match offsets
        .iter_mut()
        .find(|(o, g)| o.tp == offset.tp && *g == generation)
    {
        Some((o, _)) => o.offset = o.offset.max(offset.offset),
        None => offsets.push((offset, generation)),
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
        format!("commit of [{}] failed", list.join(", ")),
        e,
    );
    match offsets {
        [(one, _)] => err.at(&one.tp.topic, Some(one.tp.partition), Some(one.offset)),
        _ => err,
    }
}

#[cfg(test)]
mod tests;
