//! Turns borrowed librdkafka messages into owned records. The keys and
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

#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    arena: BytesMut,
    pending: Vec<Pending>,
}

impl BatchBuilder {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn copy(&mut self, bytes: Option<&[u8]>) -> Option<Range<usize>> {
        bytes.map(|b| {
            let start = self.arena.len();
            self.arena.extend_from_slice(b);
            start..self.arena.len()
        })
    }

    pub(crate) fn push(&mut self, msg: &BorrowedMessage<'_>) {
        let key = self.copy(msg.key());
        let payload = self.copy(msg.payload());
        let headers = match msg.headers() {
            None => Vec::new(),
            Some(h) => h
                .iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect(),
        };
        self.pending.push(Pending {
            offset: msg.offset(),
            timestamp: msg.timestamp().into(),
            key,
            payload,
            headers,
        });
    }

    /// Builds the records and leaves the builder empty for the next batch.
    pub(crate) fn finish(&mut self, topic: &Arc<str>, partition: i32) -> Vec<ConsumerRecord> {
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
