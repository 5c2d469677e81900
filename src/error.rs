//! The crate's error type.

use std::fmt;
use std::sync::Arc;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A specialized `Result` whose error is the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a value a caller can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting is invalid: an unknown librdkafka key, a bad value, or a
    /// combination the chosen source does not support. Raised at construction.
    Config,
    /// No broker answered within the configured connection timeout.
    BrokerUnreachable,
    /// The consumer failed while fetching records or serving group events.
    Consume,
    /// An offset commit failed.
    Commit,
    /// A record could not be handed to the producer (for example an unknown
    /// topic or a record larger than `message.max.bytes`).
    Produce,
    /// The broker did not acknowledge a produced record.
    Delivery,
    /// The consumer or producer is closed, or its consumer thread stopped.
    Closed,
    /// An operation did not finish within its deadline.
    Timeout,
    /// A key or payload could not be serialized.
    Serialize,
    /// A record's key or payload could not be deserialized; the record is
    /// attached ([`Error::record`]).
    Deserialize,
    /// A topic subscribed to by name does not exist (see
    /// [`missing_topic_timeout`](crate::ConsumerSettings::missing_topic_timeout)).
    UnknownTopic,
    /// The broker refused the client's credentials (SASL), or the
    /// OAUTHBEARER token provider failed. Not retried: reported as soon as
    /// librdkafka reports it.
    Authentication,
    /// The TLS handshake with the broker failed (certificate, hostname or
    /// protocol). Not retried.
    Tls,
    /// The broker's ACLs do not allow this principal what it asked of a
    /// topic (READ for a consumer, WRITE for a producer, DESCRIBE for
    /// either); the topic is in [`Error::coordinates`]. Not retried.
    TopicAuthorization,
    /// The broker's ACLs do not allow this principal to use the consumer
    /// group (join it, fetch or commit its offsets). Not retried.
    GroupAuthorization,
    /// Your own processing failed: an error made with [`Error::processing`]
    /// to end a pipeline whose stream and sink speak this crate's error.
    Processing,
    /// A transaction failed and was aborted: its records are invisible to
    /// `read_committed` readers and its input offsets were not committed,
    /// so they are read again.
    Transaction,
    /// Another producer with the same transactional id (a newer instance of
    /// this one), or a newer generation of the consumer group, took over:
    /// this producer is fenced and can do nothing more. Fatal.
    ProducerFenced,
}

/// The error type of every fallible operation in this crate.
///
/// It carries a [`kind`](Error::kind) to match on, a message that names the
/// topic, partition and offset where one applies, and the underlying rdkafka
/// error as its [`source`](std::error::Error::source). It is cheap to clone:
/// the same error can resolve a stream, a `Control` and a sink at once.
///
/// `Display` prints this error alone, one level: the cause is only in
/// `source()`, so a reporter that walks the chain (`anyhow`'s `{:#}`,
/// `eyre`) prints it once. To print the whole chain without one, use
/// [`Error::report`].
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    coordinates: Option<Coordinates>,
    source: Option<KafkaError>,
    record: Option<Box<crate::record::ConsumerRecord>>,
}

