use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::error::Error;
use crate::listener::RebalanceListener;

/// The default revoke timeout: long enough for a commit to get through a
/// broker restart (7 to 22 s from signal to ready measured on Apache Kafka),
/// short enough that a rebalance does not stall the group for minutes.
/// librdkafka's `reconnect.backoff.max.ms` here (producers too): the Java
/// client's default, so a restarted broker is reconnected to within a second
/// of answering (librdkafka's 10 s default measured 5 to 8 s on Apache Kafka).
pub(crate) const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// The consumer's prefetch budget in KiB (librdkafka's default is 65536):
/// chosen by measurement, see the table below and the README.
const QUEUED_MAX_MESSAGES_KBYTES: u64 = 8192;

/// The most a fetch response may carry by default, in bytes (librdkafka's
/// default is the prefetch budget): chosen by measurement, see the table
/// below and the README.
const FETCH_MAX_BYTES: u64 = 1024 * 1024;

/// librdkafka's default `message.max.bytes`, the least `fetch.max.bytes`
/// it accepts.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: u64 = 1_000_000;

pub(crate) const DEFAULT_REVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a consumer starts when its group has no committed offset for a
/// partition (librdkafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    /// Start from the oldest retained record.
    Earliest,
    /// Start after the newest record: only records produced from now on.
    Latest,
    /// Fail the source with an error.
    Error,
}

/// Settings of a consumer source.
///
/// Plain data: build it with [`ConsumerSettings::new`] and the consuming
/// setters; nothing is checked until a source is created, which validates it
/// once and fails with an error naming the bad key or value.
///
/// # librdkafka defaults this crate changes
///
/// | key | librdkafka | here | why |
/// |---|---|---|---|
/// | `fetch.queue.backoff.ms` | 1000 | 10 | librdkafka stops fetching a partition for this long each time its prefetch queue reaches `queued.min.messages` or `queued.max.messages.kbytes`: with 1000, a consumer that keeps its queues full stalls a second at a time |
/// | `queued.max.messages.kbytes` | 65536 | 8192 | the prefetch budget: librdkafka fetches while less than this many KiB of records wait to be read. Measured on Apache Kafka against 65536: peak memory 15 % to 66 % lower (most at 64 partitions), throughput higher at 64 partitions and level at 8 (the README's Performance section has the figures) |
/// | `fetch.max.bytes` | the budget above (not below `message.max.bytes`) | 1 MiB (the budget if smaller, not below `message.max.bytes`) | the most one fetch response carries, which the consumer holds beyond the budget. Responses as large as the 8 MiB budget made glibc hand their memory back to the kernel and librdkafka fault it in again for the next ones; at 1 MiB librdkafka's broker thread took 0.2 to 5 page faults per 1,000 records of 1 KiB on 64 partitions against up to about 150, and peak RSS fell by about two thirds at 1 KiB (the README's Performance section has the figures). It costs the broker CPU at many partitions (more fetch requests: at 1 KiB on 64 partitions the machine's CPU per record beyond the client's, mostly the broker's, was 1.4 to 2 times as much), and one fetch is in flight per broker, so a broker delivers at most this much per round trip: raise it where brokers are short of CPU or round trips are long (1 MiB every 10 ms is 100 MB/s) |
/// | `reconnect.backoff.max.ms` | 10000 | 1000 | the Java client's default: after a broker restart the consumer reconnects within a second of the broker answering, not up to ten |
/// | `enable.auto.commit` | true | false | offsets are committed by the committer after processing (at-least-once); set it back to `true` only with [`plain_source`](crate::consumer::plain_source) |
/// | `enable.auto.offset.store` | true | false | librdkafka would store an offset when the consumer fetches a record, before your code has processed it |
///
/// Every other librdkafka key keeps librdkafka's default and can be set with
/// [`property`](ConsumerSettings::property).
#[derive(Clone)]
pub struct ConsumerSettings {
    pub(crate) bootstrap_servers: String,
    pub(crate) group_id: Option<String>,
    pub(crate) properties: BTreeMap<String, String>,
    pub(crate) max_batch_records: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) buffer_batches: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) missing_topic_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) wake_interval: Duration,
    pub(crate) min_commit_interval: Duration,
    pub(crate) max_outstanding: Option<usize>,
    pub(crate) rebalance_safe_commits: bool,
    pub(crate) revoke_timeout: Option<Duration>,
    pub(crate) listener: Option<ListenerSlot>,
    pub(crate) token_provider: Option<super::TokenProvider>,
    pub(crate) max_pull_interval: Option<(Duration, bool)>,
}

