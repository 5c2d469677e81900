//! A partition's own message queue, read in batches.
//!
//! rdkafka's `PartitionQueue::poll` returns one message per call and
//! allocates per message; `rd_kafka_consume_batch_queue` hands over up to a
//! whole batch under one queue lock. That difference is most of what makes
//! the engine cheaper per record than a raw rdkafka poll loop.

use std::ffi::{c_void, CString};
use std::thread::Thread;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::batch::BatchBuilder;
use super::context::EngineConsumer;
use crate::record::TopicPartition;

/// A partition's queue, split off the consumer queue, with a wake-up of the
/// engine thread when it becomes non-empty.
///
/// Must be dropped before the consumer (the engine and the context make sure):
/// a queue reference alive at destruction makes librdkafka wait forever.
pub(crate) struct PartitionQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    // The callback's opaque pointer points into this box.
    _wake: Box<Thread>,
}

// SAFETY: librdkafka queues are thread-safe; the engine owns this value and
// uses it from its own thread only.
unsafe impl Send for PartitionQueue {}

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

// SAFETY: it holds no pointer between calls of `drain_into`.
unsafe impl Send for MessageBuf {}

impl PartitionQueue {
    /// Splits `tp` off the consumer queue. Call it before the partition is
    /// assigned, so that no record of it reaches the consumer queue.
    pub(crate) fn split(
        consumer: &EngineConsumer,
        tp: &TopicPartition,
        wake: Thread,
    ) -> Option<Self> {
        let topic = CString::new(tp.topic.as_bytes()).ok()?;
        // SAFETY: the client is alive for the call; the returned reference is
        // released in `drop`.
        let queue = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                tp.partition,
            )
        };
        if queue.is_null() {
            return None;
        }
        let wake = Box::new(wake);
        // SAFETY: `queue` is valid; the opaque pointer lives as long as `self`.
        unsafe {
            rdsys::rd_kafka_queue_forward(queue, std::ptr::null_mut());
            rdsys::rd_kafka_queue_cb_event_enable(
                queue,
                Some(on_nonempty),
                &*wake as *const Thread as *mut c_void,
            );
        }
        Some(PartitionQueue { queue, _wake: wake })
    }

    /// Moves up to `max` records into `builder` without waiting. Returns the
    /// first error a message carried, if any; every record read is kept.
    pub(crate) fn drain_into(
        &self,
        builder: &mut BatchBuilder,
        max: usize,
        scratch: &mut MessageBuf,
    ) -> Option<KafkaError> {
        let scratch = &mut scratch.0;
        scratch.clear();
        scratch.reserve(max);
        // SAFETY: `scratch` has room for `max` pointers; librdkafka fills the
        // first `n` and transfers their ownership to us.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(self.queue, 0, scratch.as_mut_ptr(), max)
        };
        if n <= 0 {
            return None;
        }
        // SAFETY: librdkafka initialised the first `n` entries.
        unsafe { scratch.set_len(n as usize) };
        let mut error = None;
        for &msg in scratch.iter() {
            // SAFETY: each pointer is a valid message we own until destroyed below.
            let m = unsafe { &*msg };
            if m.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                // SAFETY: a valid, non-error message.
                unsafe { builder.push_raw(m) };
            } else if error.is_none() {
                let code: RDKafkaErrorCode = m.err.into();
                error = Some(KafkaError::MessageConsumption(code));
            }
            // SAFETY: we own the message and no longer use it.
            unsafe { rdsys::rd_kafka_message_destroy(msg) };
        }
        scratch.clear();
        error
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: disable the callback before its opaque pointer is freed,
        // then release our reference.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}
