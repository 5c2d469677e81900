//! Commits, their answers, and draining: the engine's side of the offsets
//! users hand back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::{Engine, InflightCommit, Phase};
use crate::consumer::{CommitOutcome, DrainReport, PartitionOffset, Uncommitted};
use crate::driver::context::CommittedPartition;
use crate::driver::CommitRequest;
use crate::error::{Error, ErrorKind, Result};

impl Engine {
    pub(super) fn commit(
        &mut self,
        offsets: CommitRequest,
        reply: Option<oneshot::Sender<Result<CommitOutcome>>>,
    ) {
        if matches!(self.phase, Phase::Closing { .. }) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::closed(
                    "the consumer is closing; commit not sent",
                )));
            }
            return;
        }
        let mut committed: Vec<PartitionOffset> = Vec::with_capacity(offsets.len());
        let mut stale = Vec::new();
        for (handle, offset) in offsets {
            let current = handle.link.id == self.link.id
                && self
                    .partitions
                    .iter()
                    .any(|p| p.handle.tp == handle.tp && p.handle.generation == handle.generation);
            let entry = PartitionOffset {
                tp: handle.tp.clone(),
                offset,
            };
            if !current {
                stale.push(entry);
            } else if let Some(existing) = committed.iter_mut().find(|e| e.tp == entry.tp) {
                existing.offset = existing.offset.max(offset);
            } else {
                committed.push(entry);
            }
        }
        let counters = &self.link.shared.counters;
        counters
            .offsets_stale
            .fetch_add(stale.len() as u64, Ordering::Relaxed);
        if !stale.is_empty() {
            tracing::info!(stale = ?stale, "offsets of revoked partitions not committed");
        }
        if committed.is_empty() {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(CommitOutcome {
                    committed,
                    stale,
                    elapsed: Duration::ZERO,
                }));
            }
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(committed.len());
        for e in &committed {
            if let Err(err) =
                tpl.add_partition_offset(&e.tp.topic, e.tp.partition, Offset::Offset(e.offset))
            {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::with_source(
                        ErrorKind::Commit,
                        "invalid offset",
                        err,
                    )
                    .at(&e.tp.topic, Some(e.tp.partition), Some(e.offset))));
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
            Ok(()) => self.inflight.push_back(InflightCommit {
                reply,
                committed,
                stale,
                started: Instant::now(),
            }),
            Err(e) => {
                counters.commit_failures.fetch_add(1, Ordering::Relaxed);
                let err = commit_error(&committed, e);
                tracing::warn!(error = %err, "commit failed");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(err));
                }
            }
        }
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
            .position(|c| {
                c.committed.len() == partitions.len()
                    && c.committed.iter().all(|o| {
                        partitions
                            .iter()
                            .any(|p| p.tp == o.tp && p.offset == Some(o.offset))
                    })
            })
            .unwrap_or(0);
        let Some(commit) = self.inflight.remove(index) else {
            // A commit this engine did not request (auto commit on a plain source).
            tracing::debug!(ok = result.is_ok(), "offsets committed by librdkafka");
            return;
        };
        let counters = &self.link.shared.counters;
        let failed = partitions
            .iter()
            .find_map(|p| p.error.clone().map(|e| (p, e)));
        let outcome = match (result, failed) {
            (Err(e), _) => Err(commit_error(&commit.committed, e)),
            (Ok(()), Some((p, e))) => Err(Error::with_source(
                ErrorKind::Commit,
                format!("commit failed: {e}"),
                e,
            )
            .at(&p.tp.topic, Some(p.tp.partition), p.offset)),
            (Ok(()), None) => Ok(()),
        };
        let elapsed = commit.started.elapsed();
        match outcome {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .offsets_committed
                    .fetch_add(commit.committed.len() as u64, Ordering::Relaxed);
                for c in &commit.committed {
                    if let Some(p) = self.partitions.iter_mut().find(|p| p.handle.tp == c.tp) {
                        p.committed_next =
                            Some(p.committed_next.map_or(c.offset, |o| o.max(c.offset)));
                    }
                }
                tracing::debug!(offsets = ?commit.committed, ?elapsed, "committed");
                if let Some(reply) = commit.reply {
                    let _ = reply.send(Ok(CommitOutcome {
                        committed: commit.committed,
                        stale: commit.stale,
                        elapsed,
                    }));
                }
            }
            Err(err) => {
                counters.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, ?elapsed, "commit failed");
                if let Some(reply) = commit.reply {
                    let _ = reply.send(Err(err));
                }
            }
        }
    }

    pub(super) fn check_drain(&mut self) {
        let Some((deadline, _)) = &self.drain else {
            return;
        };
        let settled = !self.committable
            || (self.inflight.is_empty()
                && self
                    .partitions
                    .iter()
                    .all(|p| match (p.emitted_next, p.committed_next) {
                        (None, _) => true,
                        (Some(e), Some(c)) => c >= e,
                        (Some(_), None) => false,
                    }));
        if settled || Instant::now() >= *deadline {
            self.begin_close();
        }
    }

    pub(super) fn drain_report(&self) -> DrainReport {
        let mut committed = Vec::new();
        let mut uncommitted = Vec::new();
        for p in &self.partitions {
            if let Some(c) = p.committed_next {
                committed.push(PartitionOffset {
                    tp: p.handle.tp.clone(),
                    offset: c,
                });
            }
            if let Some(e) = p.emitted_next {
                if p.committed_next.is_none_or(|c| c < e) {
                    uncommitted.push(Uncommitted {
                        tp: p.handle.tp.clone(),
                        committed_next: p.committed_next,
                        emitted_next: e,
                    });
                }
            }
        }
        DrainReport {
            complete: uncommitted.is_empty(),
            committed,
            uncommitted,
        }
    }
}

fn commit_error(offsets: &[PartitionOffset], e: KafkaError) -> Error {
    let list: Vec<String> = offsets
        .iter()
        .map(|o| format!("{}@{}", o.tp, o.offset))
        .collect();
    let err = Error::with_source(
        ErrorKind::Commit,
        format!("commit of [{}] failed: {e}", list.join(", ")),
        e,
    );
    match offsets {
        [one] => err.at(&one.tp.topic, Some(one.tp.partition), Some(one.offset)),
        _ => err,
    }
}