/// Secret values (see [`property`](ConsumerSettings::property)) are shown as `<redacted>`.
impl std::fmt::Debug for ConsumerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("properties", &super::Redacted(&self.properties))
            .field("max_batch_records", &self.max_batch_records)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("buffer_batches", &self.buffer_batches)
            .field("connect_timeout", &self.connect_timeout)
            .field("missing_topic_timeout", &self.missing_topic_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("wake_interval", &self.wake_interval)
            .field("min_commit_interval", &self.min_commit_interval)
            .field("max_outstanding", &self.max_outstanding)
            .field("rebalance_safe_commits", &self.rebalance_safe_commits)
            .field("revoke_timeout", &self.revoke_timeout)
            .field("listener", &self.listener)
            .field("token_provider", &self.token_provider)
            .field("max_pull_interval", &self.max_pull_interval)
            .finish()
    }
}

/// A user's [`RebalanceListener`], shared by clones of the settings.
#[derive(Clone)]
pub(crate) struct ListenerSlot(pub(crate) Arc<dyn RebalanceListener>);

impl std::fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RebalanceListener")
    }
}

/// The default [`ConsumerSettings::min_commit_interval`].
const DEFAULT_MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(20);

impl ConsumerSettings {
    /// Settings for the brokers at `bootstrap_servers` (`host:port[,host:port]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ConsumerSettings {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: None,
            properties: BTreeMap::new(),
            max_batch_records: 1000,
            max_batch_bytes: 256 << 10,
            buffer_batches: 8,
            connect_timeout: Duration::from_secs(30),
            missing_topic_timeout: Some(Duration::from_secs(60)),
            close_timeout: Duration::from_secs(30),
            wake_interval: Duration::from_millis(100),
            min_commit_interval: DEFAULT_MIN_COMMIT_INTERVAL,
            max_outstanding: None,
            token_provider: None,
            max_pull_interval: None,
            rebalance_safe_commits: true,
            revoke_timeout: None,
            listener: None,
        }
    }

    /// The consumer group (`group.id`). Required for subscriptions and for
    /// committing offsets.
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Sets `client.id`, shown in broker logs and metrics.
    pub fn client_id(self, client_id: impl Into<String>) -> Self {
        self.property("client.id", client_id)
    }

    /// The stall watchdog (zio-kafka's `maxStreamPullInterval`): when
    /// records wait for the stream and it has not been pulled for longer
    /// than `interval`, the stall is logged once, counted in
    /// [`ConsumerHealth::stalls`](crate::consumer::ConsumerHealth::stalls)
    /// and kept as the last error; with `fail`, the consumer also ends with
    /// an [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error saying
    /// so. A stream with nothing to hand out is not stalled. Off by default.
    pub fn max_pull_interval(mut self, interval: Duration, fail: bool) -> Self {
        self.max_pull_interval = Some((interval, fail));
        self
    }

    /// Where to start without a committed offset (`auto.offset.reset`;
    /// librdkafka's default is `latest`).
    pub fn auto_offset_reset(self, reset: AutoOffsetReset) -> Self {
        let value = match reset {
            AutoOffsetReset::Earliest => "earliest",
            AutoOffsetReset::Latest => "latest",
            AutoOffsetReset::Error => "error",
        };
        self.property("auto.offset.reset", value)
    }

    /// Connects with TLS and/or SASL: the properties of `security` (see
    /// [`Security`](crate::Security)), over any set before.
    pub fn security(mut self, security: super::Security) -> Self {
        let (properties, token_provider) = security.into_parts();
        self.properties.extend(properties);
        if token_provider.is_some() {
            self.token_provider = token_provider;
        }
        self
    }

    /// Sets several librdkafka properties at once, as
    /// [`property`](Self::property) does each (for example from a
    /// configuration file's section).
    pub fn properties<K, V>(mut self, properties: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in properties {
            self = self.property(k, v);
        }
        self
    }

    /// Sets any librdkafka consumer property. Overrides this crate's defaults.
    /// The key and value are checked when a source is created.
    ///
    /// Secrets stay secret: the value of a key that holds one (any key
    /// ending in `password` or naming a `secret`, `token` or private key,
    /// such as `sasl.password`, `ssl.key.password`, `ssl.key.pem` or
    /// `sasl.oauthbearer.client.secret`) is shown as `<redacted>` in `Debug`,
    /// and never appears in this crate's error messages or logs.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Most records the consumer thread hands to the stream in one batch. Default 1000.
    pub fn max_batch_records(mut self, n: usize) -> Self {
        self.max_batch_records = n;
        self
    }

    /// About the most key and payload bytes in one batch: the consumer
    /// thread reads fewer than [`max_batch_records`](Self::max_batch_records)
    /// records at a time when the records it read so far are larger than
    /// `max_batch_bytes / max_batch_records` on average (at least one
    /// record a batch). With the defaults, records up to 262 bytes come
    /// 1000 to a batch, 1 KiB records 256. It keeps what this crate buffers
    /// small whatever the record size: batches are copied into chunks of
    /// about this size (at least 16 KiB), and the consumer keeps as many
    /// chunks as batches can be alive at once, so lowering it lowers both.
    /// The first read, before any record size is known, asks for
    /// `max_batch_records` (librdkafka's prefetch budget bounds what it can
    /// get). Default 256 KiB.
    pub fn max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = n;
        self
    }

    /// How many batches may wait between the consumer thread and the stream. With
    /// [`max_batch_records`](Self::max_batch_records) and
    /// [`max_batch_bytes`](Self::max_batch_bytes) it bounds the records
    /// this crate holds beyond librdkafka's own prefetch, which
    /// `queued.min.messages` and `queued.max.messages.kbytes` bound for the
    /// whole consumer: at most `buffer_batches + 2` batches (the stream's
    /// buffer, the batch being handed out, one batch waiting for room); a
    /// partitioned source `buffer_batches + 3` batches per assigned partition
    /// (up to two batches wait before a partition whose sub-stream is full is
    /// paused). Default 8.
    pub fn buffer_batches(mut self, n: usize) -> Self {
        self.buffer_batches = n;
        self
    }

    /// How long a new source waits for the cluster to answer a metadata
    /// request before it fails with [`ErrorKind::BrokerUnreachable`](crate::ErrorKind::BrokerUnreachable).
    /// Default 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a source subscribed to topics by name waits for a topic
    /// that does not exist before it fails with
    /// [`ErrorKind::UnknownTopic`](crate::ErrorKind::UnknownTopic) naming
    /// it. Checked once, this long after subscribing (a metadata request
    /// per topic, up to 2 s each). Default 60 s; `None` waits for the topic
    /// forever (a warning is logged once the time passed). Not checked for
    /// patterns, assignments, or with `allow.auto.create.topics=true`.
    pub fn missing_topic_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.missing_topic_timeout = timeout;
        self
    }

    /// How long `Control::shutdown` waits for the consumer to leave its group
    /// and close. Default 30 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The longest the consumer thread sleeps without looking at its queues, a
    /// fallback for missed wake-ups. Default 100 ms.
    pub fn wake_interval(mut self, interval: Duration) -> Self {
        self.wake_interval = interval;
        self
    }

    /// The least time between two commits this consumer sends for its
    /// committers, or while commits keep coming. Default 20 ms; zero sends each commit as soon as
    /// the one before is answered.
    ///
    /// The consumer has one commit in flight at a time and merges what its
    /// committers hand it meanwhile (the highest offset per partition) into
    /// the next, so a busy pipeline would commit once per commit round trip
    /// (about 5 ms on a local Apache Kafka, 200 commits a second; more on a
    /// faster one), and every commit costs the group coordinator CPU
    /// (measured on Apache Kafka 4.1: roughly 0.3 to 1.2 ms a commit, see the
    /// README's benchmark). A committer's batch
    /// ([`committer::sink`](crate::committer::sink),
    /// [`committer::flow`](crate::committer::flow), which ask again only once
    /// answered), and any commit asked for while another was in flight, goes
    /// out no sooner than this interval after the last one, with everything
    /// that arrived meanwhile: at most 50 commits a
    /// second with the default, and what a crash reads again grows by at
    /// most the records processed in this time.
    ///
    /// Any other commit (`CommittableOffset::commit`,
    /// `CommittableOffsetBatch::commit`) asked for while none is in flight
    /// goes out at once, so a caller that commits and waits, one commit at
    /// a time, is not slowed.
    /// A revocation waiting for commits (see
    /// [`rebalance_safe_commits`](Self::rebalance_safe_commits)), a drain or
    /// a shutdown sends at once, whatever the interval. A commit waits at
    /// most this long before it is sent; its
    /// [`commit_timeout`](crate::CommitterSettings::commit_timeout) counts
    /// from when the committer asked.
    pub fn min_commit_interval(mut self, interval: Duration) -> Self {
        self.min_commit_interval = interval;
        self
    }

    /// Out-of-order acknowledgement for a committable source: commit the
    /// offset after the longest run of processed records of each partition,
    /// whatever order they finish in (for concurrent processing, such as
    /// `buffer_unordered`). Committing an offset then means "this record is
    /// processed", never "everything before it is".
    ///
    /// Every record handed out must have its offset committed (or the
    /// watermark stops there): commit the offsets of records you filter out
    /// too. At most `max_outstanding` records may be handed out and not yet
    /// covered by the watermark; beyond that the source waits (backpressure)
    /// rather than growing memory. The limit is counted record by record,
    /// over all of the consumer's sources and sub-streams: a batch is handed
    /// out only as far as the room goes. A pipeline that gathers records
    /// before any of their offsets reaches a committer (`chunks(n)`, a
    /// window) needs a limit above what it gathers, or it waits at the limit
    /// for good.
    ///
    /// Not for [`transactional`](crate::transactional) pipelines, whose
    /// sources refuse it: a transaction commits its outputs with their
    /// input offsets, so records must reach its sink in order.
    ///
    /// A record counts as processed when its offset reaches a committer
    /// ([`committer::sink`](crate::committer::sink) or
    /// [`committer::flow`](crate::committer::flow)) or a
    /// [`CommittableOffsetBatch`](crate::CommittableOffsetBatch), not when it
    /// is committed: offsets waiting in a committer for
    /// the commit in flight do not take up room. With
    /// [`CommitWhen::NextOffsetObserved`](crate::CommitWhen::NextOffsetObserved)
    /// the newest offset of each partition counts as processed once a newer
    /// one of its partition reaches the committer's batch; while the
    /// committer holds it back it takes up no room (releasing it needs a
    /// newer record of its partition, which the source must be able to hand
    /// out), so up to one record per assigned partition may wait beyond
    /// `max_outstanding`.
    pub fn out_of_order_commits(mut self, max_outstanding: usize) -> Self {
        self.max_outstanding = Some(max_outstanding);
        self
    }

    /// Rebalance-safe commits (on by default, committable sources only).
    ///
    /// When partitions are revoked, the consumer stops handing out records of
    /// those partitions and holds the revocation until every record of them
    /// already handed out has its offset committed, or until
    /// [`revoke_timeout`](Self::revoke_timeout) passes; only then are the
    /// partitions released to their next owner. Records processed and
    /// committed in that window are not delivered again. Lost partitions
    /// (the consumer was expelled from the group) are released at once:
    /// their offsets can no longer be committed.
    ///
    /// Off: partitions are released as soon as librdkafka revokes them;
    /// records in flight are then delivered again to the next owner, and
    /// their commits come back [stale](crate::consumer::CommitOutcome::stale).
    pub fn rebalance_safe_commits(mut self, on: bool) -> Self {
        self.rebalance_safe_commits = on;
        self
    }

    /// How long a revocation may wait for in-flight records to be committed
    /// (see [`rebalance_safe_commits`](Self::rebalance_safe_commits)). Must be
    /// below `max.poll.interval.ms`, which bounds how long the group waits
    /// for a member during a rebalance. Default: 30 s, or half of `max.poll.interval.ms` when that is lower.
    ///
    /// The hold ends earlier when nothing can be committed any more: every
    /// record handed out is committed, no offset of the partition is left
    /// anywhere (records, committers and commits in flight all dropped: no
    /// committer is attached), or the pipeline that commits for the consumer
    /// failed (the consumer then ends with that failure). With the eager
    /// protocol the whole group waits while a revocation is held, so keep
    /// this short.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = Some(timeout);
        self
    }

    /// A listener told of assignments (and asked for start offsets),
    /// revocations, lost partitions and the consumer's stop. See
    /// [`RebalanceListener`].
    pub fn rebalance_listener(mut self, listener: impl RebalanceListener) -> Self {
        self.listener = Some(ListenerSlot(Arc::new(listener)));
        self
    }

    /// The revoke timeout in effect, checked against `max.poll.interval.ms`.
    pub(crate) fn effective_revoke_timeout(&self) -> Result<Duration, Error> {
        let key = "max.poll.interval.ms";
        let max_poll = match self.get(key) {
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                Error::config(format!(
                    "invalid setting `{key}` = `{v}`: expected milliseconds"
                ))
            })?,
            None => 300_000,
        };
        let max_poll = Duration::from_millis(max_poll);
        match self.revoke_timeout {
            None => Ok((max_poll / 2).min(DEFAULT_REVOKE_TIMEOUT)),
            Some(t) if t.is_zero() || t >= max_poll => Err(Error::config(format!(
                "invalid setting `revoke_timeout` = {t:?}: must be above zero and below `{key}` ({max_poll:?})"
            ))),
            Some(t) => Ok(t),
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// A property as it will be passed to librdkafka (the user's value, or
    /// this crate's default), `None` when librdkafka's own default applies.
    pub fn get(&self, key: &str) -> Option<String> {
        self.properties.get(key).cloned().or_else(|| {
            self.defaults()
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        })
    }

    fn defaults(&self) -> Vec<(&'static str, String)> {
        let mut d = vec![
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("fetch.queue.backoff.ms", "10".to_owned()),
            (
                "queued.max.messages.kbytes",
                QUEUED_MAX_MESSAGES_KBYTES.to_string(),
            ),
            (
                "reconnect.backoff.max.ms",
                RECONNECT_BACKOFF_MAX_MS.to_owned(),
            ),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("enable.partition.eof", "false".to_owned()),
            (
                "fetch.max.bytes",
                self.default_fetch_max_bytes().to_string(),
            ),
        ];
        if let Some(g) = &self.group_id {
            d.push(("group.id", g.clone()));
        }
        d
    }

    /// `fetch.max.bytes` unless set: [`FETCH_MAX_BYTES`], or the prefetch
    /// budget if that is smaller, and never below `message.max.bytes`: the
    /// rule librdkafka applies to the budget alone, which it would reject
    /// for an explicit value below `message.max.bytes`.
    fn default_fetch_max_bytes(&self) -> u64 {
        let number = |key: &str| {
            self.properties
                .get(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let budget = number("queued.max.messages.kbytes")
            .unwrap_or(QUEUED_MAX_MESSAGES_KBYTES)
            .saturating_mul(1024);
        let message_max = number("message.max.bytes").unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        FETCH_MAX_BYTES.min(budget).max(message_max)
    }

    /// Validates the settings and turns them into a librdkafka configuration.
    /// `committable` sources need a group and no auto commit.
    pub(crate) fn to_client_config(&self, committable: bool) -> Result<ClientConfig, Error> {
        if self.bootstrap_servers.trim().is_empty()
            && !self.properties.contains_key("test.mock.num.brokers")
        {
            return Err(Error::config("invalid setting `bootstrap.servers`: empty"));
        }
        if self.max_batch_records == 0 {
            return Err(Error::config(
                "invalid setting `max_batch_records`: must be at least 1",
            ));
        }
        if self.max_batch_bytes == 0 {
            return Err(Error::config(
                "invalid setting `max_batch_bytes`: must be at least 1",
            ));
        }
        if self.buffer_batches == 0 {
            return Err(Error::config(
                "invalid setting `buffer_batches`: must be at least 1",
            ));
        }
        super::positive_duration("connect_timeout", self.connect_timeout)?;
        if let Some(t) = self.missing_topic_timeout {
            super::positive_duration("missing_topic_timeout", t)?;
        }
        super::positive_duration("close_timeout", self.close_timeout)?;
        super::positive_duration("wake_interval", self.wake_interval)?;
        if self.max_outstanding == Some(0) {
            return Err(Error::config(
                "invalid setting `out_of_order_commits`: must allow at least 1 record",
            ));
        }
        if self.max_outstanding.is_some() && !committable {
            return Err(Error::config(
                "invalid setting `out_of_order_commits`: only a committable source commits offsets",
            ));
        }
        self.effective_revoke_timeout()?;
        if self.properties.contains_key("group.id") {
            return Err(Error::config(
                "invalid setting `group.id`: set the group with ConsumerSettings::group_id",
            ));
        }
        if committable {
            if self.group_id.is_none() {
                return Err(Error::config(
                    "invalid setting `group.id`: a committable source needs a consumer group",
                ));
            }
            if self.get("enable.auto.commit").as_deref() == Some("true") {
                return Err(Error::config(
                    "invalid setting `enable.auto.commit` = `true`: a committable source commits through the committer",
                ));
            }
        }
        if self.get("enable.auto.offset.store").as_deref() == Some("true")
            && self.get("enable.auto.commit").as_deref() != Some("true")
        {
            return Err(Error::config(
                "invalid setting `enable.auto.offset.store` = `true`: offsets are committed explicitly",
            ));
        }
        super::client_config(&self.defaults(), &self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_avoid_the_fetch_backoff_trap() {
        let s = ConsumerSettings::new("127.0.0.1:9092").group_id("g");
        assert_eq!(s.get("fetch.queue.backoff.ms").as_deref(), Some("10"));
        assert_eq!(s.get("queued.max.messages.kbytes").as_deref(), Some("8192"));
        let cfg = s.to_client_config(true).unwrap();
        assert_eq!(cfg.get("queued.max.messages.kbytes"), Some("8192"));
        assert_eq!(cfg.get("group.id"), Some("g"));
        let mine = ConsumerSettings::new("127.0.0.1:9092")
            .group_id("g")
            .property("queued.max.messages.kbytes", "1024");
        let cfg = mine.to_client_config(true).unwrap();
        assert_eq!(cfg.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(s.get("enable.auto.commit").as_deref(), Some("false"));
    }

    #[test]
    fn fetch_responses_default_to_one_mebibyte_within_librdkafka_rules() {
        let with = |props: &[(&str, &str)]| {
            let mut s = ConsumerSettings::new("127.0.0.1:9092").group_id("g");
            for (k, v) in props {
                s = s.property(*k, *v);
            }
            let cfg = s.to_client_config(true).unwrap();
            // librdkafka accepts the result (it rejects a `fetch.max.bytes`
            // below `message.max.bytes` when a consumer is created).
            let _: rdkafka::consumer::BaseConsumer = cfg.create().expect("librdkafka accepts it");
            cfg.get("fetch.max.bytes").map(str::to_owned)
        };
        assert_eq!(with(&[]).as_deref(), Some("1048576"));
        // The user's value is kept.
        assert_eq!(
            with(&[("fetch.max.bytes", "52428800")]).as_deref(),
            Some("52428800")
        );
        // A smaller budget lowers it, as librdkafka would, down to
        // `message.max.bytes`.
        assert_eq!(
            with(&[("queued.max.messages.kbytes", "512")]).as_deref(),
            Some("1000000")
        );
        // Larger records raise it.
        assert_eq!(
            with(&[("message.max.bytes", "5000000")]).as_deref(),
            Some("5000000")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ConsumerSettings::new("127.0.0.1:9092")
            .group_id("g")
            .property("fetch.wait.max.msx", "10")
            .to_client_config(false)
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("fetch.wait.max.msx"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = ConsumerSettings::new("127.0.0.1:9092")
            .property("session.timeout.ms", "soon")
            .to_client_config(false)
            .unwrap_err();
        assert!(err.to_string().contains("session.timeout.ms"), "{err}");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn committable_needs_group_and_manual_commits() {
        let err = ConsumerSettings::new("h:1")
            .to_client_config(true)
            .unwrap_err();
        assert!(err.to_string().contains("group.id"), "{err}");
        let err = ConsumerSettings::new("h:1")
            .group_id("g")
            .property("enable.auto.commit", "true")
            .to_client_config(true)
            .unwrap_err();
        assert!(err.to_string().contains("enable.auto.commit"), "{err}");
    }

    #[test]
    fn zero_knobs_are_rejected() {
        let err = ConsumerSettings::new("h:1")
            .max_batch_records(0)
            .to_client_config(false)
            .unwrap_err();
        assert!(err.to_string().contains("max_batch_records"));
        let err = ConsumerSettings::new("h:1")
            .max_batch_bytes(0)
            .to_client_config(false)
            .unwrap_err();
        assert!(err.to_string().contains("max_batch_bytes"));
        let err = ConsumerSettings::new("h:1")
            .connect_timeout(Duration::ZERO)
            .to_client_config(false)
            .unwrap_err();
        assert!(err.to_string().contains("connect_timeout"));
    }

    #[test]
    fn the_default_revoke_timeout_is_30_s_or_half_the_poll_interval() {
        let s = ConsumerSettings::new("h:1");
        assert_eq!(
            s.effective_revoke_timeout().unwrap(),
            DEFAULT_REVOKE_TIMEOUT
        );
        assert_eq!(DEFAULT_REVOKE_TIMEOUT, Duration::from_secs(30));
    }

    #[test]
    fn revoke_timeout_stays_below_max_poll_interval() {
        let s = ConsumerSettings::new("h:1").property("max.poll.interval.ms", "20000");
        assert_eq!(
            s.effective_revoke_timeout().unwrap(),
            Duration::from_secs(10)
        );
        let err = s
            .revoke_timeout(Duration::from_secs(20))
            .to_client_config(false)
            .unwrap_err();
        assert!(err.to_string().contains("revoke_timeout"), "{err}");
        assert!(err.to_string().contains("max.poll.interval.ms"), "{err}");
    }
}
