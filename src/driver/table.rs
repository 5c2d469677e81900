//! The partitions a driver has assigned now: for each, its handle (with the
//! assignment generation and hand-over point), where its batches go, what
//! waits for room there, and what the broker acknowledged as committed.

use std::collections::VecDeque;

use tokio::sync::mpsc::Sender;

use super::{PartitionHandle, RecordBatch};
use crate::counted::Counted;
use crate::outcome::{DrainReport, PartitionOffset, Uncommitted};
use crate::record::TopicPartition;

/// One assigned partition.
pub(crate) struct Partition {
    pub(crate) handle: Counted<PartitionHandle>,
    /// Where this partition's batches go; `None` once its stream is gone.
    pub(crate) out: Option<Sender<RecordBatch>>,
    /// Batches read but not yet accepted by `out`.
    pub(crate) pending: VecDeque<RecordBatch>,
    /// Paused in librdkafka because `pending` filled up while its stream
    /// was full (partitioned sources), or because nobody takes its records.
    pub(crate) paused: bool,
    /// Revoked, waiting for its handed-out records to be committed.
    pub(crate) revoking: bool,
    /// Next offset after the last committed record (as acknowledged).
    pub(crate) committed_next: Option<i64>,
}

impl Partition {
    pub(crate) fn new(handle: Counted<PartitionHandle>, out: Option<Sender<RecordBatch>>) -> Self {
        Partition {
            handle,
            out,
            pending: VecDeque::new(),
            paused: false,
            revoking: false,
            committed_next: None,
        }
    }

    /// True when every record up to `handed_next` is committed.
    pub(crate) fn committed_up_to(&self, handed_next: Option<i64>) -> bool {
        handed_next.is_none_or(|h| self.committed_next.is_some_and(|c| c >= h))
    }

    /// True when delivery to this partition's stream goes on.
    pub(crate) fn is_delivering(&self) -> bool {
        self.out.is_some() && !self.revoking
    }

    /// Stops delivering: its stream ends once what it already received is pulled.
    pub(crate) fn disconnect(&mut self) {
        self.out = None;
        self.pending.clear();
    }

    /// Records handed out of this assignment and not yet committed.
    fn uncommitted(&self) -> Option<Uncommitted> {
        let handed = self.handle.handover.handed_next();
        match handed {
            Some(h) if !self.committed_up_to(handed) => Some(Uncommitted {
                tp: self.handle.tp.clone(),
                committed_next: self.committed_next,
                emitted_next: h,
            }),
            _ => None,
        }
    }
}

/// The partitions assigned now, in assignment order.
#[derive(Default)]
pub(crate) struct PartitionTable {
    partitions: Vec<Partition>,
    generation: u64,
    /// Partitions lost with records handed out and not committed.
    lost: Vec<Uncommitted>,
}

impl PartitionTable {
    /// Starts a new assignment generation and returns it.
    pub(crate) fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Adds a partition, replacing an earlier assignment of it.
    pub(crate) fn insert(&mut self, partition: Partition) {
        let tp = partition.handle.tp.clone();
        self.forget(|t| *t == tp);
        self.partitions.push(partition);
    }

    pub(crate) fn len(&self) -> usize {
        self.partitions.len()
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> &mut Partition {
        &mut self.partitions[i]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.iter()
    }

    #[cfg(test)]
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Partition> {
        self.partitions.iter_mut()
    }

    /// The partition of `topic`/`partition`, whatever its generation.
    pub(crate) fn find_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.partitions
            .iter_mut()
            .find(|p| &*p.handle.tp.topic == topic && p.handle.tp.partition == partition)
    }

