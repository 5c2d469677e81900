//! Delivery: batches of one partition to its stream, while the stream has
//! room. What its full stream does not take waits in the partition's
//! pending list and goes first next time, so a partition's records reach
//! its stream in order.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc::error::TrySendError;

use super::table::Partition;
use super::{Counters, RecordBatch};

/// What one partition's delivery did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    Nothing,
    Some,
    /// Its stream was dropped.
    Closed,
}

/// Moves what waits in `p`'s pending list to its stream while it has room.
pub(crate) fn flush_pending(p: &mut Partition, counters: &Counters) -> Delivered {
    let mut delivered = Delivered::Nothing;
    while let Some(batch) = p.pending.pop_front() {
        match send(p, batch, counters) {
            Delivered::Some => delivered = Delivered::Some,
            Delivered::Nothing => return delivered,
            Delivered::Closed => return Delivered::Closed,
        }
    }
    delivered
}

/// Hands a batch just read to `p`'s stream, or to its pending list when
/// the stream is full or older batches wait there.
pub(crate) fn deliver_batch(
    p: &mut Partition,
    batch: RecordBatch,
    counters: &Counters,
) -> Delivered {
    if !p.pending.is_empty() {
        p.pending.push_back(batch);
        return Delivered::Nothing;
    }
    send(p, batch, counters)
}

/// Records waiting in `p`'s pending list.
pub(crate) fn pending_records(p: &Partition) -> usize {
    p.pending.iter().map(|b| b.records.len()).sum()
}

/// Sends `batch`, putting it back at the head of the pending list when the
/// stream is full.
fn send(p: &mut Partition, batch: RecordBatch, counters: &Counters) -> Delivered {
    let Some(out) = p.out.as_ref().filter(|_| !p.revoking) else {
        return Delivered::Nothing;
    };
    let len = batch.records.len() as u64;
    // Counted before the send: the stream may hand the records out (and
    // count them) before `try_send` returns, and what was handed out must
    // never exceed what was read.
    Counters::add(&counters.records, len);
    match out.try_send(batch) {
        Ok(()) => {
            Counters::add(&counters.batches, 1);
            Delivered::Some
        }
        Err(TrySendError::Full(batch)) => {
            counters.records.fetch_sub(len, Ordering::Relaxed);
            p.pending.push_front(batch);
            Delivered::Nothing
        }
        Err(TrySendError::Closed(_)) => {
            counters.records.fetch_sub(len, Ordering::Relaxed);
            Delivered::Closed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::RecordBuilder;
    use super::super::tests::{test_handle, test_link};
    use super::super::{DriverLink, PartitionHandle};
    use super::*;
    use crate::counted::Counted;
    use crate::record::{Timestamp, TopicPartition};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tokio::sync::mpsc::Receiver;

    /// One partition whose stream holds `capacity` batches.
    struct Fixture {
        link: Arc<DriverLink>,
        p: Partition,
        rx: Receiver<RecordBatch>,
    }

    impl Fixture {
        fn new(capacity: usize) -> Self {
            let link = test_link(None);
            let (tx, rx) = tokio::sync::mpsc::channel(capacity);
            let handle = test_handle(&link, &TopicPartition::new("t", 0), 1);
            Fixture {
                p: Partition::new(handle, Some(tx)),
                link,
                rx,
            }
        }

        /// Records `from..from + n` of the partition.
        fn batch(&self, from: i64, n: i64) -> RecordBatch {
            let mut b = RecordBuilder::default();
            for o in from..from + n {
                b.push(o, Timestamp::NotAvailable, None, Some(b"x"), Vec::new());
            }
            RecordBatch {
                partition: Counted::new(PartitionHandle::clone(&self.p.handle)),
                records: b.finish("t", 0),
            }
        }

        fn deliver(&mut self, from: i64, n: i64) -> Delivered {
            let batch = self.batch(from, n);
            deliver_batch(&mut self.p, batch, &self.link.shared.counters)
        }

        fn flush(&mut self) -> Delivered {
            flush_pending(&mut self.p, &self.link.shared.counters)
        }

        fn next_offset(&mut self) -> i64 {
            self.rx.try_recv().unwrap().records[0].offset()
        }
    }

    #[test]
    fn a_full_stream_keeps_batches_pending_in_order_and_gets_them_first() {
        let mut f = Fixture::new(1);
        assert_eq!(f.deliver(0, 3), Delivered::Some);
        // The stream is full: the next batches wait, in order.
        assert_eq!(f.deliver(3, 2), Delivered::Nothing);
        assert_eq!(f.deliver(5, 4), Delivered::Nothing);
        assert_eq!(pending_records(&f.p), 6);
        assert_eq!(f.next_offset(), 0);
        // Room for one: a new batch queues behind the pending ones.
        assert_eq!(f.deliver(9, 1), Delivered::Nothing);
        assert_eq!(f.flush(), Delivered::Some);
        assert_eq!(f.next_offset(), 3);
        assert_eq!(f.flush(), Delivered::Some);
        assert_eq!(f.next_offset(), 5);
        assert_eq!(f.flush(), Delivered::Some);
        assert_eq!(f.next_offset(), 9);
        assert_eq!(f.flush(), Delivered::Nothing);
        let counters = &f.link.shared.counters;
        assert_eq!(counters.records.load(Ordering::Relaxed), 10);
        assert_eq!(counters.batches.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_revoked_partition_gets_nothing() {
        let mut f = Fixture::new(4);
        f.p.revoking = true;
        assert_eq!(f.deliver(0, 2), Delivered::Nothing);
        assert!(f.rx.try_recv().is_err());
        assert_eq!(f.link.shared.counters.records.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_dropped_stream_is_reported_closed_and_nothing_counted() {
        let mut f = Fixture::new(4);
        f.rx.close();
        assert_eq!(f.deliver(0, 2), Delivered::Closed);
        assert_eq!(f.link.shared.counters.records.load(Ordering::Relaxed), 0);
    }
}
