//! Builds owned records from messages read off librdkafka. The keys and
//! payloads of one batch are copied into a single buffer, so a batch costs one
//! allocation instead of one or two per record; each record holds a shared
//! slice of it.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::record::{ConsumerRecord, Header, Timestamp};

#[derive(Debug)]
struct Pending {
    offset: i64,
    timestamp: Timestamp,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
    headers: Vec<Header>,
}

/// The records of one batch being read.
#[derive(Debug, Default)]
pub(crate) struct RecordBuilder {
    arena: BytesMut,
    pending: Vec<Pending>,
}

impl RecordBuilder {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records copied in since the last `finish`.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Key and payload bytes copied in since the last `finish`.
    pub(crate) fn bytes(&self) -> usize {
        self.arena.len()
    }

    fn copy(&mut self, bytes: Option<&[u8]>) -> Option<Range<usize>> {
        bytes.map(|b| {
            let start = self.arena.len();
            self.arena.extend_from_slice(b);
            start..self.arena.len()
        })
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
        let key = self.copy(key);
        let payload = self.copy(payload);
        self.pending.push(Pending {
            offset,
            timestamp,
            key,
            payload,
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
        self.pending
            .drain(..)
            .map(|p| ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: p.offset,
                timestamp: p.timestamp,
                key: p.key.map(|r| buf.slice(r)),
                payload: p.payload.map(|r| buf.slice(r)),
                headers: p.headers,
            })
            .collect()
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
}
