//! A test kit (feature `testkit`): an embedded Kafka broker, a broker
//! picker, helpers for tests against a broker, and broker-free factories for
//! unit tests of a pipeline.
//!
//! - [`EmbeddedKafka`] is librdkafka's mock cluster, a Kafka-protocol broker
//!   inside the process: produce, fetch, consumer groups, offset commits,
//!   idempotent producers, and fault injection. [`TestBroker::start`] uses
//!   the broker named by `KAFKA_BOOTSTRAP_SERVERS` when it is set and an
//!   embedded one otherwise, so the same test runs on both.
//! - [`unique_name`], [`produce_n`], [`consume_n`], [`wait_until`] and the
//!   group protocol presets of [`GroupProtocol`] with
//!   [`TestBroker::group_settings`].
//! - [`DeliveryChecker`]: numbered records through your pipeline under
//!   faults (a member killed without a commit, rebalances, broker outages
//!   or your own), the output read back, lost and duplicated records
//!   reported with their coordinates.
//! - [`CommitRecorder`]: committable messages and a [`Control`](crate::Control)
//!   without any broker; commits are recorded for the test to inspect. Its
//!   documentation shows a unit test of a pipeline.
//!
//! # Limits of the embedded broker
//!
//! - Each partition keeps at most 5 MiB or 100,000 batches; older records
//!   are dropped silently. Size test data under that, or use more partitions.
//! - `read_committed` is not emulated: exactly-once tests need a real broker.
//! - An empty fetch waits the full `fetch.wait.max.ms`: use 10 to 50 ms in tests.
//! - Topics are created with [`EmbeddedKafka::create_topic`]; the admin
//!   CreateTopics request is not supported.

mod delivery;
#[cfg(feature = "testcontainers")]
#[cfg_attr(docsrs, doc(cfg(feature = "testcontainers")))]
pub mod docker;
mod factory;
mod helpers;

pub use delivery::{
    number_of, DeliveryChecker, DeliveryReport, Fault, FaultAction, FaultOutcome, Numbered,
    Processed, Sighting,
};
pub use factory::CommitRecorder;
pub use helpers::{consume_n, produce_n, unique_name, wait_until, wait_until_async, GroupProtocol};

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rdsys;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::BaseProducer;
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::error::{Error, ErrorKind, Result};
use crate::settings::{ConsumerSettings, ProducerSettings};

/// An in-process Kafka cluster (librdkafka's mock cluster), with the group
/// settings tests want: no initial rebalance delay.
///
/// Dropping it stops the cluster; clients still connected to it see their
/// brokers go down.
pub struct EmbeddedKafka {
    // Owns the mock cluster: it lives as long as this client.
    _client: BaseProducer,
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    bootstrap: String,
    brokers: i32,
}

// SAFETY: the mock cluster API posts each call as an operation to the
// cluster's own thread and is documented thread-safe; the pointer is only
// used while `client` (its owner) is alive.
unsafe impl Send for EmbeddedKafka {}
// SAFETY: as above; no method takes `&mut self` for cluster calls.
unsafe impl Sync for EmbeddedKafka {}

impl fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl EmbeddedKafka {
    /// Starts a cluster of three brokers.
    pub fn start() -> Result<Self> {
        Self::with_brokers(3)
    }

