//! A metadata client: topics and partitions, beginning and end offsets,
//! offsets for times, a group's committed offsets and lag, and topic
//! creation and deletion, without dropping to rdkafka. Every blocking
//! librdkafka call runs on tokio's blocking pool, never on an async worker,
//! and each is bounded by the client's timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::error::{Error, ErrorKind, Result};
use crate::settings::{ConsumerSettings, Secrets};

/// One partition of a group's position on a topic (see [`MetadataClient::lag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub partition: i32,
    /// The offset the next produced record will get (the high watermark).
    pub end: i64,
    /// The group's committed offset (the next record it reads), if any.
    pub committed: Option<i64>,
    /// Records between the two: `end - committed`, or `end - beginning`
    /// when nothing is committed (all of what is retained).
    pub lag: i64,
}

/// Logs through the crate's tracing, secrets redacted; no group events.
struct MetadataContext {
    secrets: Secrets,
}

impl ClientContext for MetadataContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::logging::librdkafka_log(level, fac, &self.secrets.redact(message));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::logging::librdkafka_error("metadata", &error, &self.secrets.redact(reason));
    }
}

impl ConsumerContext for MetadataContext {}

/// Reads and changes a cluster's metadata. Cheap to clone: clones share
/// one connection.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use reactive_kafka::metadata::MetadataClient;
/// use reactive_kafka::ConsumerSettings;
///
/// let client = MetadataClient::new(ConsumerSettings::new("127.0.0.1:9092"))?;
/// for p in client.lag("billing", "orders").await? {
///     println!("partition {}: {} behind", p.partition, p.lag);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MetadataClient {
    settings: ConsumerSettings,
    consumer: Arc<BaseConsumer<MetadataContext>>,
    timeout: Duration,
}

impl std::fmt::Debug for MetadataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataClient")
            .field("bootstrap_servers", &self.settings.bootstrap_servers())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The last clone destroys the librdkafka client, which blocks: that is
/// done on the blocking pool, not on an async worker.
impl Drop for MetadataClient {
    fn drop(&mut self) {
        if Arc::strong_count(&self.consumer) == 1 {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let consumer = self.consumer.clone();
                rt.spawn_blocking(move || drop(consumer));
            }
        }
    }
}

impl MetadataClient {
    /// A client for the cluster of `settings` (its servers and security
    /// properties; a group, if set, is not used). Each call is bounded by
    /// 10 s until [`with_timeout`](Self::with_timeout).
    pub fn new(settings: ConsumerSettings) -> Result<Self> {
        let consumer = client(&settings, None)?;
        Ok(MetadataClient {
            settings,
            consumer: Arc::new(consumer),
            timeout: Duration::from_secs(10),
        })
    }

