//! Asynchronous commits whose result comes back as an event.
//!
//! librdkafka reports the result of `rd_kafka_commit(.., async)` only to an
//! `offset_commit_cb` set in the configuration, which rdkafka does not set:
//! a plain async commit is never answered. `rd_kafka_commit_queue` with the
//! consumer's own queue posts the result there instead, where the engine's
//! poll turns it into `ConsumerContext::commit_callback`: exactly one answer
//! per commit.

use rdkafka::bindings as rdsys;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::context::EngineConsumer;

/// A reference to the consumer queue, released before the consumer is
/// destroyed (a live reference would make destruction wait forever).
pub(crate) struct ConsumerQueueRef(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread-safe; the reference is only used by
// the engine thread and released before the consumer.
unsafe impl Send for ConsumerQueueRef {}

impl ConsumerQueueRef {
    pub(crate) fn new(consumer: &EngineConsumer) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives.
        let q = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        (!q.is_null()).then_some(ConsumerQueueRef(q))
    }

    /// Sends an asynchronous commit; its result arrives as an offset-commit
    /// event on the consumer queue.
    pub(crate) fn commit(
        &self,
        consumer: &EngineConsumer,
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

impl Drop for ConsumerQueueRef {
    fn drop(&mut self) {
        // SAFETY: the reference was obtained from rd_kafka_queue_get_consumer.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) };
    }
}
