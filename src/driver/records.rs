//! Builds owned records from messages read off librdkafka. The keys and
//! payloads of a batch are copied into one buffer, a slice of a larger
//! chunk; each record holds a shared slice of it. A chunk whose batches have
//! all been dropped is used again as it is, so a consumer that keeps up
//! copies into memory that is already mapped and warm instead of asking the
//! allocator (and the kernel, for large batches) for fresh pages every batch.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::record::{ConsumerRecord, Header, KeyAndPayload, Timestamp};

#[derive(Debug)]
struct Pending {
    offset: i64,
    timestamp: Timestamp,
    /// The key's bytes then the payload's, back to back in the arena.
    data: Range<usize>,
    parts: KeyAndPayload,
    headers: Vec<Header>,
}

/// The smallest chunk batches are copied into, whatever `max_batch_bytes`.
const MIN_CHUNK: usize = 16 << 10;

/// How many records a read of the records queue asks for:
/// `max_records`, or fewer when the records read so far are large, so that
/// a batch's keys and payloads come to about `max_bytes` (at least one
/// record). The size per record is a moving average over the reads, so a
/// topic whose record sizes change is followed within a few reads.
#[derive(Debug)]
pub(crate) struct BatchSize {
    max_records: usize,
    max_bytes: usize,
    /// Key and payload bytes per record, averaged; 0 before the first read.
    per_record: usize,
}

impl BatchSize {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        BatchSize {
            max_records,
            max_bytes,
            per_record: 0,
        }
    }

    /// The number of records to ask for next.
    pub(crate) fn next(&self) -> usize {
        if self.per_record == 0 {
            return self.max_records;
        }
        (self.max_bytes / self.per_record).clamp(1, self.max_records)
    }

    /// A read copied `records` records with `bytes` key and payload bytes
    /// (records it skipped, of partitions not delivering, do not count).
    pub(crate) fn observe(&mut self, records: usize, bytes: usize) {
        if records == 0 {
            return;
        }
        let now = (bytes / records).max(1);
        self.per_record = if self.per_record == 0 {
            now
        } else {
            (self.per_record * 3 + now) / 4
        };
    }
}

/// The records of one batch being read.
#[derive(Debug)]
pub(crate) struct RecordBuilder {
    arena: BytesMut,
    /// Full chunks, kept to be used again once their batches are dropped.
    spare: Vec<BytesMut>,
    /// How many spare chunks are kept: about the batches that can be alive
    /// at once (the source's buffer, the batch being handed out, one pending).
    max_spare: usize,
    /// The size of a new chunk: a batch's bytes (`max_batch_bytes`), so that
    /// a batch fills about one chunk and the memory kept follows the setting.
    chunk: usize,
    pending: Vec<Pending>,
}

impl Default for RecordBuilder {
    fn default() -> Self {
        RecordBuilder::new(8, 256 << 10)
    }
}

impl RecordBuilder {
    /// A builder that keeps up to `buffer_batches + 2` spare chunks of about
    /// `max_batch_bytes` each.
    pub(crate) fn new(buffer_batches: usize, max_batch_bytes: usize) -> Self {
        RecordBuilder {
            arena: BytesMut::new(),
            spare: Vec::new(),
            max_spare: buffer_batches + 2,
            chunk: max_batch_bytes.max(MIN_CHUNK),
            pending: Vec::new(),
        }
    }