    /// Bounds every call by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `f` with the shared consumer on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&BaseConsumer<MetadataContext>, Duration) -> rdkafka::error::KafkaResult<T>
            + Send
            + 'static,
    ) -> Result<T> {
        let (consumer, timeout) = (self.consumer.clone(), self.timeout);
        tokio::task::spawn_blocking(move || f(&consumer, timeout))
            .await
            .map_err(|e| Error::closed(format!("the metadata reader stopped: {e}")))?
            .map_err(|e| Error::with_source(kind_of(&e), format!("could not {what}"), e))
    }

    /// Every topic and its partitions (internal topics included).
    pub async fn topics(&self) -> Result<BTreeMap<String, Vec<i32>>> {
        self.blocking("list topics", |c, t| {
            let md = c.fetch_metadata(None, t)?;
            Ok(md
                .topics()
                .iter()
                .filter(|topic| topic.error().is_none())
                .map(|topic| {
                    let mut ps: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
                    ps.sort_unstable();
                    (topic.name().to_owned(), ps)
                })
                .collect())
        })
        .await
    }

    /// The partitions of `topic`; an [`ErrorKind::UnknownTopic`] error when it
    /// does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let name = topic.to_owned();
        let found = self
            .blocking("read the topic's partitions", move |c, t| {
                let md = c.fetch_metadata(Some(&name), t)?;
                Ok(md.topics().first().map(|topic| {
                    let error = topic.error().map(RDKafkaErrorCode::from);
                    let mut ps: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
                    ps.sort_unstable();
                    (error, ps)
                }))
            })
            .await?;
        match found {
            Some((None, ps)) if !ps.is_empty() => Ok(ps),
            Some((Some(RDKafkaErrorCode::TopicAuthorizationFailed), _)) => Err(Error::new(
                ErrorKind::TopicAuthorization,
                "not authorized to describe the topic (ACL)",
            )
            .at(topic, None, None)),
            _ => Err(Error::new(ErrorKind::UnknownTopic, "no such topic").at(topic, None, None)),
        }
    }

    /// Per partition of `topic`: its first retained offset and its end
    /// (the offset the next record gets).
    pub async fn watermarks(&self, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
        let partitions = self.partitions(topic).await?;
        let name = topic.to_owned();
        self.blocking("read watermarks", move |c, t| {
            partitions
                .into_iter()
                .map(|p| c.fetch_watermarks(&name, p, t).map(|w| (p, w)))
                .collect()
        })
        .await
        .map_err(|e| e.at(topic, None, None))
    }

    /// Per partition of `topic`, its first retained offset.
    pub async fn beginning_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        Ok(self
            .watermarks(topic)
            .await?
            .into_iter()
            .map(|(p, (low, _))| (p, low))
            .collect())
    }

    /// Per partition of `topic`, the offset its next record will get.
    pub async fn end_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        Ok(self
            .watermarks(topic)
            .await?
            .into_iter()
            .map(|(p, (_, high))| (p, high))
            .collect())
    }

    /// Per partition of `topic`, the first offset whose timestamp is at or
    /// after `millis` (since the Unix epoch); `None` where no record is that
    /// recent. (The embedded broker answers `None` for every time.)
    pub async fn offsets_for_time(
        &self,
        topic: &str,
        millis: i64,
    ) -> Result<BTreeMap<i32, Option<i64>>> {
        let partitions = self.partitions(topic).await?;
        let name = topic.to_owned();
        self.blocking("look up offsets for a time", move |c, t| {
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition_offset(&name, *p, Offset::Offset(millis))?;
            }
            let found = c.offsets_for_times(tpl, t)?;
            Ok(offsets_of(found))
        })
        .await
        .map_err(|e| e.at(topic, None, None))
    }

    /// The committed offset (the next record to read) of `group` for each
    /// partition of `topic`, `None` where nothing is committed. A group
    /// coordinator that moved or is still loading (after a broker restart)
    /// is asked again until it answers, within the client's timeout.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<i32, Option<i64>>> {
        let partitions = self.partitions(topic).await?;
        let settings = self.settings.clone();
        let (group, name) = (group.to_owned(), topic.to_owned());
        // Committed offsets are read as a member of the group would: by a
        // client with its group id (it does not join the group).
        let consumer = tokio::task::spawn_blocking(move || client(&settings, Some(&group)))
            .await
            .map_err(|e| Error::closed(format!("the metadata reader stopped: {e}")))??;
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition(&name, *p);
            }
            let committed = read_committed(&consumer, tpl, timeout);
            let offsets = committed.map(offsets_of);
            drop(consumer);
            offsets
        })
        .await
        .map_err(|e| Error::closed(format!("the metadata reader stopped: {e}")))?
        .map_err(|e| {
            Error::with_source(kind_of(&e), "could not read committed offsets", e)
                .at(topic, None, None)
        })
    }

    /// How far `group` is behind on each partition of `topic`: end offset
    /// minus committed offset (or minus the first retained offset where
    /// nothing is committed).
    pub async fn lag(&self, group: &str, topic: &str) -> Result<Vec<PartitionLag>> {
        let watermarks = self.watermarks(topic).await?;
        let committed = self.committed_offsets(group, topic).await?;
        Ok(watermarks
            .into_iter()
            .map(|(partition, (low, end))| {
                let committed = committed.get(&partition).copied().flatten();
                PartitionLag {
                    partition,
                    end,
                    committed,
                    lag: (end - committed.unwrap_or(low)).max(0),
                }
            })
            .collect())
    }

    /// Creates `topic` with `partitions` partitions, each on `replication`
    /// brokers. Not supported by the embedded broker (create its topics
    /// with `EmbeddedKafka::create_topic`).
    pub async fn create_topic(&self, topic: &str, partitions: i32, replication: i32) -> Result<()> {
        let (admin, opts) = self.admin_client().await?;
        let spec = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let answered = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            admin.create_topics([&spec], &opts),
        )
        .await;
        self.settle("create the topic", topic, admin, answered)
            .await
    }

    /// Deletes `topic` and its records.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let (admin, opts) = self.admin_client().await?;
        let answered = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            admin.delete_topics(&[topic], &opts),
        )
        .await;
        self.settle("delete the topic", topic, admin, answered)
            .await
    }

    /// An admin client of its own (created off the async workers) and
    /// options bounded by the timeout.
    async fn admin_client(&self) -> Result<(AdminClient<MetadataContext>, AdminOptions)> {
        let settings = self.settings.clone();
        let admin = tokio::task::spawn_blocking(move || {
            let config = settings.to_client_config(false)?;
            config
                .create_with_context(MetadataContext {
                    secrets: Secrets::of(&settings.properties),
                })
                .map_err(|e| {
                    Error::with_source(ErrorKind::Config, "could not create an admin client", e)
                })
        })
        .await
        .map_err(|e| Error::closed(format!("the admin client stopped: {e}")))??;
        let opts = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        Ok((admin, opts))
    }

    /// The outcome of one admin request; the client is dropped off the
    /// async workers (dropping it blocks briefly).
    async fn settle(
        &self,
        what: &str,
        topic: &str,
        admin: AdminClient<MetadataContext>,
        answered: std::result::Result<
            rdkafka::error::KafkaResult<Vec<rdkafka::admin::TopicResult>>,
            tokio::time::error::Elapsed,
        >,
    ) -> Result<()> {
        let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
        let results = match answered {
            Ok(results) => results.map_err(|e| {
                Error::with_source(kind_of(&e), format!("could not {what}"), e)
                    .at(topic, None, None)
            })?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("could not {what}: no answer within {:?}", self.timeout),
                )
                .at(topic, None, None))
            }
        };
        for result in results {
            if let Err((name, code)) = result {
                return Err(Error::with_source(
                    kind_of_code(code),
                    format!("could not {what}: {code}"),
                    KafkaError::AdminOp(code),
                )
                .at(&name, None, None));
            }
        }
        Ok(())
    }
}