/// Where in Kafka an error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Coordinates {
    /// The topic.
    pub topic: String,
    /// The partition, when one is known.
    pub partition: Option<i32>,
    /// The offset, when one is known.
    pub offset: Option<i64>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                coordinates: None,
                source: None,
                record: None,
            }),
        }
    }

    /// An error caused by `source`. `kind` says what was being done; a
    /// cause that decides the kind whatever was being done (an ACL refusal,
    /// failed authentication) replaces it.
    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: KafkaError,
    ) -> Self {
        let kind = source
            .rdkafka_error_code()
            .and_then(kind_of_cause)
            .unwrap_or(kind);
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                coordinates: None,
                source: Some(source),
                record: None,
            }),
        }
    }

    /// Attaches topic, partition and offset. Only used while the error is
    /// being built, when this is the only reference.
    pub(crate) fn at(mut self, topic: &str, partition: Option<i32>, offset: Option<i64>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.coordinates = Some(Coordinates {
                topic: topic.to_owned(),
                partition,
                offset,
            });
        }
        self
    }

    /// The same error with `note` after its message; kind, coordinates,
    /// source and record are kept.
    pub(crate) fn with_note(&self, note: &str) -> Self {
        let i = &self.inner;
        Error {
            inner: Arc::new(Inner {
                kind: i.kind,
                message: format!("{}; {note}", i.message),
                coordinates: i.coordinates.clone(),
                source: i.source.clone(),
                record: i.record.clone(),
            }),
        }
    }

    /// Attaches the record the error is about. Only used while the error is
    /// being built.
    pub(crate) fn with_record(mut self, record: crate::record::ConsumerRecord) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.record = Some(Box::new(record));
        }
        self
    }

    /// The record this error is about, raw key and payload included, when
    /// there is one (deserialization errors): route it to a dead-letter topic.
    pub fn record(&self) -> Option<&crate::record::ConsumerRecord> {
        self.inner.record.as_deref()
    }

    /// An error of your own processing, to end a pipeline (for example
    /// `source.map(..).forward(sink)`) with it. Its kind is
    /// [`ErrorKind::Processing`]; name the record it is about in `message`.
    pub fn processing(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Processing, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Closed, message)
    }

    /// This error and its causes on one line, `message: cause: cause`, for
    /// logs that do not walk [`source`](std::error::Error::source) themselves.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Topic, partition and offset the error concerns, when known.
    pub fn coordinates(&self) -> Option<&Coordinates> {
        self.inner.coordinates.as_ref()
    }

    /// The librdkafka error code behind this error, when there is one.
    pub fn rdkafka_code(&self) -> Option<RDKafkaErrorCode> {
        self.inner
            .source
            .as_ref()
            .and_then(|e| e.rdkafka_error_code())
    }

    /// True when the client that raised it cannot go on: a bad configuration,
    /// a closed client, or an error librdkafka marks as fatal.
    pub fn is_fatal(&self) -> bool {
        match self.inner.kind {
            ErrorKind::Config
            | ErrorKind::Closed
            | ErrorKind::BrokerUnreachable
            | ErrorKind::Authentication
            | ErrorKind::Tls
            | ErrorKind::TopicAuthorization
            | ErrorKind::GroupAuthorization
            | ErrorKind::ProducerFenced => true,
            _ => {
                matches!(
                    self.inner.source,
                    Some(KafkaError::MessageConsumptionFatal(_))
                ) || self.rdkafka_code() == Some(RDKafkaErrorCode::Fatal)
            }
        }
    }

    /// True when trying the same operation again may succeed: timeouts,
    /// coordinator moves, rebalances in progress, full queues, transport errors.
    pub fn is_retriable(&self) -> bool {
        if self.is_fatal() {
            return false;
        }
        if self.inner.kind == ErrorKind::Timeout {
            return true;
        }
        self.rdkafka_code().is_some_and(is_retriable_code)
    }

    /// True when the error is a timeout.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
            || matches!(
                self.rdkafka_code(),
                Some(
                    RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::MessageTimedOut
                        | RDKafkaErrorCode::OperationTimedOut
                )
            )
    }
}

/// What a consumer does with an error librdkafka reports, by its code (the
/// README's table "Consumer errors, by class" lists the codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// librdkafka retries on its own (a broker away, a leader moving, a
    /// coordinator loading): logged at most once per 10 s per error and
    /// partition, and counted in `ConsumerMetrics::retried_errors`.
    Transient,
    /// A partition cannot go past a record: a codec this build lacks, a
    /// corrupt record, a record over the fetch limits, an offset out of
    /// range with no reset policy. No retry fixes it; the stream ends with
    /// the topic, partition and offset, and nothing after them is handed
    /// out (so nothing is skipped).
    Partition,
    /// The consumer cannot go on: an ACL refusal, an invalid group
    /// configuration, an error librdkafka marks fatal. The stream ends.
    Fatal,
}

/// The class of a consumer error code (see [`ErrorClass`]). Codes not
/// named here are transient: librdkafka retries them. Failed
/// authentication and TLS handshakes are final when the consumer starts
/// (`connect.rs`); once it runs they are transient, as a broker restarting
/// can cause them.
pub(crate) fn consumer_error_class(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode::*;
    match code {
        NotImplemented
        | BadMessage
        | BadCompression
        | InvalidMessage
        | InvalidMessageSize
        | MessageSizeTooLarge
        | UnsupportedCompressionType
        | UnsupportedForMessageFormat
        | InvalidRecord
        | AutoOffsetReset
        | LogTruncation => ErrorClass::Partition,
        Fatal
        | TopicAuthorizationFailed
        | GroupAuthorizationFailed
        | ClusterAuthorizationFailed
        | InvalidGroupId
        | InconsistentGroupProtocol
        | InvalidSessionTimeout
        | GroupMaxSizeReached
        | FencedInstanceId
        | UnsupportedAssignor
        | InvalidTopic
        | InvalidConfig => ErrorClass::Fatal,
        _ => ErrorClass::Transient,
    }
}