    /// Starts a cluster of `brokers` brokers (1 or more).
    pub fn with_brokers(brokers: i32) -> Result<Self> {
        if brokers < 1 {
            return Err(Error::config(
                "an embedded cluster needs at least one broker",
            ));
        }
        let client: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .set("log_level", "3")
            .create()
            .map_err(|e| {
                Error::with_source(ErrorKind::Config, "could not start the embedded broker", e)
            })?;
        // SAFETY: the client is alive; the handle it returns lives as long as it.
        let cluster = unsafe { rdsys::rd_kafka_handle_mock_cluster(client_ptr(&client)) };
        if cluster.is_null() {
            return Err(Error::closed("librdkafka did not create a mock cluster"));
        }
        // SAFETY: `cluster` is valid; the returned string is owned by it.
        let bootstrap = unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `cluster` is valid.
        unsafe { rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        Ok(EmbeddedKafka {
            _client: client,
            cluster,
            bootstrap,
            brokers,
        })
    }

    /// The `bootstrap.servers` value that reaches this cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic with `partitions` partitions, replicated on up to three brokers.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let name = CString::new(topic)
            .map_err(|_| Error::config(format!("invalid topic name `{topic}`")))?;
        let replication = self.brokers.min(3);
        // SAFETY: `cluster` is valid while `self` lives; `name` outlives the call.
        let err = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, replication)
        };
        let code: RDKafkaErrorCode = err.into();
        if code != RDKafkaErrorCode::NoError {
            return Err(
                Error::new(ErrorKind::Config, format!("could not create topic: {code}"))
                    .at(topic, None, None),
            );
        }
        Ok(())
    }

    /// Makes the next `count` requests of kind `api_key` (a Kafka API key,
    /// for example 8 for OffsetCommit, 0 for Produce) fail with `error`.
    pub fn fail_requests(&self, api_key: i16, error: rdkafka::types::RDKafkaRespErr, count: usize) {
        let errors: Vec<rdsys::rd_kafka_resp_err_t> = vec![error; count];
        // SAFETY: `cluster` is valid; `errors` outlives the call.
        unsafe {
            rdsys::rd_kafka_mock_push_request_errors_array(
                self.cluster,
                api_key,
                errors.len(),
                errors.as_ptr(),
            )
        };
    }

    /// Makes every metadata answer about `topic` carry `error` (for example
    /// `RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED`, as an ACL refusal
    /// would), until set back to `RD_KAFKA_RESP_ERR_NO_ERROR`.
    pub fn fail_topic(&self, topic: &str, error: rdkafka::types::RDKafkaRespErr) {
        let topic = std::ffi::CString::new(topic).expect("a topic name has no NUL byte");
        // SAFETY: `cluster` is valid; `topic` outlives the call.
        unsafe { rdsys::rd_kafka_mock_topic_set_error(self.cluster, topic.as_ptr(), error) };
    }

    /// Takes broker `broker_id` (1 to the number of brokers) down: its
    /// connections are closed and new ones refused until [`broker_up`](Self::broker_up).
    pub fn broker_down(&self, broker_id: i32) {
        // SAFETY: `cluster` is valid.
        unsafe { rdsys::rd_kafka_mock_broker_set_down(self.cluster, broker_id) };
    }

    /// Brings broker `broker_id` back up.
    pub fn broker_up(&self, broker_id: i32) {
        // SAFETY: `cluster` is valid.
        unsafe { rdsys::rd_kafka_mock_broker_set_up(self.cluster, broker_id) };
    }

    /// Every broker of the cluster down for `duration`, then up again.
    pub async fn outage(&self, duration: Duration) {
        for id in 1..=self.brokers {
            self.broker_down(id);
        }
        tokio::time::sleep(duration).await;
        for id in 1..=self.brokers {
            self.broker_up(id);
        }
    }

    /// Delays every response of broker `broker_id` by `delay`.
    pub fn set_round_trip_time(&self, broker_id: i32, delay: Duration) {
        // SAFETY: `cluster` is valid.
        unsafe {
            rdsys::rd_kafka_mock_broker_set_rtt(self.cluster, broker_id, delay.as_millis() as i32)
        };
    }
}

/// The context of the test kit's own short-lived readers: a failed read is
/// returned to the caller, so librdkafka's logs and errors of it (during an
/// injected outage, many) are not logged.
struct Quiet;

impl rdkafka::client::ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: rdkafka::error::KafkaError, _: &str) {}
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

fn client_ptr(client: &BaseProducer) -> *const rdsys::rd_kafka_t {
    use rdkafka::producer::Producer;
    client.client().native_ptr()
}

/// The broker a test runs against: `KAFKA_BOOTSTRAP_SERVERS` when set, an
/// embedded cluster otherwise (or, with the `testcontainers` feature and
/// Docker present, an `apache/kafka` container: see [`TestBroker::start`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum TestBroker {
    /// An in-process mock cluster.
    Embedded(EmbeddedKafka),
    /// A running broker, by its bootstrap servers.
    External(String),
    /// A broker in a Docker container.
    #[cfg(feature = "testcontainers")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testcontainers")))]
    Container(Box<docker::KafkaContainer>),
}

