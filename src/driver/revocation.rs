//! Revocations held until the records handed out of their partitions are
//! committed (rebalance-safe commits). Every rule about how long a
//! revocation may wait lives here:
//!
//! - not at all once no copy of a partition's handle is left outside the
//!   partition table: no record batch, offset, committer batch or commit in
//!   flight holds one, so no commit of it can come;
//! - at most the revoke timeout (from the settings: 30 s, or half of
//!   `max.poll.interval.ms` when lower), after which the partitions are
//!   released with records not committed, which their next owner reads again;
//! - once a commit of its partitions failed, at most
//!   [`HOLD_AFTER_FAILED_COMMIT`] longer (see [`RevocationHolds::commit_failed`]).

use std::time::{Duration, Instant};

use super::table::PartitionTable;
use crate::error::Error;
use crate::record::TopicPartition;

/// How much longer a held revocation waits once a commit of its partitions
/// failed. A broker may refuse commits for a moment around a rebalance
/// (Apache Kafka while the group completes a cooperative rebalance: the
/// retry goes through), or for as long as the group waits for this member to
/// give its partitions up (the embedded broker during a classic rebalance),
/// where holding on would only stall the group.
pub(crate) const HOLD_AFTER_FAILED_COMMIT: Duration = Duration::from_secs(2);

/// One revocation held back.
#[derive(Debug)]
struct Hold {
    partitions: Vec<TopicPartition>,
    started: Instant,
    deadline: Instant,
}

/// A revocation that may complete now.
#[derive(Debug)]
pub(crate) struct Settled {
    pub(crate) partitions: Vec<TopicPartition>,
    pub(crate) waited: Duration,
}

/// The revocations held now, oldest first.
#[derive(Debug)]
pub(crate) struct RevocationHolds {
    holds: Vec<Hold>,
    timeout: Duration,
}

