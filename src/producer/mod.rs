//! Producer sinks.
//!
//! [`plain_sink`] writes [`ProducerRecord`](crate::ProducerRecord)s to Kafka with backpressure: when
//! librdkafka's queue is full it waits for deliveries to free room (no sleep
//! loop). A record the broker rejects fails the sink with an error naming the
//! topic and partition. Closing the sink waits until every record is
//! acknowledged.

mod reaper;
mod sink;

pub use sink::ProducerSink;

use crate::error::Result;
use crate::settings::ProducerSettings;

/// A sink of records, backed by a producer of its own.
///
/// Sending never blocks the task: when librdkafka's queue is full
/// (`queue.buffering.max.messages` / `queue.buffering.max.kbytes`),
/// `poll_ready` waits for a delivery report to free room.
///
/// The settings are validated here: a bad key or value fails with an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming it.
pub fn plain_sink(settings: ProducerSettings) -> Result<ProducerSink> {
    ProducerSink::new(settings)
}
