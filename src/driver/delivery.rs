//! Delivery: batches from a partition's queue to its source, while the
//! source has room. A partition whose stream is full keeps what it read in
//! its pending list and is skipped; librdkafka stops fetching it once its
//! prefetch limits are reached, so backpressure costs no pause and throws
//! nothing prefetched away.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;

use super::ffi::{PartitionQueue, ReadError};
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
    read: impl FnOnce(&Option<PartitionQueue>, &mut RecordBuilder) -> Option<ReadError>,
    errors: &mut Vec<ReadError>,
) -> Delivered {
    let Some(out) = p.out.as_ref().filter(|_| !p.revoking) else {
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
                if let Some(e) = read(&p.queue, builder) {
                    errors.push(e);
                }
                if builder.is_empty() {
                    return delivered;
                }
                Counters::add(&counters.bytes, builder.bytes() as u64);
                RecordBatch {
                    partition: Arc::new(PartitionHandle::clone(&p.handle)),
                    records: builder.finish(&p.handle.tp.topic, p.handle.tp.partition),
                }
            }
        };
        let len = batch.records.len() as u64;
        // Counted before the send: the stream may hand the records out (and
        // count them) before `try_send` returns, and what was handed out must
        // never exceed what was read.
        Counters::add(&counters.records, len);
        match out.try_send(batch) {
            Ok(()) => {
                delivered = Delivered::Some;
                Counters::add(&counters.batches, 1);
            }
            Err(TrySendError::Full(batch)) => {
                counters.records.fetch_sub(len, Ordering::Relaxed);
                p.pending.push_front(batch);
                return delivered;
            }
            Err(TrySendError::Closed(_)) => {
                counters.records.fetch_sub(len, Ordering::Relaxed);
                return Delivered::Closed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{test_handle, test_link};
    use super::super::DriverLink;
    use super::*;
    use crate::record::{Timestamp, TopicPartition};
    use rdkafka::error::KafkaError;
    use std::sync::atomic::Ordering;
    use tokio::sync::mpsc::Receiver;

    type Read = Box<dyn FnOnce(&Option<PartitionQueue>, &mut RecordBuilder) -> Option<ReadError>>;

    /// Reads records `from..from + n`.
    fn records(from: i64, n: i64) -> Read {
        Box::new(move |_, b| {
            for o in from..from + n {
                b.push(o, Timestamp::NotAvailable, None, Some(b"x"), Vec::new());
            }
            None
        })
    }

    fn unread() -> Read {
        Box::new(|_, _| panic!("not read"))
    }

    /// One partition whose stream holds `capacity` batches.
    struct Fixture {
        link: Arc<DriverLink>,
        p: Partition,
        builder: RecordBuilder,
        errors: Vec<ReadError>,
        rx: Receiver<RecordBatch>,
    }

    impl Fixture {
        fn new(capacity: usize) -> Self {
            let link = test_link(None);
            let (tx, rx) = tokio::sync::mpsc::channel(capacity);
            let handle = test_handle(&link, &TopicPartition::new("t", 0), 1);
            Fixture {
                p: Partition::new(handle, None, Some(tx)),
                link,
                builder: RecordBuilder::default(),
                errors: Vec::new(),
                rx,
            }
        }

        fn deliver(&mut self, read: Read) -> Delivered {
            let counters = &self.link.shared.counters;
            deliver_partition(
                &mut self.p,
                &mut self.builder,
                counters,
                read,
                &mut self.errors,
            )
        }

        fn next_offset(&mut self) -> i64 {
            self.rx.try_recv().unwrap().records[0].offset()
        }
    }

    #[test]
    fn a_full_stream_keeps_the_batch_pending_and_gets_it_first_later() {
        let mut f = Fixture::new(1);
        assert_eq!(f.deliver(records(0, 3)), Delivered::Some);
        // The stream is full: nothing is read.
        assert_eq!(f.deliver(unread()), Delivered::Nothing);
        assert_eq!(f.rx.try_recv().unwrap().records.len(), 3);
        assert_eq!(f.deliver(records(3, 2)), Delivered::Some);
        assert_eq!(f.next_offset(), 3);
        let counters = &f.link.shared.counters;
        assert_eq!(counters.records.load(Ordering::Relaxed), 5);
        assert_eq!(counters.batches.load(Ordering::Relaxed), 2);
        assert!(f.errors.is_empty());
    }

    #[test]
    fn pending_batches_go_before_new_ones_and_a_revoked_partition_gets_nothing() {
        let mut f = Fixture::new(4);
        records(0, 2)(&None, &mut f.builder);
        let first = RecordBatch {
            partition: f.p.handle.clone(),
            records: f.builder.finish("t", 0),
        };
        f.p.pending.push_back(first);
        f.deliver(records(2, 1));
        assert_eq!(f.next_offset(), 0);
        assert_eq!(f.next_offset(), 2);

        f.p.revoking = true;
        assert_eq!(f.deliver(unread()), Delivered::Nothing);
    }

    #[test]
    fn a_dropped_stream_is_reported_closed_and_read_errors_are_kept() {
        let mut f = Fixture::new(4);
        f.rx.close();
        let failing: Read = Box::new(|_, b| {
            b.push(0, Timestamp::NotAvailable, None, None, Vec::new());
            Some(ReadError {
                error: KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::NotImplemented,
                ),
                offset: Some(1),
                reason: "unsupported codec".to_owned(),
            })
        });
        assert_eq!(f.deliver(failing), Delivered::Closed);
        assert_eq!(f.errors.len(), 1);
    }
}