impl TestBroker {
    /// The broker for a test: `KAFKA_BOOTSTRAP_SERVERS` if set; else, with the
    /// `testcontainers` feature and a Docker engine present, a new
    /// `apache/kafka` container; else a new embedded cluster.
    pub async fn start() -> Result<Self> {
        if let Ok(s) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            if !s.trim().is_empty() {
                return Ok(TestBroker::External(s));
            }
        }
        #[cfg(feature = "testcontainers")]
        if docker::docker_available() {
            let container = docker::KafkaContainer::start().await?;
            return Ok(TestBroker::Container(Box::new(container)));
        }
        Ok(TestBroker::Embedded(EmbeddedKafka::start()?))
    }

    /// `KAFKA_BOOTSTRAP_SERVERS` if set (and not empty), else a new embedded cluster.
    pub fn from_env() -> Result<Self> {
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            Ok(s) if !s.trim().is_empty() => Ok(TestBroker::External(s)),
            _ => Ok(TestBroker::Embedded(EmbeddedKafka::start()?)),
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        match self {
            TestBroker::Embedded(e) => e.bootstrap_servers(),
            TestBroker::External(s) => s,
            #[cfg(feature = "testcontainers")]
            TestBroker::Container(c) => c.bootstrap_servers(),
        }
    }

    /// True for the embedded cluster.
    pub fn is_embedded(&self) -> bool {
        matches!(self, TestBroker::Embedded(_))
    }

    /// The embedded cluster, if this is one.
    pub fn embedded(&self) -> Option<&EmbeddedKafka> {
        match self {
            TestBroker::Embedded(e) => Some(e),
            _ => None,
        }
    }

    /// Creates a topic and waits until the cluster knows it.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        match self {
            TestBroker::Embedded(e) => e.create_topic(topic, partitions),
            _ => {
                let servers = self.bootstrap_servers();
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", servers)
                    .create()
                    .map_err(|e| {
                        Error::with_source(ErrorKind::Config, "could not create an admin client", e)
                    })?;
                let topic_spec = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                let results = admin
                    .create_topics([&topic_spec], &opts)
                    .await
                    .map_err(|e| {
                        Error::with_source(ErrorKind::Config, "create topic failed", e)
                            .at(topic, None, None)
                    })?;
                for r in results {
                    if let Err((name, code)) = r {
                        if code != RDKafkaErrorCode::TopicAlreadyExists {
                            return Err(Error::new(
                                ErrorKind::Config,
                                format!("could not create topic: {code}"),
                            )
                            .at(&name, None, None));
                        }
                    }
                }
                // Dropping the admin client blocks briefly; do it off the runtime.
                let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
                Ok(())
            }
        }
    }

    /// The committed offset (next record to read) of `group` for partitions
    /// `0..partitions` of `topic`, `None` where nothing is committed: what
    /// a new member of the group would start from. Read by a client of its
    /// own on a blocking thread.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<BTreeMap<i32, Option<i64>>> {
        let named = topic.to_owned();
        let (servers, group, topic) = (
            self.bootstrap_servers().to_owned(),
            group.to_owned(),
            topic.to_owned(),
        );
        let read = move || -> rdkafka::error::KafkaResult<BTreeMap<i32, Option<i64>>> {
            let consumer: BaseConsumer<Quiet> = ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("group.id", &group)
                .create_with_context(Quiet)?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            let committed =
                crate::metadata::read_committed(&consumer, tpl, Duration::from_secs(10))?;
            Ok(crate::metadata::offsets_of(committed))
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| Error::closed(format!("the committed-offsets reader failed: {e}")))?
            .map_err(|e| {
                Error::with_source(ErrorKind::Consume, "could not read committed offsets", e)
                    .at(&named, None, None)
            })
    }

    /// Every broker down for `duration` (the embedded cluster only; an
    /// external broker fails with a [`Config`](ErrorKind::Config) error:
    /// stop it yourself, for example in a [`Fault::custom`] action).
    pub async fn outage(&self, duration: Duration) -> Result<()> {
        match self {
            TestBroker::Embedded(e) => {
                e.outage(duration).await;
                Ok(())
            }
            _ => Err(Error::config(
                "a broker outage can only be injected into the embedded broker",
            )),
        }
    }

    /// Consumer settings for tests: this broker, `group`, reading from the
    /// earliest offset, short fetch waits and session timeouts.
    pub fn consumer_settings(&self, group: &str) -> ConsumerSettings {
        ConsumerSettings::new(self.bootstrap_servers())
            .group_id(group)
            .auto_offset_reset(crate::AutoOffsetReset::Earliest)
            .property("fetch.wait.max.ms", "20")
            .property("session.timeout.ms", "6000")
            .property("heartbeat.interval.ms", "500")
            .property("topic.metadata.refresh.interval.ms", "1000")
            .connect_timeout(Duration::from_secs(20))
    }

    /// Producer settings for tests: this broker, short linger.
    pub fn producer_settings(&self) -> ProducerSettings {
        ProducerSettings::new(self.bootstrap_servers()).property("linger.ms", "5")
    }
}
