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
//! - For exactly once (output records and input offsets committed together
//!   in Kafka transactions), use [`transactional`]: its source reads with
//!   `read_committed` and its sink or flow commits each batch of output with
//!   the offsets of the records it came from.
//!
//! ## Delivery across rebalances
//!
//! When the group rebalances, partitions move between consumers. What this
//! crate guarantees, and what you must do:
//!
//! - **Nothing is lost.** A partition's next owner starts at its last
//!   committed offset, and only records you processed are committed.
//! - **Records you processed and committed are not read again**, with
//!   [rebalance-safe commits](ConsumerSettings::rebalance_safe_commits) (on by
//!   default for committable sources). When a partition is revoked, its
//!   sub-stream (or its share of the stream) ends at once: no further record
//!   of it is handed out, and records that were buffered but not pulled are
//!   dropped (the next owner reads them). The revocation is then held until
//!   every record already handed to you is committed; a committer commits
//!   what it holds of the revoked partitions as soon as the revocation
//!   starts. Only then does the
//!   partition go to its next owner. Commit the offset of every record you
//!   take (also of records you skip), or drop the offsets you will not
//!   commit: while one is held anywhere, the revocation waits for it until
//!   the [revoke timeout](ConsumerSettings::revoke_timeout) (default 30 s,
//!   at most half of `max.poll.interval.ms`).
//! - **What can still be read twice:** records processed but not committed
//!   when the revoke timeout passes, when a commit of them fails, or when
//!   partitions are *lost* (the consumer was expelled from the group, for
//!   example after a long pause): lost partitions are released at once and
//!   their offsets are not committed, because another member may already own
//!   them. Make processing idempotent where a duplicate costs you.
//! - **A late commit never overwrites the next owner.** An offset whose
//!   partition was released since its record was fetched is not committed;
//!   the commit reports it in [`CommitOutcome::stale`] and counts it in
//!   [`ConsumerMetrics::offsets_stale`](consumer::ConsumerMetrics::offsets_stale).
//!   It does not fail the stream.
//! - **The partitions you keep** (cooperative assignors, the KIP-848
//!   `consumer` protocol) keep their sub-streams. Records already fetched
//!   keep flowing during the revocation; librdkafka itself pauses fetching
//!   for the whole assignment until a rebalance completes.
//! - A [`RebalanceListener`](consumer::RebalanceListener) hears assignments
//!   (and may choose start offsets, for offsets kept outside Kafka),
//!   revocations (after the in-flight records were committed), lost
//!   partitions and the stop.
//!
//! All three group protocols are covered by the tests: classic with an eager
//! assignor (`range`), classic with `cooperative-sticky`, and KIP-848's
//! `group.protocol=consumer`.
//!
//! ## Backpressure and group membership
//!
//! The consumer runs on a thread of its own. When the stream is not pulled,
//! it stops draining the consumer's records queue (librdkafka then stops
//! fetching at its prefetch limits) but keeps serving the group: a stream that
//! is not pulled for longer than `max.poll.interval.ms` keeps its partitions.
//! Every assigned partition feeds that one queue, so librdkafka's prefetch
//! limits (`queued.min.messages`, `queued.max.messages.kbytes`) bound the
//! whole consumer, whatever the number of partitions (this crate lowers the
//! byte limit to 8 MiB, and a fetch response's to 1 MiB); this crate holds at most
//! [`buffer_batches`](ConsumerSettings::buffer_batches) + 2 batches more,
//! each at most [`max_batch_records`](ConsumerSettings::max_batch_records)
//! records and about [`max_batch_bytes`](ConsumerSettings::max_batch_bytes)
//! of keys and payloads (a partitioned source: `buffer_batches + 3` batches
//! per assigned partition). The README's "Backpressure and memory" gives
//! the bound as a formula and what was measured.
//!
//! ## Throughput and the allocator
//!
//! librdkafka allocates an operation for every record it fetches, on its
//! broker thread, and the thread that reads the records frees it; under
//! glibc's `malloc` the two threads contend for one arena lock per record,
//! which at small records limits a consumer more than anything in this
//! crate. Making mimalloc the process's `malloc` (the `mimalloc` crate with
//! its `override` feature; `#[global_allocator]` alone changes only Rust's
//! allocations) made `plain_source` about 1.5 times as fast at 100 B on
//! Apache Kafka with its threads on two cores (on one core it changed
//! nothing). This crate does not choose the allocator for you; the
//! README's "Performance" has the figures.
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
//! ## Typed records and dead letters
//!
//! Any source or sub-stream, given a key and a payload deserializer
//! ([`consumer::DeserializeExt`]), hands out [`TypedRecord`]s; a record that
//! does not deserialize comes out as an error value with its raw bytes and
//! coordinates (and, from a committable source, its offset), never skipped.
//! [`producer::DeadLetters`] routes such records, and those your processing
//! refuses, to a dead-letter topic and commits their offsets once the dead
//! letter is delivered. Sinks take [`TypedProducerRecord`]s through
//! [`producer::SerializeExt`].
//!
//! ## Features
//!
//! - `zstd` (default): the zstd codec, built from source by a crate.
//! - `tls`: TLS and SASL/SCRAM, with OpenSSL built from source.
//! - `json`: [`serde::Json`], a serializer and deserializer for serde types.
//! - `metrics`: consumer and producer figures through the `metrics` facade.
//! - `testkit`: [`testkit::EmbeddedKafka`] (librdkafka's in-process mock
//!   cluster), [`testkit::TestBroker`], test helpers, and
//!   [`testkit::CommitRecorder`] for broker-free unit tests of a pipeline.
//! - `testcontainers`: `testkit::docker`, an `apache/kafka` container for
//!   tests on machines with Docker.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
pub mod committer;
mod connect;
pub mod consumer;
mod counted;
mod driver;
mod error;
mod export;
mod listener;
mod logging;
pub mod metadata;
mod otel;
mod outcome;
pub mod producer;
mod record;
pub mod serde;
mod settings;
mod subscription;
pub mod supervision;
mod task_sink;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
pub mod transactional;

pub use committer::CommittableOffsetBatch;
pub use consumer::{
    CommitOutcome, CommittableMessage, CommittableOffset, ConsumerMetrics, Control, DrainReport,
    Drained, DrainingControl, PartitionOffset, StartOffset, Subscription, TypedMessage,
};
pub use error::{Coordinates, Error, ErrorKind, Report, Result};
pub use record::{ConsumerRecord, Header, ProducerRecord, Timestamp, Topic, TopicPartition};
pub use serde::{TypedProducerRecord, TypedRecord};
pub use settings::{
    AutoOffsetReset, BearerToken, CommitDelivery, CommitWhen, CommitterSettings, ConsumerSettings,
    ProducerSettings, Security,
};
