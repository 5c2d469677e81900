//! Owned record types shared by consumers and producers.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A topic and a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Creates a topic-partition pair.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A record's timestamp, as Kafka reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timestamp {
    /// No timestamp is available.
    NotAvailable,
    /// Set by the producer (milliseconds since the Unix epoch).
    CreateTime(i64),
    /// Set by the broker when it appended the record (milliseconds since the Unix epoch).
    LogAppendTime(i64),
}

impl Timestamp {
    /// The timestamp in milliseconds since the Unix epoch, if there is one.
    pub fn millis(&self) -> Option<i64> {
        match *self {
            Timestamp::NotAvailable => None,
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
        }
    }
}

impl From<rdkafka::Timestamp> for Timestamp {
    fn from(t: rdkafka::Timestamp) -> Self {
        match t {
            rdkafka::Timestamp::NotAvailable => Timestamp::NotAvailable,
            rdkafka::Timestamp::CreateTime(t) => Timestamp::CreateTime(t),
            rdkafka::Timestamp::LogAppendTime(t) => Timestamp::LogAppendTime(t),
        }
    }
}

/// A record header: a key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header key.
    pub key: String,
    /// The header value, `None` for a null value.
    pub value: Option<Bytes>,
}

/// A record read from Kafka. Owned, cheap to clone, `'static + Send`: it does
/// not borrow the consumer and may outlive it.
// Laid out small (96 bytes; with its offset, a committable message stays
// within 128): records and messages move through every stream combinator
// a pipeline has, and larger values are moved by calls to `memcpy`. Hence
// the key and payload as one slice, the timestamp's kind apart from its
// value, and no vector for the (usually absent) headers.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub(crate) topic: Arc<str>,
    pub(crate) offset: i64,
    /// The key's bytes, then the payload's.
    data: Bytes,
    headers: Option<Box<[Header]>>,
    timestamp: i64,
    pub(crate) partition: i32,
    /// How many bytes of `data` are the key's.
    key_len: u32,
    /// The timestamp's kind and which of key and payload are null, in one
    /// byte with no invalid values, so that an `Option` or a `Result` of a
    /// record marks its variant in a pointer's null instead of in one of
    /// these bytes (moving a record then copies whole words).
    flags: Flags,
}

/// [`ConsumerRecord`]'s small fields: the timestamp's kind in the low two
/// bits (see the constants), then a bit each for a null key and a null
/// payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags(u8);

impl Flags {
    const NOT_AVAILABLE: u8 = 0;
    const CREATE_TIME: u8 = 1;
    const LOG_APPEND_TIME: u8 = 2;
    const KIND: u8 = 0b11;
    const KEY_NULL: u8 = 0b100;
    const PAYLOAD_NULL: u8 = 0b1000;

    fn new(kind: u8, key_null: bool, payload_null: bool) -> Self {
        let mut bits = kind;
        if key_null {
            bits |= Self::KEY_NULL;
        }
        if payload_null {
            bits |= Self::PAYLOAD_NULL;
        }
        Flags(bits)
    }

    fn kind(self) -> u8 {
        self.0 & Self::KIND
    }

    fn key_null(self) -> bool {
        self.0 & Self::KEY_NULL != 0
    }

    fn payload_null(self) -> bool {
        self.0 & Self::PAYLOAD_NULL != 0
    }
}

/// Where a record's key and payload lie in the bytes that hold both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyAndPayload {
    /// The key's length, `None` for a null key.
    pub(crate) key: Option<usize>,
    /// Whether there is a payload (it takes the rest).
    pub(crate) payload: bool,
}

impl KeyAndPayload {
    /// How `key` and `payload`, written back to back, lie in the bytes.
    pub(crate) fn of(key: Option<&[u8]>, payload: Option<&[u8]>) -> Self {
        KeyAndPayload {
            key: key.map(<[u8]>::len),
            payload: payload.is_some(),
        }
    }
}

impl ConsumerRecord {
    /// A record whose key and payload are `data`, split as `parts` says.
    pub(crate) fn from_parts(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Timestamp,
        data: Bytes,
        parts: KeyAndPayload,
        headers: Vec<Header>,
    ) -> Self {
        let (kind, timestamp) = match timestamp {
            Timestamp::NotAvailable => (Flags::NOT_AVAILABLE, 0),
            Timestamp::CreateTime(t) => (Flags::CREATE_TIME, t),
            Timestamp::LogAppendTime(t) => (Flags::LOG_APPEND_TIME, t),
        };
        let key_len = parts.key.unwrap_or(0);
        debug_assert!(key_len <= data.len());
        ConsumerRecord {
            topic,
            offset,
            data,
            headers: (!headers.is_empty()).then(|| headers.into_boxed_slice()),
            timestamp,
            partition,
            key_len: u32::try_from(key_len).expect("a key under 4 GiB"),
            flags: Flags::new(kind, parts.key.is_none(), !parts.payload),
        }
    }

