//! Every `unsafe` call the driver makes into librdkafka, with the reason it
//! is sound beside each block. Three things rdkafka does not wrap:
//!
//! - the consumer's queue of records ([`RecordsQueue`]), which every
//!   partition's queue is forwarded to, read in batches: rdkafka's polls
//!   return one message per call and allocate per message, while
//!   `rd_kafka_consume_batch_queue` hands over a whole batch under one queue
//!   lock; that is most of what makes the driver cheaper per record than a
//!   raw rdkafka poll loop;
//! - asynchronous commits whose result comes back as an event
//!   ([`QueueRef::commit`]): librdkafka reports the result of an
//!   async `rd_kafka_commit` only to an `offset_commit_cb` set in the
//!   configuration, which rdkafka does not set, so a plain async commit is
//!   never answered; `rd_kafka_commit_queue` with the consumer's own queue
//!   posts the result there, where the driver's poll turns it into
//!   `ConsumerContext::commit_callback`: exactly one answer per commit;
//! - reading a raw message's fields into a [`RecordBuilder`], and telling
//!   a record without headers from one with them without asking librdkafka
//!   to parse them ([`no_headers`]).
//!
//! Both queues must be released before the consumer: a reference
//! alive at destruction makes librdkafka wait forever (the driver's close
//! releases them first).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::LazyLock;
use std::thread::Thread;

use bytes::Bytes;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::records::RecordBuilder;
use crate::record::{Header, Timestamp, TopicPartition};

/// The consumer's one queue of records: every assigned partition's queue is
/// forwarded to it, with a wake-up of the driver thread when it becomes
/// non-empty. librdkafka measures a partition's prefetch (`queued.min.messages`,
/// `queued.max.messages.kbytes`) on the queue its records end in, so with one
/// queue those limits bound the whole consumer, whatever the number of
/// partitions, as for librdkafka's own consumer queue. (Giving each partition
/// a queue of its own applied them per partition: memory grew with the
/// assignment.)
pub(crate) struct RecordsQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    // The callback's opaque pointer points into this box.
    _wake: Box<Thread>,
}

// SAFETY: librdkafka queues are thread-safe; the driver uses this value from
// its own thread only (the rebalance callback runs there too).
unsafe impl Send for RecordsQueue {}
// SAFETY: as above: shared with the consumer context, used on one thread.
unsafe impl Sync for RecordsQueue {}