/// Per partition, the list's offset (`None` where it has none), as plain
/// values; the list is dropped here, before its client (a list alive at the
/// client's destruction hangs it).
pub(crate) fn offsets_of(list: TopicPartitionList) -> BTreeMap<i32, Option<i64>> {
    list.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), Some(o)),
            _ => (e.partition(), None),
        })
        .collect()
}

/// The committed offsets of `consumer`'s group for `partitions`, within
/// `timeout` in all. The group coordinator moves (a broker restart, a
/// freeze, a new broker) and loads its offsets again before it answers:
/// "not coordinator", "coordinator not available" and "loading" answers are
/// asked again, after 50 ms and up to 1 s between tries, until an answer or
/// the timeout; the last error is returned then.
pub(crate) fn read_committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<TopicPartitionList> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.committed_offsets(partitions.clone(), left) {
            Err(e) if coordinator_moved(&e) && left > pause => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            answer => return answer,
        }
    }
}

fn coordinator_moved(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::WaitingForCoordinator
        )
    )
}

/// A client of the settings' cluster, with `group` as its group id if given.
fn client(
    settings: &ConsumerSettings,
    group: Option<&str>,
) -> Result<BaseConsumer<MetadataContext>> {
    let mut settings = settings.clone();
    if let Some(group) = group {
        settings = settings.group_id(group);
    }
    let config = settings.to_client_config(false)?;
    config
        .create_with_context(MetadataContext {
            secrets: Secrets::of(&settings.properties),
        })
        .map_err(|e| Error::with_source(ErrorKind::Config, "could not create a metadata client", e))
}

fn kind_of(e: &KafkaError) -> ErrorKind {
    e.rdkafka_error_code()
        .map_or(ErrorKind::Consume, kind_of_code)
}

fn kind_of_code(code: RDKafkaErrorCode) -> ErrorKind {
    match code {
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut => {
            ErrorKind::Timeout
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            ErrorKind::UnknownTopic
        }
        _ => ErrorKind::Consume,
    }
}