    /// A record of a key and a payload held apart (copied into one buffer),
    /// for the test kit and tests; the driver builds records from parts.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn new(
        topic: impl Into<Arc<str>>,
        partition: i32,
        offset: i64,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Vec<Header>,
    ) -> Self {
        let data = [key.unwrap_or_default(), payload.unwrap_or_default()].concat();
        ConsumerRecord::from_parts(
            topic.into(),
            partition,
            offset,
            timestamp,
            data.into(),
            KeyAndPayload::of(key, payload),
            headers,
        )
    }

    /// The topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's timestamp.
    pub fn timestamp(&self) -> Timestamp {
        match self.flags.kind() {
            Flags::CREATE_TIME => Timestamp::CreateTime(self.timestamp),
            Flags::LOG_APPEND_TIME => Timestamp::LogAppendTime(self.timestamp),
            _ => Timestamp::NotAvailable,
        }
    }

    /// The key, `None` for a null key.
    pub fn key(&self) -> Option<&[u8]> {
        (!self.flags.key_null()).then(|| &self.data[..self.key_len as usize])
    }

    /// The payload, `None` for a null payload (a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        (!self.flags.payload_null()).then(|| &self.data[self.key_len as usize..])
    }

    /// The key as shared bytes, cloned without copying.
    pub fn key_bytes(&self) -> Option<Bytes> {
        (!self.flags.key_null()).then(|| self.data.slice(..self.key_len as usize))
    }

    /// The payload as shared bytes, cloned without copying.
    pub fn payload_bytes(&self) -> Option<Bytes> {
        (!self.flags.payload_null()).then(|| match self.key_len {
            0 => self.data.clone(),
            n => self.data.slice(n as usize..),
        })
    }

    /// The record's headers, in order.
    pub fn headers(&self) -> &[Header] {
        self.headers.as_deref().unwrap_or_default()
    }

    /// The topic and partition of the record.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// The trace context the producer wrote into the record's W3C
    /// `traceparent` and `tracestate` headers (this crate's producers do
    /// with the feature on, as do the Java client's instrumentations), or
    /// `None` when there is none or it is malformed.
    ///
    /// ```
    /// # use reactive_kafka::ConsumerRecord;
    /// # fn f(record: &ConsumerRecord) {
    /// if let Some(cx) = record.trace_context() {
    ///     println!("sent in trace {}", cx.trace_id());
    /// }
    /// # }
    /// ```
    #[cfg(feature = "opentelemetry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
    pub fn trace_context(&self) -> Option<opentelemetry::trace::SpanContext> {
        let find = |name: &str| {
            self.headers()
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case(name))
                .and_then(|h| h.value.as_deref())
        };
        crate::otel::parse(
            find(crate::otel::TRACEPARENT)?,
            find(crate::otel::TRACESTATE),
        )
    }

    /// A `process {topic}` span (OpenTelemetry messaging conventions: the
    /// record's topic, partition, offset and key as attributes) whose parent
    /// is the record's [`trace_context`](Self::trace_context), so the trace
    /// runs from the producer's `send` span into your processing. Enter it
    /// (or `.instrument()` a future with it) while you process the record.
    /// A disabled span when no subscriber wants `reactive_kafka::otel` spans.
    #[cfg(feature = "opentelemetry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
    pub fn process_span(&self) -> tracing::Span {
        crate::otel::process(&self.topic, self.partition, self.offset, self.key(), || {
            self.trace_context()
        })
    }
}

impl fmt::Debug for ConsumerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp())
            .field("key_len", &self.key().map(<[u8]>::len))
            .field("payload_len", &self.payload().map(<[u8]>::len))
            .field("headers", &self.headers().len())
            .finish()
    }
}

/// A topic's name as a record to produce holds it: shared, so that
/// records of one topic made from clones of one `Topic` cost no allocation
/// for it.
///
/// Anything a name comes as converts into it: `&str`, `String` and
/// `&String` are copied once, an `Arc<str>` (such as a consumed record's
/// [`TopicPartition::topic`]) is shared.
///
/// ```
/// use reactive_kafka::{ProducerRecord, Topic};
/// let orders = Topic::from("orders");
/// let records: Vec<ProducerRecord> = (0..3)
///     .map(|i| ProducerRecord::new(orders.clone()).payload(format!("order {i}")))
///     .collect();
/// assert_eq!(records[2].topic(), "orders");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Topic {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Arc<str>> for Topic {
    fn from(name: Arc<str>) -> Self {
        Topic(name)
    }
}

impl From<&Arc<str>> for Topic {
    fn from(name: &Arc<str>) -> Self {
        Topic(Arc::clone(name))
    }
}

impl From<&str> for Topic {
    fn from(name: &str) -> Self {
        Topic(name.into())
    }
}

impl From<String> for Topic {
    fn from(name: String) -> Self {
        Topic(name.into())
    }
}

impl From<&String> for Topic {
    fn from(name: &String) -> Self {
        Topic(name.as_str().into())
    }
}

