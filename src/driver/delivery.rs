//! Delivery: batches from a partition's queue to its source, while the
//! source has room. A partition whose stream is full keeps what it read in
//! its pending list and is skipped; librdkafka stops fetching it once its
//! prefetch limits are reached, so backpressure costs no pause and throws
//! nothing prefetched away.

use std::sync::Arc;

use rdkafka::error::KafkaError;
use tokio::sync::mpsc::error::TrySendError;

use super::records::RecordBuilder;
use super::table::Partition;
use super::{Counters, PartitionHandle, RecordBatch};

/// What one partition's delivery did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    Nothing,
    Some,
    /// Its stream was dropped.
    Closed,
}

/// Moves what waits in `p`'s pending list to its stream, then at most one
/// new batch, read by `read` into `builder`. An error `read` returns is
/// pushed to `errors`; the records read with it are delivered.
pub(crate) fn deliver_partition(
    p: &mut Partition,
    builder: &mut RecordBuilder,
    counters: &Counters,
    read: impl FnOnce(&Partition, &mut RecordBuilder) -> Option<KafkaError>,
    errors: &mut Vec<KafkaError>,
) -> Delivered {
    let Some(out) = p.out.clone().filter(|_| !p.revoking) else {
        return Delivered::Nothing;
    };
    let mut delivered = Delivered::Nothing;
    let mut read = Some(read);
    loop {
        let batch = match p.pending.pop_front() {
            Some(batch) => batch,
            None => {
                if out.capacity() == 0 {
                    return delivered;
                }
                let Some(read) = read.take() else {
                    return delivered;
                };
                if let Some(e) = read(p, builder) {
                    errors.push(e);
                }
                if builder.is_empty() {
                    return delivered;
                }
                RecordBatch {
                    partition: Arc::new(PartitionHandle::clone(&p.handle)),
                    records: builder.finish(&p.handle.tp.topic, p.handle.tp.partition),
                }
            }
        };
        let len = batch.records.len() as u64;
        match out.try_send(batch) {
            Ok(()) => {
                delivered = Delivered::Some;
                Counters::add(&counters.records, len);
                Counters::add(&counters.batches, 1);
            }
            Err(TrySendError::Full(batch)) => {
                p.pending.push_front(batch);
                return delivered;
            }
            Err(TrySendError::Closed(_)) => return Delivered::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{test_handle, test_link};
    use super::*;
    use crate::record::{Timestamp, TopicPartition};
    use std::sync::atomic::Ordering;

    fn records(
        from: i64,
        n: i64,
    ) -> impl FnOnce(&Partition, &mut RecordBuilder) -> Option<KafkaError> {
        move |_, b| {
            for o in from..from + n {
                b.push(o, Timestamp::NotAvailable, None, Some(b"x"), Vec::new());
            }
            None
        }
    }

    #[test]
    fn a_full_stream_keeps_the_batch_pending_and_gets_it_first_later() {
        let link = test_link(None);
        let tp = TopicPartition::new("t", 0);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let mut p = Partition::new(test_handle(&link, &tp, 1), None, Some(tx));
        let mut b = RecordBuilder::default();
        let counters = &link.shared.counters;
        let mut errors = Vec::new();

        let d = deliver_partition(&mut p, &mut b, counters, records(0, 3), &mut errors);
        assert_eq!(d, Delivered::Some);
        // The stream is full: nothing is read.
        let d = deliver_partition(
            &mut p,
            &mut b,
            counters,
            |_, _| panic!("not read"),
            &mut errors,
        );
        assert_eq!(d, Delivered::Nothing);
        assert_eq!(rx.try_recv().unwrap().records.len(), 3);
        let d = deliver_partition(&mut p, &mut b, counters, records(3, 2), &mut errors);
        assert_eq!(d, Delivered::Some);
        assert_eq!(rx.try_recv().unwrap().records[0].offset(), 3);
        assert_eq!(counters.records.load(Ordering::Relaxed), 5);
        assert_eq!(counters.batches.load(Ordering::Relaxed), 2);
        assert!(errors.is_empty());
    }

    #[test]
    fn pending_batches_go_before_new_ones_and_a_revoked_partition_gets_nothing() {
        let link = test_link(None);
        let tp = TopicPartition::new("t", 0);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut p = Partition::new(test_handle(&link, &tp, 1), None, Some(tx));
        let mut b = RecordBuilder::default();
        records(0, 2)(&p, &mut b);
        let first = RecordBatch {
            partition: p.handle.clone(),
            records: b.finish("t", 0),
        };
        p.pending.push_back(first);
        let mut errors = Vec::new();
        let counters = &link.shared.counters;
        deliver_partition(&mut p, &mut b, counters, records(2, 1), &mut errors);
        assert_eq!(rx.try_recv().unwrap().records[0].offset(), 0);
        assert_eq!(rx.try_recv().unwrap().records[0].offset(), 2);

        p.revoking = true;
        let d = deliver_partition(
            &mut p,
            &mut b,
            counters,
            |_, _| panic!("not read"),
            &mut errors,
        );
        assert_eq!(d, Delivered::Nothing);
    }

    #[test]
    fn a_dropped_stream_is_reported_closed_and_read_errors_are_kept() {
        let link = test_link(None);
        let tp = TopicPartition::new("t", 0);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        drop(rx);
        let mut p = Partition::new(test_handle(&link, &tp, 1), None, Some(tx));
        let mut b = RecordBuilder::default();
        let mut errors = Vec::new();
        let d = deliver_partition(
            &mut p,
            &mut b,
            &link.shared.counters,
            |_, b| {
                b.push(0, Timestamp::NotAvailable, None, None, Vec::new());
                Some(KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::NotImplemented,
                ))
            },
            &mut errors,
        );
        assert_eq!(d, Delivered::Closed);
        assert_eq!(errors.len(), 1);
    }
}