    /// Makes room for `bytes` more key and payload bytes in the current
    /// batch without moving what it holds: the current chunk if it has the
    /// room, else a spare chunk no batch uses any more, else a new chunk.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        if self.arena.capacity() - self.arena.len() >= bytes {
            return;
        }
        let needed = self.arena.len() + bytes;
        if !self.arena.is_empty() {
            // Rare: a batch grew beyond its first estimate. Keep its bytes.
            self.arena.reserve(bytes);
            return;
        }
        let full = std::mem::take(&mut self.arena);
        if full.capacity() > 0 && self.spare.len() < self.max_spare {
            self.spare.push(full);
        }
        if let Some(i) = self.spare.iter_mut().position(|c| c.try_reclaim(needed)) {
            self.arena = self.spare.swap_remove(i);
        } else {
            self.arena = BytesMut::with_capacity(needed.max(self.chunk));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records copied in since the last `finish`.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Drops what was copied in since the last `finish`.
    pub(crate) fn clear(&mut self) {
        self.arena.clear();
        self.pending.clear();
    }

    /// Key and payload bytes copied in since the last `finish`.
    pub(crate) fn bytes(&self) -> usize {
        self.arena.len()
    }

    /// Copies one message into the batch.
    pub(crate) fn push(
        &mut self,
        offset: i64,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Vec<Header>,
    ) {
        let start = self.arena.len();
        if let Some(key) = key {
            self.arena.extend_from_slice(key);
        }
        if let Some(payload) = payload {
            self.arena.extend_from_slice(payload);
        }
        self.pending.push(Pending {
            offset,
            timestamp,
            data: start..self.arena.len(),
            parts: KeyAndPayload::of(key, payload),
            headers,
        });
    }

    /// Copies a message that rdkafka read off the consumer queue.
    pub(crate) fn push_message(&mut self, msg: &BorrowedMessage<'_>) {
        let timestamp = match msg.timestamp() {
            rdkafka::Timestamp::CreateTime(t) => Timestamp::CreateTime(t),
            rdkafka::Timestamp::LogAppendTime(t) => Timestamp::LogAppendTime(t),
            rdkafka::Timestamp::NotAvailable => Timestamp::NotAvailable,
        };
        let headers = msg.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect()
        });
        self.push(msg.offset(), timestamp, msg.key(), msg.payload(), headers);
    }

    /// Builds the records and leaves the builder empty for the next batch.
    ///
    /// Each batch gets its own copy of the topic name: records are dropped on
    /// another thread while this one builds the next batch, and one `Arc`
    /// shared by every batch would make both threads fight over its counter.
    pub(crate) fn finish(&mut self, topic: &str, partition: i32) -> Vec<ConsumerRecord> {
        let topic: Arc<str> = Arc::from(topic);
        let buf = self.arena.split().freeze();
        // Read in place: draining moved each `Pending` whole through the
        // stack first.
        let records = self
            .pending
            .iter_mut()
            .map(|p| {
                ConsumerRecord::from_parts(
                    topic.clone(),
                    partition,
                    p.offset,
                    p.timestamp,
                    buf.slice(p.data.clone()),
                    p.parts,
                    std::mem::take(&mut p.headers),
                )
            })
            .collect();
        self.pending.clear();
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_bytes_and_the_builder_starts_empty_again() {
        let mut b = RecordBuilder::default();
        b.push(
            7,
            Timestamp::CreateTime(1),
            Some(b"k"),
            Some(b"value"),
            vec![],
        );
        b.push(8, Timestamp::NotAvailable, None, Some(b""), vec![]);
        let records = b.finish("t", 2);
        assert!(b.is_empty());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key(), Some(&b"k"[..]));
        assert_eq!(records[0].payload(), Some(&b"value"[..]));
        assert_eq!((records[1].offset(), records[1].partition()), (8, 2));
        assert_eq!(records[1].key(), None);
        assert_eq!(records[1].payload(), Some(&b""[..]));
    }

    #[test]
    fn records_keep_their_headers_and_the_next_batch_starts_without_them() {
        let mut b = RecordBuilder::default();
        let header = |k: &str, v: &'static [u8]| Header {
            key: k.to_owned(),
            value: Some(Bytes::from_static(v)),
        };
        b.push(
            1,
            Timestamp::NotAvailable,
            None,
            Some(b"a"),
            vec![header("h1", b"v1"), header("h2", b"v2")],
        );
        b.push(2, Timestamp::NotAvailable, None, Some(b"b"), vec![]);
        let records = b.finish("t", 0);
        assert_eq!(records[0].headers().len(), 2);
        assert_eq!(records[0].headers()[1].key, "h2");
        assert_eq!(records[0].headers()[1].value.as_deref(), Some(&b"v2"[..]));
        assert!(records[1].headers().is_empty());
        b.push(3, Timestamp::NotAvailable, None, Some(b"c"), vec![]);
        let next = b.finish("t", 0);
        assert_eq!(next.len(), 1);
        assert!(next[0].headers().is_empty());
    }

    fn batch(b: &mut RecordBuilder, bytes: usize) -> Vec<ConsumerRecord> {
        b.reserve(bytes);
        b.push(
            0,
            Timestamp::NotAvailable,
            None,
            Some(&vec![7; bytes]),
            vec![],
        );
        b.finish("t", 0)
    }

    #[test]
    fn a_chunk_is_used_again_once_its_batches_are_dropped_and_not_before() {
        let mut b = RecordBuilder::new(2, 256 << 10);
        let first = batch(&mut b, 200 << 10);
        let chunk = first[0].payload().unwrap().as_ptr();
        // The chunk's rest is too small: a second chunk, while the first batch lives.
        let second = batch(&mut b, 200 << 10);
        assert_ne!(second[0].payload().unwrap().as_ptr(), chunk);
        drop(first);
        // The first chunk's batch is gone: its memory takes the next batch.
        let third = batch(&mut b, 200 << 10);
        assert_eq!(third[0].payload().unwrap().as_ptr(), chunk);
        assert_eq!(third[0].payload().unwrap(), &vec![7u8; 200 << 10][..]);
        // Batches that still live are never written over.
        assert_eq!(second[0].payload().unwrap(), &vec![7u8; 200 << 10][..]);
    }

    #[test]
    fn a_chunk_is_about_max_batch_bytes() {
        let mut b = RecordBuilder::new(8, 32 << 10);
        let records = batch(&mut b, 1 << 10);
        // The chunk's rest: 31 KiB, where a fixed chunk size would keep
        // more than the setting asks for.
        assert_eq!(b.arena.capacity(), 31 << 10);
        drop(records);
        // A batch larger than the setting still fits, in a chunk its size.
        let records = batch(&mut b, 40 << 10);
        assert_eq!(records[0].payload().unwrap().len(), 40 << 10);
        assert_eq!(b.arena.capacity(), 0);
        // The smallest chunk, however small the setting.
        let mut b = RecordBuilder::new(8, 100);
        let _records = batch(&mut b, 100);
        assert_eq!(b.arena.capacity(), MIN_CHUNK - 100);
    }

    #[test]
    fn batches_of_large_records_are_cut_by_bytes() {
        let mut size = BatchSize::new(1000, 256 << 10);
        assert_eq!(size.next(), 1000, "nothing read yet");
        size.observe(1000, 100 * 1000);
        assert_eq!(size.next(), 1000, "100 B records: the record limit");
        let mut size = BatchSize::new(1000, 256 << 10);
        size.observe(1000, 1024 * 1000);
        assert_eq!(size.next(), 256, "1 KiB records: 256 KiB a batch");
        size.observe(0, 0);
        assert_eq!(size.next(), 256, "an empty read changes nothing");
        size.observe(1, 4 << 20);
        assert_eq!(
            size.next(),
            1,
            "a record larger than the budget: one at a time"
        );
    }

    #[test]
    fn the_batch_size_follows_a_change_of_record_size() {
        let mut size = BatchSize::new(1000, 256 << 10);
        size.observe(256, 1024 * 256);
        for _ in 0..20 {
            size.observe(size.next(), 100 * size.next());
        }
        assert_eq!(size.next(), 1000);
    }
}