impl From<std::borrow::Cow<'_, str>> for Topic {
    fn from(name: std::borrow::Cow<'_, str>) -> Self {
        Topic(name.into())
    }
}

impl From<&Topic> for Topic {
    fn from(name: &Topic) -> Self {
        name.clone()
    }
}

/// A record to produce.
///
/// ```
/// use reactive_kafka::ProducerRecord;
/// let record = ProducerRecord::new("orders")
///     .key("customer-7")
///     .payload(r#"{"total": 12}"#)
///     .header("source", "web");
/// assert_eq!(record.topic(), "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub(crate) topic: Topic,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Bytes>,
    pub(crate) payload: Option<Bytes>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) headers: Vec<Header>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, no payload and no headers; the
    /// partition is chosen by the partitioner.
    /// A [`Topic`] (or an `Arc<str>`) is shared, not copied: make the
    /// records of one topic from clones of one and their names cost no
    /// allocation.
    pub fn new(topic: impl Into<Topic>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            payload: None,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sends the record to this partition instead of the partitioner's choice.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the create-time timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Writes `context` into the record's W3C `traceparent` and
    /// `tracestate` headers (replacing any), so that the record continues
    /// that trace: for example the `process` span of the record this one was
    /// made from. Without it, the producer writes the context of its `send`
    /// span (or the current OpenTelemetry context) into records that carry
    /// no `traceparent`.
    #[cfg(feature = "opentelemetry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
    pub fn trace_context(mut self, context: &opentelemetry::trace::SpanContext) -> Self {
        self.headers.retain(|h| {
            !h.key.eq_ignore_ascii_case(crate::otel::TRACEPARENT)
                && !h.key.eq_ignore_ascii_case(crate::otel::TRACESTATE)
        });
        if context.is_valid() {
            for (key, value) in crate::otel::headers(context) {
                self.headers.push(Header {
                    key: key.to_owned(),
                    value: Some(Bytes::from(value)),
                });
            }
        }
        self
    }

    /// True when the record carries a `traceparent` header.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn has_traceparent(&self) -> bool {
        self.headers
            .iter()
            .any(|h| h.key.eq_ignore_ascii_case(crate::otel::TRACEPARENT))
    }

    /// The destination topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The explicit partition, if one was set.
    pub fn partition_number(&self) -> Option<i32> {
        self.partition
    }

    /// The key, if one was set (a cheap reference-counted copy), as
    /// [`ConsumerRecord::key_bytes`] reads a consumed record's.
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key.clone()
    }

    /// The payload, if one was set, as [`ConsumerRecord::payload_bytes`]
    /// reads a consumed record's.
    pub fn payload_bytes(&self) -> Option<Bytes> {
        self.payload.clone()
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The explicit timestamp (milliseconds since the Unix epoch), if one
    /// was set; otherwise the producer sets the time of sending.
    pub fn timestamp_millis(&self) -> Option<i64> {
        self.timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_small_enough_to_move_without_memcpy() {
        // With its offset, a committable message must stay within 128
        // bytes (tested where it is defined).
        assert!(std::mem::size_of::<ConsumerRecord>() <= 96);
    }

    #[test]
    fn timestamp_kind_and_null_key_and_payload_come_back_in_every_combination() {
        let stamps = [
            Timestamp::NotAvailable,
            Timestamp::CreateTime(7),
            Timestamp::LogAppendTime(-3),
        ];
        for timestamp in stamps {
            for key in [None, Some(&b"k"[..])] {
                for payload in [None, Some(&b"v"[..])] {
                    let r = ConsumerRecord::new("t", 0, 1, timestamp, key, payload, vec![]);
                    assert_eq!(r.timestamp(), timestamp);
                    assert_eq!(r.key(), key);
                    assert_eq!(r.payload(), payload);
                }
            }
        }
    }

    #[test]
    fn key_and_payload_come_apart_as_they_went_in() {
        let headers = vec![Header {
            key: "h".into(),
            value: None,
        }];
        type Part = Option<&'static [u8]>;
        let cases: [(Part, Part); 5] = [
            (Some(b"key"), Some(b"payload")),
            (None, Some(b"payload")),
            (Some(b"key"), None),
            (None, None),
            (Some(b""), Some(b"")),
        ];
        for (key, payload) in cases {
            let r = ConsumerRecord::new(
                "t",
                1,
                2,
                Timestamp::LogAppendTime(3),
                key,
                payload,
                headers.clone(),
            );
            assert_eq!((r.key(), r.payload()), (key, payload));
            assert_eq!(r.key_bytes().as_deref(), key);
            assert_eq!(r.payload_bytes().as_deref(), payload);
            assert_eq!(r.timestamp(), Timestamp::LogAppendTime(3));
            assert_eq!(r.headers(), &headers[..]);
        }
        let bare = ConsumerRecord::new("t", 0, 0, Timestamp::NotAvailable, None, None, vec![]);
        assert_eq!(bare.timestamp(), Timestamp::NotAvailable);
        assert!(bare.headers().is_empty());
    }
}