/// The kind a librdkafka code decides on its own, whatever the client was
/// doing when it came: refusals that retrying cannot change.
fn kind_of_cause(code: RDKafkaErrorCode) -> Option<ErrorKind> {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => Some(ErrorKind::TopicAuthorization),
        RDKafkaErrorCode::GroupAuthorizationFailed => Some(ErrorKind::GroupAuthorization),
        RDKafkaErrorCode::SaslAuthenticationFailed => Some(ErrorKind::Authentication),
        RDKafkaErrorCode::ProducerFenced
        | RDKafkaErrorCode::InvalidProducerEpoch
        | RDKafkaErrorCode::Fenced => Some(ErrorKind::ProducerFenced),
        _ => None,
    }
}

pub(crate) fn is_retriable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        QueueFull
            | RequestTimedOut
            | MessageTimedOut
            | OperationTimedOut
            | TimedOutQueue
            | BrokerTransportFailure
            | AllBrokersDown
            | NetworkException
            | NotCoordinator
            | WaitingForCoordinator
            | CoordinatorNotAvailable
            | CoordinatorLoadInProgress
            | RebalanceInProgress
            | LeaderNotAvailable
            | NotLeaderForPartition
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | UnknownTopicOrPartition
            | InProgress
            | Retry
    )
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(c) = &self.inner.coordinates {
            d.field("coordinates", c);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(c) = &self.inner.coordinates {
            write!(f, " (topic {}", c.topic)?;
            if let Some(p) = c.partition {
                write!(f, ", partition {p}")?;
            }
            if let Some(o) = c.offset {
                write!(f, ", offset {o}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// An error and its chain of causes, displayed on one line: see [`Error::report`].
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub(crate) &'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(s) = source {
            // rdkafka's errors repeat their code's text in their own: print it once.
            let text = s.to_string();
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            source = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_coordinates_and_keeps_source() {
        let err = Error::with_source(
            ErrorKind::Commit,
            "commit failed",
            KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress),
        )
        .at("orders", Some(3), Some(42));
        assert_eq!(
            err.to_string(),
            "commit failed (topic orders, partition 3, offset 42)"
        );
        assert!(err.is_retriable());
        assert!(!err.is_fatal());
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn display_is_one_level_and_the_report_walks_the_chain() {
        let source = KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress);
        let cause = source.to_string();
        let err = Error::with_source(ErrorKind::Commit, "commit failed", source);
        assert!(!err.to_string().contains(&cause), "{err}");
        assert_eq!(std::error::Error::source(&err).unwrap().to_string(), cause);
        assert_eq!(err.report().to_string(), format!("commit failed: {cause}"));
    }

    #[test]
    fn config_errors_are_fatal_not_retriable() {
        let err = Error::config("bad key");
        assert!(err.is_fatal());
        assert!(!err.is_retriable());
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn an_acl_refusal_decides_the_kind_whatever_was_being_done() {
        let refused = |code| {
            Error::with_source(
                ErrorKind::Delivery,
                "record not delivered",
                KafkaError::MessageProduction(code),
            )
        };
        let topic = refused(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(topic.kind(), ErrorKind::TopicAuthorization);
        assert!(topic.is_fatal() && !topic.is_retriable());
        let group = refused(RDKafkaErrorCode::GroupAuthorizationFailed);
        assert_eq!(group.kind(), ErrorKind::GroupAuthorization);
        assert!(group.is_fatal());
        let timeout = refused(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(timeout.kind(), ErrorKind::Delivery);
        assert!(!timeout.is_fatal());
    }

    #[test]
    fn consumer_errors_no_retry_fixes_are_not_transient() {
        use RDKafkaErrorCode::*;
        // A codec this build lacks: librdkafka reports it again and again.
        assert_eq!(consumer_error_class(NotImplemented), ErrorClass::Partition);
        assert_eq!(consumer_error_class(AutoOffsetReset), ErrorClass::Partition);
        assert_eq!(consumer_error_class(InvalidMessage), ErrorClass::Partition);
        assert_eq!(
            consumer_error_class(TopicAuthorizationFailed),
            ErrorClass::Fatal
        );
        assert_eq!(consumer_error_class(Fatal), ErrorClass::Fatal);
        for transient in [
            BrokerTransportFailure,
            AllBrokersDown,
            NotLeaderForPartition,
            CoordinatorLoadInProgress,
            UnknownTopicOrPartition,
            Authentication,
            SSL,
        ] {
            assert_eq!(
                consumer_error_class(transient),
                ErrorClass::Transient,
                "{transient:?}"
            );
        }
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }
}