unsafe extern "C" fn on_nonempty(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Thread` boxed in the queue that registered this
    // callback; the callback is disabled before the box is dropped.
    let thread = unsafe { &*(opaque as *const Thread) };
    thread.unpark();
}

/// Room for the message pointers of one batch read, kept between reads to
/// reuse its allocation. Always empty between calls.
#[derive(Default)]
pub(crate) struct MessageBuf(Vec<*mut rdsys::rd_kafka_message_t>);

// SAFETY: it holds no pointer between calls of `RecordsQueue::read`.
unsafe impl Send for MessageBuf {}

/// Consecutive messages of one partition, as read off the records queue;
/// alive for the call that receives it.
pub(crate) struct Run<'a> {
    /// `None` for a message without a topic (an error of the consumer).
    pub(crate) topic: Option<&'a str>,
    pub(crate) partition: i32,
    messages: &'a [*mut rdsys::rd_kafka_message_t],
}

impl Run<'_> {
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Copies the run's records into `builder`. Returns the first error a
    /// message carried, if any; every record is kept.
    pub(crate) fn read_into(&self, builder: &mut RecordBuilder) -> Option<ReadError> {
        let bytes: usize = self
            .messages
            .iter()
            .map(|&msg| {
                // SAFETY: as below.
                let m = unsafe { &*msg };
                m.key_len + m.len
            })
            .sum();
        builder.reserve(bytes);
        let mut error = None;
        for (i, &msg) in self.messages.iter().enumerate() {
            if let Some(&next) = self.messages.get(i + 1) {
                // SAFETY: as below.
                prefetch_record(unsafe { &*next });
            }
            // SAFETY: each pointer is a valid message, owned by the reader
            // until it destroys it after this run.
            let m = unsafe { &*msg };
            if m.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                read_message(m, builder);
            } else if error.is_none() {
                error = Some(ReadError::of(m));
            }
        }
        error
    }
}

impl RecordsQueue {
    pub(crate) fn new<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        wake: Thread,
    ) -> Option<Self> {
        // SAFETY: the client is alive for the call; the queue is released in
        // `drop`, before the client (the driver's close sees to it).
        let queue = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        if queue.is_null() {
            return None;
        }
        let wake = Box::new(wake);
        // SAFETY: `queue` is valid; the opaque pointer lives as long as `self`.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                queue,
                Some(on_nonempty),
                &*wake as *const Thread as *mut c_void,
            )
        };
        Some(RecordsQueue { queue, _wake: wake })
    }

    /// Forwards `tp`'s queue to this one. Call it before the partition is
    /// assigned, so that no record of it reaches the consumer queue;
    /// librdkafka drops the forwarding when the partition is revoked.
    pub(crate) fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tp: &TopicPartition,
    ) -> bool {
        let Ok(topic) = CString::new(tp.topic.as_bytes()) else {
            return false;
        };
        // SAFETY: the client is alive for the call; the partition's queue
        // reference is released at once (the forwarding stays).
        unsafe {
            let partition = rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                tp.partition,
            );
            if partition.is_null() {
                return false;
            }
            rdsys::rd_kafka_queue_forward(partition, self.queue);
            rdsys::rd_kafka_queue_destroy(partition);
        }
        true
    }

    /// Reads up to `max` messages without waiting and hands them to `each`
    /// in runs of one partition, in the order read. Returns how many were read.
    pub(crate) fn read(
        &self,
        max: usize,
        scratch: &mut MessageBuf,
        mut each: impl FnMut(Run<'_>),
    ) -> usize {
        let scratch = &mut scratch.0;
        scratch.clear();
        scratch.reserve(max);
        // SAFETY: `scratch` has room for `max` pointers; librdkafka fills the
        // first `n` and transfers their ownership to us.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(self.queue, 0, scratch.as_mut_ptr(), max)
        };
        if n <= 0 {
            return 0;
        }
        // SAFETY: librdkafka initialised the first `n` entries.
        unsafe { scratch.set_len(n as usize) };
        let key = |msg: *mut rdsys::rd_kafka_message_t| {
            // SAFETY: a valid message we own.
            let m = unsafe { &*msg };
            (m.rkt, m.partition)
        };
        let mut start = 0;
        while start < scratch.len() {
            let (rkt, partition) = key(scratch[start]);
            let end = scratch[start..]
                .iter()
                .position(|&m| key(m) != (rkt, partition))
                .map_or(scratch.len(), |k| start + k);
            let topic = (!rkt.is_null())
                // SAFETY: a message's topic handle is valid while the
                // message is, and its name a NUL-terminated string.
                .then(|| unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(rkt)) })
                .and_then(|t| t.to_str().ok());
            each(Run {
                topic,
                partition,
                messages: &scratch[start..end],
            });
            start = end;
        }
        for &msg in scratch.iter() {
            // SAFETY: we own the message and no longer use it.
            unsafe { rdsys::rd_kafka_message_destroy(msg) };
        }
        scratch.clear();
        n as usize
    }
}

impl Drop for RecordsQueue {
    fn drop(&mut self) {
        // SAFETY: disable the callback before its opaque pointer is freed,
        // then release the queue (partition queues still forwarded to it
        // keep it alive, disabled, until librdkafka drops them).
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// An error a partition's queue gave in place of a record: its code, the
/// offset it concerns and librdkafka's words for it.
#[derive(Debug)]
pub(crate) struct ReadError {
    pub(crate) error: KafkaError,
    pub(crate) offset: Option<i64>,
    pub(crate) reason: String,
}

impl ReadError {
    fn of(m: &rdsys::rd_kafka_message_t) -> Self {
        let code: RDKafkaErrorCode = m.err.into();
        // An error message's payload is librdkafka's error string.
        let reason = if m.payload.is_null() || m.len == 0 {
            code.to_string()
        } else {
            // SAFETY: librdkafka sets `payload` to `len` bytes alive with `m`.
            let bytes = unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        ReadError {
            error: KafkaError::MessageConsumption(code),
            offset: (m.offset >= 0).then_some(m.offset),
            reason,
        }
    }
}

/// Copies one valid, error-free message (alive for the call) into `builder`.
fn read_message(m: &rdsys::rd_kafka_message_t, builder: &mut RecordBuilder) {
    let mut ts_type = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: `m` is a valid message for the call.
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
    // SAFETY: librdkafka guarantees `key`/`payload` point to `key_len`/`len`
    // readable bytes, or are null, for as long as the message lives.
    let (key, payload) = unsafe { (bytes_of(m.key, m.key_len), bytes_of(m.payload, m.len)) };
    // SAFETY: `m` is a valid consumed message.
    let headers = if unsafe { no_headers(m) } {
        debug_assert!(
            headers_of(m).is_empty(),
            "a record said to have no headers has some"
        );
        Vec::new()
    } else {
        headers_of(m)
    };
    builder.push(m.offset, timestamp, key, payload, headers);
}

/// The start of librdkafka's private `rd_kafka_msg_t` (`rdkafka_msg.h`), up
/// to the consumer's unparsed headers, as in the librdkafka versions
/// [`MESSAGE_LAYOUT_KNOWN`] accepts. A consumed `rd_kafka_message_t` is the
/// first field of one.
#[repr(C)]
struct MsgHead {
    message: rdsys::rd_kafka_message_t,
    link: [*mut c_void; 2],
    flags: c_int,
    timestamp_type: c_int,
    timestamp: i64,
    headers: *mut c_void,
    status: c_int,
    broker_id: i32,
    /// `rkm_u.consumer.binhdrs`: the record's header bytes, from its header
    /// count to its end, as they came in the fetch response.
    header_bytes_len: i32,
    header_bytes: *const u8,
}

/// The librdkafka releases whose `rd_kafka_msg_t` starts as [`MsgHead`] says
/// (read in their sources), as `rd_kafka_version()` gives them without the
/// pre-release byte.
const MESSAGE_LAYOUT_VERSIONS: [i32; 1] = [0x020c_0100];

/// Whether the librdkafka this process runs is one whose message layout
/// [`MsgHead`] describes, asked once. Any other (a system librdkafka, a
/// newer bundled one) reads every record's headers through
/// `rd_kafka_message_headers`.
static MESSAGE_LAYOUT_KNOWN: LazyLock<bool> = LazyLock::new(|| {
    // SAFETY: a plain query of a constant.
    let version = unsafe { rdsys::rd_kafka_version() };
    MESSAGE_LAYOUT_VERSIONS.contains(&(version & !0xff))
});

/// Whether a consumed record certainly has no headers, without asking
/// librdkafka (always `false` unless [`MESSAGE_LAYOUT_KNOWN`]):
/// `rd_kafka_message_headers` parses a record's header bytes in a
/// buffer it allocates and frees, even to find a header count of 0, which
/// on a consumer of small records was about a third of the driver thread's
/// time. `false` means "maybe": the caller asks librdkafka.
///
/// A Kafka v2 record ends with its header count (a varint) and headers,
/// straight after its value; librdkafka keeps where those bytes are. Their
/// first byte is read only when librdkafka's pointer to them is where the
/// record format puts them, right after the value: a layout read wrong
/// would have to produce that very address by chance to read anything. A
/// record without a value (a tombstone) is left to librdkafka, and records
/// of the formats before v2, which have no headers, have no header bytes.
///
/// # Safety
/// `m` must be a valid message read off a consumer queue.
unsafe fn no_headers(m: &rdsys::rd_kafka_message_t) -> bool {
    if !*MESSAGE_LAYOUT_KNOWN {
        return false;
    }
    // SAFETY: `m` is a consumed message, the first field of an
    // `rd_kafka_msg_t`, which in this release starts as `MsgHead` says.
    let head = unsafe { &*(m as *const rdsys::rd_kafka_message_t as *const MsgHead) };
    if head.header_bytes_len < 1 || m.payload.is_null() {
        return false;
    }
    let after_value = (m.payload as *const u8).wrapping_add(m.len);
    // SAFETY: librdkafka's header bytes hold at least one byte (checked
    // above), the header count, and they sit right after the value.
    head.header_bytes == after_value && unsafe { *head.header_bytes } == 0
}

/// Starts loading a record's bytes into the cache while the record before
/// it is copied: its key and value, and the header count after them, which
/// [`no_headers`] reads before the copy. Without it, that first read of a
/// record and the copy waited on memory: at 1 KiB they took about half of
/// the consumer thread's samples, and the hint cut that thread's samples
/// by about a seventh (pinned, on Apache Kafka). Prefetches never fault, so
/// a layout that is not the usual one only loses the hint.
#[inline]
fn prefetch_record(m: &rdsys::rd_kafka_message_t) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = m;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        if m.payload.is_null() {
            return;
        }
        let end = (m.payload as *const u8).wrapping_add(m.len);
        let start = if m.key.is_null() || m.key > m.payload {
            m.payload as *const u8
        } else {
            m.key as *const u8
        };
        // At most the key, the value and what lies between them, and no
        // more than 4 KiB: the copy of a larger record streams through the
        // CPU's own prefetcher, and its header count is the end's line.
        let span = (end as usize - start as usize)
            .min(m.key_len + m.len + 16)
            .min(4096);
        let mut at = 0;
        // SAFETY: SSE is part of every x86_64 CPU; a prefetch reads
        // nothing and never faults, whatever the address.
        unsafe {
            while at < span {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(at) as *const i8);
                at += 64;
            }
            _mm_prefetch::<_MM_HINT_T0>(end as *const i8);
        }
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

/// The headers of a valid message, copied.
fn headers_of(m: &rdsys::rd_kafka_message_t) -> Vec<Header> {
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

/// A reference to one of a consumer's librdkafka queues: the consumer
/// queue, where commits are answered and into which librdkafka forwards its
/// main queue (log lines, errors, rebalances), or the main queue itself.
pub(crate) struct QueueRef(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread-safe; the reference is only used by
// the driver thread and released before the consumer.
unsafe impl Send for QueueRef {}

impl QueueRef {
    /// The consumer queue (none without a group).
    pub(crate) fn consumer<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives.
        let q = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        (!q.is_null()).then_some(QueueRef(q))
    }

    /// The queue `BaseConsumer::poll` serves: the consumer queue, or the
    /// main queue of a consumer without a group.
    pub(crate) fn polled<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        grouped: bool,
    ) -> Option<Self> {
        if grouped {
            return Self::consumer(consumer);
        }
        // SAFETY: the client pointer is valid while `consumer` lives.
        let q = unsafe { rdsys::rd_kafka_queue_get_main(consumer.client().native_ptr()) };
        (!q.is_null()).then_some(QueueRef(q))
    }

    /// How many events wait in it.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: a valid queue reference.
        unsafe { rdsys::rd_kafka_queue_length(self.0) }
    }

    /// Sends an asynchronous commit; its result arrives as an offset-commit
    /// event on the consumer queue.
    pub(crate) fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) -> Result<(), KafkaError> {
        // SAFETY: all pointers are valid for the call; librdkafka copies the list.
        let err = unsafe {
            rdsys::rd_kafka_commit_queue(
                consumer.client().native_ptr(),
                tpl.ptr(),
                self.0,
                None,
                std::ptr::null_mut(),
            )
        };
        let code: RDKafkaErrorCode = err.into();
        if code == RDKafkaErrorCode::NoError {
            Ok(())
        } else {
            Err(KafkaError::ConsumerCommit(code))
        }
    }
}

impl Drop for QueueRef {
    fn drop(&mut self) {
        // SAFETY: the reference was obtained from rd_kafka_queue_get_*.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) };
    }
}

/// librdkafka's latency of a produced message, from `produce()` to now, in
/// microseconds (-1 if unknown); for a delivery report's message.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn message_latency_us(msg: &rdkafka::message::BorrowedMessage<'_>) -> i64 {
    // SAFETY: the message is valid while `msg` borrows it; the call only
    // reads its timestamps.
    unsafe { rdsys::rd_kafka_message_latency(msg.ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when the librdkafka this crate links changes: compare `MsgHead`
    /// with the new release's `rd_kafka_msg_t` (`src/rdkafka_msg.h`), then
    /// add the release to `MESSAGE_LAYOUT_VERSIONS`. Until then every record
    /// takes librdkafka's slower way to its headers.
    #[test]
    fn the_linked_librdkafka_has_the_message_layout_read_for_headers() {
        // SAFETY: a plain query of a constant.
        let version = unsafe { rdsys::rd_kafka_version() };
        assert!(
            *MESSAGE_LAYOUT_KNOWN,
            "librdkafka {version:#x}: message layout not checked"
        );
        assert_eq!(
            std::mem::offset_of!(MsgHead, header_bytes_len),
            std::mem::size_of::<rdsys::rd_kafka_message_t>() + 48
        );
    }
}
