//! # reactive-kafka
//!
//! Kafka topics as backpressured [`futures`] streams and sinks, with
//! at-least-once delivery, built on librdkafka through [`rdkafka`]. The
//! vocabulary follows Alpakka Kafka / Pekko Connectors Kafka.
//!
//! ## Quick start
//!
//! ```no_run
//! use futures::{SinkExt, StreamExt};
//! use reactive_kafka::{
//!     committer, consumer, producer, CommitterSettings, ConsumerSettings, ProducerRecord,
//!     ProducerSettings, Subscription,
//! };
//!
//! # async fn run() -> reactive_kafka::Result<()> {
//! let brokers = "127.0.0.1:9092";
//!
//! // Produce: a sink with backpressure; closing it waits for every acknowledgement.
//! let mut sink = producer::plain_sink(ProducerSettings::new(brokers))?;
//! for i in 0..10 {
//!     sink.feed(ProducerRecord::new("orders").key(format!("k{i}")).payload("hello")).await?;
//! }
//! sink.close().await?;
//!
//! // Consume, process, commit after processing (at-least-once).
//! let settings = ConsumerSettings::new(brokers).group_id("billing");
//! let (source, control) = consumer::committable_source(settings, Subscription::topics(["orders"]))?;
//! let pipeline = source
//!     .map(|msg| {
//!         let msg = msg?;
//!         println!("{:?}", msg.record.payload());
//!         Ok(msg.offset)
//!     })
//!     .forward(committer::sink(CommitterSettings::default())?);
//! let pipeline = tokio::spawn(pipeline);
//! // ... later: stop, let in-flight records be committed, close.
//! let report = control.drain_and_shutdown(std::time::Duration::from_secs(30)).await?;
//! pipeline.await.expect("pipeline task")?;
//! assert!(report.complete);
//! # Ok(())
//! # }
//! ```
//!
//! ## Delivery semantics
//!
//! - A committable source hands out each record with a [`CommittableOffset`].
//!   Commit it (through [`committer::sink`]) after the record is processed.
//!   A record whose offset was not committed is delivered again after a
//!   restart or a rebalance: nothing is lost, and duplicates are limited to
//!   records processed but not yet committed (at-least-once).
//! - An offset whose partition was revoked since its record was fetched is
//!   not committed (its new owner would be overwritten); the commit reports it
//!   as stale in [`CommitOutcome::stale`] instead of failing the stream.
//! - A plain source commits nothing unless you turn librdkafka's auto commit on.
//! - With [`ConsumerSettings::out_of_order_commits`], records may finish in
//!   any order (`buffer_unordered`): committing an offset marks its record
//!   done, and what is committed is the offset after the longest run of done
//!   records of each partition, never past a record still in flight.
//!
//! ## Backpressure and group membership
//!
//! The consumer runs on a thread of its own. When the stream is not pulled,
//! it stops draining librdkafka's per-partition queues (librdkafka then stops
//! fetching at its prefetch limits) but keeps serving the group: a stream that
//! is not pulled for longer than `max.poll.interval.ms` keeps its partitions.
//! Memory is bounded by librdkafka's `queued.max.messages.kbytes` plus
//! [`buffer_batches`](ConsumerSettings::buffer_batches) ×
//! [`max_batch_records`](ConsumerSettings::max_batch_records) records.
//!
//! ## Shutdown
//!
//! [`Control::stop`] ends the stream and keeps the consumer open for commits;
//! [`Control::drain_and_shutdown`] stops, waits until every record handed out
//! is committed (or a deadline passes), then closes and reports;
//! [`Control::shutdown`] closes; [`Control::is_shutdown`] resolves with the
//! error that ended the consumer, if any. Dropping the stream and every
//! `Control` closes the consumer in the background; nothing blocks in `Drop`.
//!
//! ## Cancel safety
//!
//! `next()` on a source is cancel safe. The futures of [`Control`] and of
//! commits send their command before the first `.await`: dropping them cancels
//! the wait, not the command. Sink futures follow the `futures::Sink` contract.
//!
//! ## Blocking
//!
//! No librdkafka call that can block runs on an async task: the consumer's
//! poll, commits and close run on its own thread; producers are flushed and
//! destroyed on a background thread.
//!
//! ## Producing
//!
//! [`producer::plain_sink`] writes records; [`producer::flow`] turns
//! [`producer::Envelope`]s into results in input order, each with a
//! pass-through value; [`producer::committable_sink`] commits each consumed
//! offset only after the records made from it were delivered (consume,
//! transform, produce with at-least-once); [`producer::SendProducer`] is a
//! cloneable handle for request/response code. The idempotent producer is on
//! by default, so librdkafka's retries neither duplicate nor reorder records.
//!
//! ## Features
//!
//! - `json`: [`serde::Json`], a serializer and deserializer for serde types.
//! - `testkit`: [`testkit::EmbeddedKafka`] (librdkafka's in-process mock
//!   cluster) and [`testkit::TestBroker`].
//! - `testcontainers`: `testkit::docker`, an `apache/kafka` container for
//!   tests on machines with Docker.

pub mod committer;
pub mod consumer;
mod driver;
mod error;
mod logging;
pub mod producer;
mod record;
pub mod serde;
mod settings;
mod task_sink;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use committer::CommittableOffsetBatch;
pub use consumer::{
    CommitOutcome, CommittableMessage, CommittableOffset, ConsumerMetrics, Control, DrainReport,
    PartitionOffset, StartOffset, Subscription,
};
pub use error::{Coordinates, Error, ErrorKind, Result};
pub use record::{ConsumerRecord, Header, ProducerRecord, Timestamp, TopicPartition};
pub use settings::{
    AutoOffsetReset, CommitDelivery, CommitWhen, CommitterSettings, ConsumerSettings,
    ProducerSettings,
};