impl RevocationHolds {
    pub(crate) fn new(timeout: Duration) -> Self {
        RevocationHolds {
            holds: Vec::new(),
            timeout,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Holds a revocation of `partitions` from `now`.
    pub(crate) fn hold(&mut self, partitions: Vec<TopicPartition>, now: Instant) {
        self.holds.push(Hold {
            partitions,
            started: now,
            deadline: now + self.timeout,
        });
    }

    /// A commit of some of `partitions` failed: their holds end within
    /// [`HOLD_AFTER_FAILED_COMMIT`] unless a retry succeeds first.
    pub(crate) fn commit_failed<'a>(
        &mut self,
        partitions: impl Iterator<Item = &'a TopicPartition> + Clone,
        err: &Error,
        now: Instant,
    ) {
        let limit = now + HOLD_AFTER_FAILED_COMMIT;
        for hold in &mut self.holds {
            if hold.deadline > limit && partitions.clone().any(|tp| hold.partitions.contains(tp)) {
                tracing::warn!(error = %crate::error::Report(err), partitions = ?hold.partitions, "a commit of revoked partitions failed: releasing them within {HOLD_AFTER_FAILED_COMMIT:?} unless a retry succeeds");
                hold.deadline = limit;
            }
        }
    }

    /// Takes every hold whose partitions have every record handed out
    /// committed, or whose deadline passed (every hold when `all`, as on
    /// close). The hand-over point of each settled partition is released, so
    /// no record of it reaches the user after this.
    pub(crate) fn settle(
        &mut self,
        table: &PartitionTable,
        now: Instant,
        all: bool,
    ) -> Vec<Settled> {
        let mut settled = Vec::new();
        let mut i = 0;
        while i < self.holds.len() {
            let hold = &self.holds[i];
            let expired = all || now >= hold.deadline;
            let mut done = true;
            for p in table
                .iter()
                .filter(|p| p.revoking && hold.partitions.contains(&p.handle.tp))
            {
                let h = &p.handle.handover;
                if h.is_released() {
                    continue;
                }
                let handed = h.handed_next();
                if p.committed_up_to(handed) && h.release_if(handed) {
                    continue;
                }
                if !p.handle.has_copies() && h.release_if(handed) {
                    tracing::info!(
                        partition = %p.handle.tp,
                        handed_next = ?handed,
                        committed_next = ?p.committed_next,
                        "partition released with records not committed: no offset of them is left to commit; the next owner reads them again"
                    );
                    continue;
                }
                if expired {
                    let handed = h.release();
                    tracing::warn!(
                        partition = %p.handle.tp,
                        handed_next = ?handed,
                        committed_next = ?p.committed_next,
                        "partition released with records not committed (revoke timeout or failed commit); the next owner reads them again"
                    );
                    continue;
                }
                done = false;
            }
            if done {
                let hold = self.holds.remove(i);
                settled.push(Settled {
                    partitions: hold.partitions,
                    waited: now.saturating_duration_since(hold.started),
                });
            } else {
                i += 1;
            }
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::test_table;
    use super::super::PartitionHandle;
    use super::*;
    use crate::ErrorKind;

    fn revoking_table(tps: &[TopicPartition]) -> PartitionTable {
        let mut table = test_table(tps);
        table.start_revoking(tps);
        table
    }

    #[test]
    fn a_hold_with_nothing_handed_out_settles_at_once() {
        let tp = TopicPartition::new("t", 0);
        let table = revoking_table(std::slice::from_ref(&tp));
        let mut holds = RevocationHolds::new(Duration::from_secs(10));
        let now = Instant::now();
        holds.hold(vec![tp.clone()], now);
        let settled = holds.settle(&table, now, false);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].partitions, vec![tp]);
        assert!(holds.is_empty());
        assert!(table.iter().next().unwrap().handle.handover.is_released());
    }

    #[test]
    fn a_hold_waits_for_commits_then_settles() {
        let tp = TopicPartition::new("t", 0);
        let mut table = revoking_table(std::slice::from_ref(&tp));
        let handle = table.iter().next().unwrap().handle.clone();
        let _offsets = PartitionHandle::clone(&handle); // a batch's offsets, held
        assert!(handle.handover.hand(41));
        let mut holds = RevocationHolds::new(Duration::from_secs(10));
        let now = Instant::now();
        holds.hold(vec![tp.clone()], now);
        assert!(holds.settle(&table, now, false).is_empty());
        table.record_committed(&tp, handle.generation, 41); // one short
        assert!(holds.settle(&table, now, false).is_empty());
        assert!(!handle.handover.is_released());
        table.record_committed(&tp, handle.generation, 42);
        assert_eq!(holds.settle(&table, now, false).len(), 1);
        assert!(handle.handover.is_released());
    }

    #[test]
    fn a_hold_settles_once_no_offset_is_left_to_commit() {
        let tp = TopicPartition::new("t", 0);
        let table = revoking_table(std::slice::from_ref(&tp));
        let handle = table.iter().next().unwrap().handle.clone();
        let batch = PartitionHandle::clone(&handle);
        let committer_batch = Arc::new(batch.clone());
        drop(batch);
        assert!(handle.handover.hand(7));
        let mut holds = RevocationHolds::new(Duration::from_secs(60));
        let now = Instant::now();
        holds.hold(vec![tp.clone()], now);
        // A committer still holds an offset: the commit may come.
        assert!(holds.settle(&table, now, false).is_empty());
        drop(committer_batch);
        let settled = holds.settle(&table, now, false);
        assert_eq!(settled.len(), 1);
        assert!(handle.handover.is_released());
    }

    #[test]
    fn the_revoke_timeout_releases_uncommitted_partitions() {
        let tp = TopicPartition::new("t", 0);
        let table = revoking_table(std::slice::from_ref(&tp));
        let handle = table.iter().next().unwrap().handle.clone();
        let _offsets = PartitionHandle::clone(&handle);
        assert!(handle.handover.hand(0));
        let mut holds = RevocationHolds::new(Duration::from_secs(10));
        let now = Instant::now();
        holds.hold(vec![tp], now);
        assert!(holds
            .settle(&table, now + Duration::from_millis(9_999), false)
            .is_empty());
        let settled = holds.settle(&table, now + Duration::from_secs(10), false);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].waited, Duration::from_secs(10));
        assert!(handle.handover.is_released());
    }

    #[test]
    fn a_failed_commit_shortens_only_the_holds_of_its_partitions() {
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let table = revoking_table(&[a.clone(), b.clone()]);
        let mut _offsets = Vec::new();
        for p in table.iter() {
            _offsets.push(PartitionHandle::clone(&p.handle));
            assert!(p.handle.handover.hand(0));
        }
        let mut holds = RevocationHolds::new(Duration::from_secs(60));
        let now = Instant::now();
        holds.hold(vec![a.clone()], now);
        holds.hold(vec![b.clone()], now);
        let err = Error::new(ErrorKind::Commit, "refused");
        holds.commit_failed([a.clone()].iter(), &err, now);
        let settled = holds.settle(&table, now + HOLD_AFTER_FAILED_COMMIT, false);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].partitions, vec![a]);
        // The other still waits for its own deadline.
        assert!(holds
            .settle(&table, now + Duration::from_secs(59), false)
            .is_empty());
        assert_eq!(holds.settle(&table, now, true).len(), 1);
    }
}
