//! Turns borrowed librdkafka messages into owned records. The keys and
//! payloads of one batch are copied into a single buffer, so a batch costs one
//! allocation instead of one or two per record; each record holds a shared
//! slice of it.

use std::ops::Range;
use std::sync::Arc;

use std::ffi::{c_char, c_void, CStr};

use bytes::{Bytes, BytesMut};
use rdkafka::bindings as rdsys;

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

    /// Copies one message into the batch.
    ///
    /// # Safety
    ///
    /// `m` must be a valid librdkafka message without an error, alive for the call.
    pub(crate) unsafe fn push_raw(&mut self, m: &rdsys::rd_kafka_message_t) {
        // SAFETY (whole body): librdkafka guarantees `key`/`payload` point to
        // `key_len`/`len` readable bytes, or are null.
        let key = self.copy(unsafe { bytes_of(m.key, m.key_len) });
        let payload = self.copy(unsafe { bytes_of(m.payload, m.len) });
        let mut ts_type = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut ts_type) };
        let timestamp = match ts_type {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                Timestamp::CreateTime(ts)
            }
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(ts)
            }
            _ => Timestamp::NotAvailable,
        };
        self.pending.push(Pending {
            offset: m.offset,
            timestamp,
            key,
            payload,
            headers: unsafe { headers_of(m) },
        });
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

/// # Safety
/// `ptr` must be null or point to `len` readable bytes.
unsafe fn bytes_of<'a>(ptr: *const c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: per the function's contract.
        Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
    }
}

/// # Safety
/// `m` must be a valid message.
unsafe fn headers_of(m: &rdsys::rd_kafka_message_t) -> Vec<Header> {
    let mut hdrs: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m` is valid; the headers belong to the message.
    let err = unsafe { rdsys::rd_kafka_message_headers(m, &mut hdrs) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut idx = 0;
    loop {
        let mut name: *const c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `hdrs` is valid while the message is.
        let err =
            unsafe { rdsys::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            break;
        }
        out.push(Header {
            // SAFETY: header names are NUL-terminated strings owned by the message.
            key: unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned(),
            // SAFETY: `value` points to `size` bytes or is null.
            value: unsafe { bytes_of(value, size) }.map(Bytes::copy_from_slice),
        });
        idx += 1;
    }
    out
}