    /// The partition of `tp` if its assignment is still `generation`.
    fn current(&self, tp: &TopicPartition, generation: u64) -> Option<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.handle.tp == *tp && p.handle.generation == generation)
    }

    /// True while `tp` is assigned in `generation`.
    pub(crate) fn is_current(&self, tp: &TopicPartition, generation: u64) -> bool {
        self.current(tp, generation).is_some()
    }

    /// The acknowledged committed offset of `tp` in `generation`.
    pub(crate) fn committed_next(&self, tp: &TopicPartition, generation: u64) -> Option<i64> {
        self.current(tp, generation).and_then(|p| p.committed_next)
    }

    /// Records an acknowledged commit; never moves the offset back.
    pub(crate) fn record_committed(&mut self, tp: &TopicPartition, generation: u64, next: i64) {
        if let Some(p) = self
            .partitions
            .iter_mut()
            .find(|p| p.handle.tp == *tp && p.handle.generation == generation)
        {
            p.committed_next = Some(p.committed_next.map_or(next, |o| o.max(next)));
        }
        // Records lost earlier and committed since (read again): no longer lost.
        self.lost
            .retain(|l| !(l.tp == *tp && next >= l.emitted_next));
    }

    /// Drops the partitions that match: no record of them is handed out any
    /// more, and what their acknowledgement trackers held is released so the
    /// source is not kept waiting for them.
    pub(crate) fn forget(&mut self, matches: impl Fn(&TopicPartition) -> bool) {
        self.partitions.retain(|p| {
            if !matches(&p.handle.tp) {
                return true;
            }
            p.handle.handover.release();
            let h = &p.handle;
            if let (Some(acks), Some(o)) = (&h.acks, &h.link.shared.outstanding) {
                acks.close(o);
            }
            false
        });
    }

    /// Forgets partitions that were lost, keeping what they had handed out
    /// and not committed for the drain report.
    pub(crate) fn forget_lost(&mut self, lost: &[TopicPartition]) {
        let uncommitted = self
            .partitions
            .iter()
            .filter(|p| lost.contains(&p.handle.tp))
            .filter_map(Partition::uncommitted);
        self.lost.extend(uncommitted);
        self.forget(|tp| lost.contains(tp));
    }

    /// Stops delivering to the partitions that match.
    pub(crate) fn disconnect(&mut self, matches: impl Fn(&Partition) -> bool) {
        for p in self.partitions.iter_mut().filter(|p| matches(p)) {
            p.disconnect();
        }
    }

    /// Marks these partitions revoked: nothing more of them is delivered.
    pub(crate) fn start_revoking(&mut self, revoked: &[TopicPartition]) {
        for p in self
            .partitions
            .iter_mut()
            .filter(|p| revoked.contains(&p.handle.tp))
        {
            p.revoking = true;
            p.handle.handover.start_revoking();
            p.disconnect();
        }
    }

    /// Partitions assigned and not being revoked.
    pub(crate) fn live(&self) -> usize {
        self.partitions.iter().filter(|p| !p.revoking).count()
    }

    /// Every partition.
    pub(crate) fn all(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .map(|p| p.handle.tp.clone())
            .collect()
    }

    /// True when every record handed out has been committed.
    pub(crate) fn all_committed(&self) -> bool {
        self.partitions
            .iter()
            .all(|p| p.committed_up_to(p.handle.handover.handed_next()))
    }

    /// What a drain achieved so far.
    pub(crate) fn drain_report(&self) -> DrainReport {
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
            .filter_map(Partition::uncommitted)
            .collect();
        DrainReport {
            complete: uncommitted.is_empty() && self.lost.is_empty(),
            committed,
            uncommitted,
            lost: self.lost.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{test_handle, test_link, test_table as table_with};
    use super::*;

    #[test]
    fn a_new_assignment_replaces_the_old_one_and_releases_it() {
        let tp = TopicPartition::new("t", 0);
        let mut table = table_with(std::slice::from_ref(&tp));
        let old = table.iter().next().unwrap().handle.clone();
        let link = test_link(None);
        let g = table.next_generation();
        table.insert(Partition::new(test_handle(&link, &tp, g), None));
        assert_eq!(table.len(), 1);
        assert!(old.handover.is_released());
        assert!(!table.is_current(&tp, old.generation));
        assert!(table.is_current(&tp, g));
    }

    #[test]
    fn committed_offsets_never_move_back_and_drive_the_drain_report() {
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let mut table = table_with(&[a.clone(), b.clone()]);
        let g = 1;
        for p in table.iter() {
            assert!(p.handle.handover.hand(9)); // records up to 9 handed out
        }
        table.record_committed(&a, g, 10);
        table.record_committed(&a, g, 4);
        table.record_committed(&b, g + 1, 10); // another generation: ignored
        assert_eq!(table.committed_next(&a, g), Some(10));
        assert_eq!(table.committed_next(&b, g), None);
        assert!(!table.all_committed());
        let report = table.drain_report();
        assert!(!report.complete);
        assert_eq!(report.committed.len(), 1);
        assert_eq!(report.uncommitted.len(), 1);
        assert_eq!(report.uncommitted[0].tp, b);
        assert_eq!(report.uncommitted[0].emitted_next, 10);
        table.record_committed(&b, g, 10);
        assert!(table.all_committed());
        assert!(table.drain_report().complete);
    }

    #[test]
    fn revoking_partitions_leave_the_live_count_and_stop_delivery() {
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let mut table = table_with(&[a.clone(), b.clone()]);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        for p in table.iter_mut() {
            p.out = Some(tx.clone());
        }
        table.start_revoking(std::slice::from_ref(&a));
        assert_eq!(table.live(), 1);
        let delivering: Vec<_> = table
            .iter()
            .filter(|p| p.is_delivering())
            .map(|p| p.handle.tp.clone())
            .collect();
        assert_eq!(delivering, vec![b]);
        table.forget(|tp| *tp == a);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn lost_partitions_with_uncommitted_records_make_a_drain_incomplete() {
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let mut table = table_with(&[a.clone(), b.clone()]);
        for p in table.iter() {
            assert!(p.handle.handover.hand(4));
        }
        table.record_committed(&b, 1, 5);
        table.forget_lost(&[a.clone(), b.clone()]);
        assert_eq!(table.len(), 0);
        let report = table.drain_report();
        assert!(!report.complete);
        assert_eq!(report.lost.len(), 1, "b had every record committed");
        assert_eq!(report.lost[0].tp, a);
        assert_eq!(report.lost[0].emitted_next, 5);
        // Assigned again, read again and committed: no longer lost.
        let link = test_link(None);
        let g = table.next_generation();
        table.insert(Partition::new(test_handle(&link, &a, g), None));
        table.record_committed(&a, g, 5);
        assert!(table.drain_report().complete);
    }
}
