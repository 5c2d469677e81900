//! The librdkafka consumer context: runs on the engine thread inside `poll`,
//! records what happened as plain Rust values, and splits each newly assigned
//! partition into its own queue before librdkafka starts fetching it.

use std::sync::Mutex;
use std::thread::Thread;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::partition_queue::PartitionQueue;
use crate::record::TopicPartition;

pub(crate) type EngineConsumer = BaseConsumer<EngineContext>;

pub(crate) enum ContextEvent {
    Assigned(Vec<(TopicPartition, Option<PartitionQueue>)>),
    Revoked {
        partitions: Vec<TopicPartition>,
        lost: bool,
    },
    Committed {
        result: KafkaResult<()>,
        partitions: Vec<CommittedPartition>,
    },
    RebalanceFailed(KafkaError),
}

#[derive(Debug)]
pub(crate) struct CommittedPartition {
    pub(crate) tp: TopicPartition,
    pub(crate) offset: Option<i64>,
    pub(crate) error: Option<KafkaError>,
}

pub(crate) struct EngineContext {
    wake: Thread,
    events: Mutex<Vec<ContextEvent>>,
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineContext").finish_non_exhaustive()
    }
}

impl EngineContext {
    pub(crate) fn new(wake: Thread) -> Self {
        EngineContext {
            wake,
            events: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn take_events(&self) -> Vec<ContextEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, event: ContextEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    /// Splits a partition's messages into their own queue, with a wake-up of
    /// the engine thread when it becomes non-empty.
    pub(crate) fn split(
        &self,
        consumer: &EngineConsumer,
        tp: &TopicPartition,
    ) -> Option<PartitionQueue> {
        PartitionQueue::split(consumer, tp, self.wake.clone())
    }
}

pub(crate) fn tpl_partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for EngineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::logging::librdkafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "reactive_kafka::consumer", %error, reason, "librdkafka reported an error");
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, base_consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = tpl_partitions(tpl);
                // Split before librdkafka assigns (and starts fetching), so no
                // record of these partitions reaches the main queue.
                let split = partitions
                    .into_iter()
                    .map(|tp| {
                        let queue = self.split(base_consumer, &tp);
                        (tp, queue)
                    })
                    .collect();
                self.push(ContextEvent::Assigned(split));
            }
            Rebalance::Revoke(tpl) => {
                let lost = base_consumer.assignment_lost();
                self.push(ContextEvent::Revoked {
                    partitions: tpl_partitions(tpl),
                    lost,
                });
            }
            Rebalance::Error(e) => self.push(ContextEvent::RebalanceFailed(e.clone())),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let partitions = offsets
            .elements()
            .iter()
            .map(|e| CommittedPartition {
                tp: TopicPartition::new(e.topic(), e.partition()),
                offset: match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
                error: e.error().err(),
            })
            .collect();
        self.push(ContextEvent::Committed { result, partitions });
    }
}
