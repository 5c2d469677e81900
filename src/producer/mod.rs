//! Producer sinks.
//!
//! [`plain_sink`] writes [`ProducerRecord`](crate::ProducerRecord)s to Kafka with backpressure: when
//! [`max_in_flight`](crate::ProducerSettings::max_in_flight) records are
//! unacknowledged, or librdkafka's queue is full, it waits for deliveries to
//! free room (no sleep loop). A record the broker rejects fails the sink with an error naming the
//! topic and partition. Closing the sink waits until every record is
//! acknowledged.

mod committable;
mod core;
mod envelope;
mod ffi;
mod flow;
mod reaper;
mod send;
mod sink;
mod typed;

pub use self::core::RecordMetadata;
pub(crate) use self::core::{ProducerCore, Sent, Track};
pub use committable::CommittableSink;
pub use envelope::{Envelope, ProduceFailure, ProducerResult};
pub use flow::ProducerFlow;
pub use send::{SendError, SendProducer};
pub use sink::ProducerSink;
pub use typed::{DeadLetters, SerializeExt};

use futures::Stream;

use crate::settings::CommitterSettings;

use crate::error::Result;
use crate::settings::ProducerSettings;

/// A sink of records, backed by a producer of its own.
///
/// Sending never blocks the task: while
/// [`max_in_flight`](ProducerSettings::max_in_flight) records are
/// unacknowledged, or librdkafka's queue is full
/// (`queue.buffering.max.messages` / `queue.buffering.max.kbytes`),
/// `poll_ready` waits for a delivery report to free room.
///
/// The settings are validated here: a bad key or value fails with an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming it.
pub fn plain_sink(settings: ProducerSettings) -> Result<ProducerSink> {
    ProducerSink::new(settings)
}

/// Produces every envelope of `envelopes` and yields one result per envelope,
/// in input order, with where each record was written (or the error with the
/// records) and the envelope's pass-through value.
///
/// At most [`max_in_flight`](ProducerSettings::max_in_flight) records are
/// unacknowledged at once; when librdkafka's queue is full the flow waits for
/// delivery reports. When `envelopes` ends, the flow ends after the last result.
pub fn flow<S, P>(settings: ProducerSettings, envelopes: S) -> Result<ProducerFlow<S, P>>
where
    S: Stream<Item = Envelope<P>>,
{
    let core = core::ProducerCore::new(&settings)?;
    Ok(ProducerFlow::new(core, envelopes, settings.max_in_flight))
}

/// Consume, transform, produce with at-least-once delivery: a sink of
/// envelopes whose pass-through values are the offsets of the records they
/// came from. Each offset is committed (through a batched committer with
/// `committer` settings) only after every record of its envelope was
/// delivered, and in envelope order. The first failed envelope fails the sink
/// before any later offset is committed, so no record is skipped.
///
/// A failed envelope fails the sink at once (its `poll_flush` returns the
/// error, so `StreamExt::forward` ends even while its source is idle), after
/// the offsets before it are committed; the consumer of the failed record
/// then ends with the same error.
///
/// Must be created inside a tokio runtime. Closing it waits until everything
/// is produced and committed.
pub fn committable_sink(
    settings: ProducerSettings,
    committer: CommitterSettings,
) -> Result<CommittableSink> {
    committable::committable_sink(settings, committer)
}
