//! Typed producing and dead letters: sinks that take records with typed
//! keys and values, and the ready path that sends a record that failed (to
//! deserialize, or in processing) to a dead-letter topic and commits its
//! offset only after the dead letter was delivered.

use futures::{Sink, SinkExt};

use super::envelope::Envelope;
use crate::consumer::{CommittableOffset, TypedMessage};
use crate::error::{Error, Result};
use crate::record::{ConsumerRecord, ProducerRecord, Topic};
use crate::serde::{Serializer, TypedProducerRecord, TypedRecord};

/// `serializing(key, payload)` on every sink of records (a
/// [`ProducerSink`](super::ProducerSink) or a clone of a
/// [`SendProducer`](super::SendProducer)-backed sink): a sink of
/// [`TypedProducerRecord`]s that serializes each one. A key or payload that
/// cannot be serialized fails the sink with an error of kind
/// [`Serialize`](crate::ErrorKind::Serialize) naming the topic.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use futures::SinkExt;
/// use reactive_kafka::producer::{self, SerializeExt};
/// use reactive_kafka::serde::{TypedProducerRecord, Utf8};
/// use reactive_kafka::ProducerSettings;
///
/// let mut sink = producer::plain_sink(ProducerSettings::new("127.0.0.1:9092"))?
///     .serializing(Utf8, Utf8);
/// sink.send(TypedProducerRecord::<&str, &str>::new("names").key("7").payload("Ada")).await?;
/// sink.close().await
/// # }
/// ```
pub trait SerializeExt: Sink<ProducerRecord, Error = Error> + Sized {
    /// Serializes each record's key with `key` and payload with `payload`.
    fn serializing<K, V, KS, VS>(
        self,
        key: KS,
        payload: VS,
    ) -> impl Sink<TypedProducerRecord<K, V>, Error = Error>
    where
        KS: Serializer<K>,
        VS: Serializer<V>,
    {
        self.with(move |r: TypedProducerRecord<K, V>| {
            futures::future::ready(r.serialize(&key, &payload))
        })
    }
}

impl<S: Sink<ProducerRecord, Error = Error>> SerializeExt for S {}

/// Where records that failed go: a dead-letter topic. Each dead letter
/// carries the original key, payload and headers, and headers that say
/// where it came from and why ([`SOURCE_TOPIC`](Self::SOURCE_TOPIC) and the
/// other constants).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    topic: Topic,
}

impl DeadLetters {
    /// Header: the topic the record was read from.
    pub const SOURCE_TOPIC: &'static str = "dead-letter.source.topic";
    /// Header: its partition (decimal).
    pub const SOURCE_PARTITION: &'static str = "dead-letter.source.partition";
    /// Header: its offset (decimal).
    pub const SOURCE_OFFSET: &'static str = "dead-letter.source.offset";
    /// Header: the [`ErrorKind`](crate::ErrorKind) of the failure (`Deserialize`, `Processing`, ...).
    pub const ERROR_KIND: &'static str = "dead-letter.error.kind";
    /// Header: the failure's message.
    pub const ERROR_MESSAGE: &'static str = "dead-letter.error.message";

    /// Dead letters go to `topic`.
    pub fn new(topic: impl Into<Topic>) -> Self {
        DeadLetters {
            topic: topic.into(),
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead letter of `record`, which failed with `error`: its key,
    /// payload and headers as they were read, then the headers naming the
    /// source and the failure. Its timestamp is the original's.
    pub fn record(&self, record: &ConsumerRecord, error: &Error) -> ProducerRecord {
        let mut dead = ProducerRecord::new(&self.topic);
        if let Some(key) = record.key_bytes() {
            dead = dead.key(key);
        }
        if let Some(payload) = record.payload_bytes() {
            dead = dead.payload(payload);
        }
        if let Some(t) = record.timestamp().millis() {
            dead = dead.timestamp(t);
        }
        dead.headers.extend(record.headers().iter().cloned());
        dead.header(Self::SOURCE_TOPIC, record.topic().to_owned())
            .header(Self::SOURCE_PARTITION, record.partition().to_string())
            .header(Self::SOURCE_OFFSET, record.offset().to_string())
            .header(Self::ERROR_KIND, format!("{:?}", error.kind()))
            .header(Self::ERROR_MESSAGE, error.report().to_string())
    }

    /// The envelope for one typed message, for
    /// [`committable_sink`](super::committable_sink) or a
    /// [`flow`](super::flow): `process` turns a record into what to produce
    /// (`None`: nothing, only commit). A record that could not be
    /// deserialized, or whose `process` failed, becomes its dead letter
    /// instead. Either way the offset rides along and is committed only
    /// after what was produced for it was delivered.
    pub fn route<K, V>(
        &self,
        message: TypedMessage<K, V>,
        process: impl FnOnce(&TypedRecord<K, V>) -> Result<Option<ProducerRecord>>,
    ) -> Envelope<CommittableOffset> {
        let outcome = match &message.record {
            Ok(typed) => process(typed).map_err(|e| (e, &typed.record)),
            Err(e) => Err((
                e.clone(),
                e.record().expect("deserialize errors carry their record"),
            )),
        };
        match outcome {
            Ok(Some(record)) => Envelope::message(record, message.offset),
            Ok(None) => Envelope::pass_through(message.offset),
            Err((error, record)) => {
                tracing::debug!(error = %error.report(), topic = record.topic(), partition = record.partition(), offset = record.offset(), "record sent to the dead-letter topic");
                Envelope::message(self.record(record, &error), message.offset)
            }
        }
    }
}

impl<P> Envelope<P> {
    /// One typed record, serialized, with a pass-through value (for flows
    /// and the committable sink).
    pub fn serialized<K, V>(
        record: TypedProducerRecord<K, V>,
        key: &impl Serializer<K>,
        value: &impl Serializer<V>,
        pass_through: P,
    ) -> Result<Self> {
        Ok(Envelope::message(
            record.serialize(key, value)?,
            pass_through,
        ))
    }
}
