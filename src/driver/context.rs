//! The librdkafka consumer context: runs on the driver thread inside `poll`,
//! records what happened as plain Rust values, and forwards each newly
//! assigned partition's queue to the consumer's records queue before
//! librdkafka starts fetching it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::ffi::RecordsQueue;
use super::Listener;
use crate::connect::ConnectFailures;
use crate::record::TopicPartition;
use crate::settings::{Secrets, TokenProvider};

pub(crate) type DriverConsumer = BaseConsumer<DriverContext>;

pub(crate) enum ContextEvent {
    /// Each partition with whether its queue was forwarded to the records
    /// queue (if not, its records arrive on the consumer queue).
    Assigned(Vec<(TopicPartition, bool)>),
    Revoked {
        partitions: Vec<TopicPartition>,
        lost: bool,
        /// False: librdkafka still holds the partitions, waiting for the
        /// driver to release them (rebalance-safe commits).
        released: bool,
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

pub(crate) struct DriverContext {
    wake: Thread,
    /// Where every assigned partition's records go; `None` before the
    /// driver opened it and after its close released it.
    records: Mutex<Option<Arc<RecordsQueue>>>,
    events: Mutex<Vec<ContextEvent>>,
    /// Hold revocations until in-flight records are committed; cleared when
    /// the consumer closes (librdkafka then revokes from inside close).
    hold_revocations: AtomicBool,
    pub(crate) listener: Listener,
    /// Why broker connections failed, for the connect check.
    pub(crate) connect_failures: ConnectFailures,
    /// Secret values of the settings, kept out of what is logged.
    secrets: Secrets,
    /// Where SASL/OAUTHBEARER tokens come from, when the user gave one.
    token_provider: Option<TokenProvider>,
    /// Where librdkafka's statistics go (a watch: never blocks this thread).
    statistics: Statistics,
}

pub(crate) type Statistics =
    tokio::sync::watch::Sender<Option<Arc<rdkafka::statistics::Statistics>>>;

impl std::fmt::Debug for DriverContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverContext").finish_non_exhaustive()
    }
}

impl DriverContext {
    pub(crate) fn new(
        wake: Thread,
        hold_revocations: bool,
        listener: Listener,
        secrets: Secrets,
        token_provider: Option<TokenProvider>,
        statistics: Statistics,
    ) -> Self {
        DriverContext {
            wake,
            records: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            hold_revocations: AtomicBool::new(hold_revocations),
            listener,
            connect_failures: ConnectFailures::default(),
            secrets,
            token_provider,
            statistics,
        }
    }

    /// From now on revocations are released at once.
    pub(crate) fn stop_holding_revocations(&self) {
        self.hold_revocations.store(false, Ordering::Relaxed);
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

    /// Opens the records queue of `consumer` (this context's): the queue
    /// assigned partitions are forwarded to from now on.
    pub(crate) fn open_records(&self, consumer: &DriverConsumer) -> Option<Arc<RecordsQueue>> {
        let queue = Arc::new(RecordsQueue::new(consumer, self.wake.clone())?);
        *self.records.lock().unwrap_or_else(|e| e.into_inner()) = Some(queue.clone());
        Some(queue)
    }

    /// Lets go of the records queue (before the consumer is destroyed);
    /// partitions assigned after this keep their records on the consumer queue.
    pub(crate) fn close_records(&self) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Forwards a partition's records to the records queue; false if that
    /// could not be done (they then arrive on the consumer queue).
    pub(crate) fn forward(&self, consumer: &DriverConsumer, tp: &TopicPartition) -> bool {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.as_ref().is_some_and(|q| q.forward(consumer, tp))
    }
}
// Gives revoked partitions back to librdkafka (which then completes the
/// rebalance), with the call the group's protocol requires.
pub(crate) fn release(consumer: &BaseConsumer<DriverContext>, partitions: &[TopicPartition]) {
    let result = match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => {
            let mut tpl = TopicPartitionList::with_capacity(partitions.len());
            for tp in partitions {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            consumer.incremental_unassign(&tpl)
        }
        _ => consumer.unassign(),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not release revoked partitions");
    }
}

pub(crate) fn tpl_partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for DriverContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.statistics.send_replace(Some(Arc::new(statistics)));
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        crate::settings::oauth_token(self.token_provider.as_ref())
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let message = self.secrets.redact(message);
        if fac == "FAIL" {
            let _ = self.connect_failures.note(&message);
        }
        crate::logging::librdkafka_log(level, fac, &message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.secrets.redact(reason);
        if let Some(code) = error.rdkafka_error_code() {
            // Noted with librdkafka's reason, which the polled error lacks.
            let _ = self.connect_failures.note_code(code, Some(&reason));
        }
        crate::logging::librdkafka_error("consumer", &error, &reason);
    }
}

impl ConsumerContext for DriverContext {
    /// Replaces rdkafka's default handling: queues are forwarded and start
    /// offsets applied before librdkafka starts fetching, and a revocation
    /// may be left pending for the driver to complete with [`release`].
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions = tpl_partitions(tpl);
                if let Some(listener) = &self.listener {
                    for (tp, offset) in listener.on_assigned(&partitions) {
                        if !partitions.contains(&tp) {
                            tracing::warn!(partition = %tp, "start offset for a partition not assigned: ignored");
                            continue;
                        }
                        if let Err(e) = tpl.set_partition_offset(
                            &tp.topic,
                            tp.partition,
                            Offset::Offset(offset),
                        ) {
                            tracing::warn!(partition = %tp, offset, error = %e, "invalid start offset: ignored");
                        }
                    }
                }
                // Forward before librdkafka assigns (and starts fetching), so
                // no record of these partitions reaches the main queue.
                let forwarded = partitions
                    .into_iter()
                    .map(|tp| {
                        let forwarded = self.forward(consumer, &tp);
                        (tp, forwarded)
                    })
                    .collect();
                self.push(ContextEvent::Assigned(forwarded));
                let result = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                if let Err(e) = result {
                    self.push(ContextEvent::RebalanceFailed(e));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let partitions = tpl_partitions(tpl);
                let hold = self.hold_revocations.load(Ordering::Relaxed) && !lost;
                if !hold {
                    release(consumer, &partitions);
                }
                self.push(ContextEvent::Revoked {
                    partitions,
                    lost,
                    released: !hold,
                });
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                self.push(ContextEvent::RebalanceFailed(KafkaError::Rebalance(code)));
                release(consumer, &tpl_partitions(tpl));
            }
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
