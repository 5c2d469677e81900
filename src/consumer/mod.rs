//! Consumer sources: Kafka topics as backpressured streams.
//!
//! - [`plain_source`]: a stream of [`ConsumerRecord`](crate::ConsumerRecord)s; offsets are not
//!   committed unless you enable librdkafka's auto commit.
//! - [`committable_source`]: a stream of [`CommittableMessage`]s, each a record
//!   and the [`CommittableOffset`] to commit once it is processed, for
//!   at-least-once delivery with [`committer::sink`](crate::committer::sink).
//!
//! - [`plain_partitioned_source`] and [`committable_partitioned_source`]: a
//!   stream of `(partition, sub-stream)` pairs, one sub-stream per assigned
//!   partition, each with its own backpressure.
//!
//! Each returns a [`Control`] to stop, drain and shut the consumer down;
//! [`DrainingControl`] pairs it with the pipeline's task for the one
//! shutdown order that loses nothing.
//! Committable sources hold a revocation until the records they handed out
//! are committed ([rebalance-safe commits](ConsumerSettings::rebalance_safe_commits));
//! a [`RebalanceListener`] hears every rebalance and may choose start offsets.

mod control;
mod draining;
mod offset;
mod source;
mod typed;

pub use crate::listener::RebalanceListener;
pub use crate::outcome::{
    CommitOutcome, ConsumerHealth, ConsumerMetrics, DrainReport, PartitionOffset, Uncommitted,
};
pub use crate::subscription::{StartOffset, Subscription};
pub use control::{Control, Statistics};
pub use draining::{shutdown_signal, Drained, DrainingControl};
pub use offset::{CommittableMessage, CommittableOffset};
pub use source::{
    CommittablePartitionedSource, CommittableSource, PartitionedSource, PlainPartitionedSource,
    PlainSource,
};
pub use typed::{Deserialize, DeserializeExt, Deserialized, TypedMessage};

use std::sync::Arc;

use crate::driver::{self, DriverConfig, DriverHandle, SourceRx, SubSource};
use crate::error::Result;
use crate::settings::ConsumerSettings;

/// A stream of records from `subscription`, and its [`Control`].
///
/// The settings are validated here: a bad key or value fails with an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming it. The
/// consumer runs on a thread of its own; the stream can be polled from any
/// executor. If no broker answers within
/// [`connect_timeout`](ConsumerSettings::connect_timeout), the stream ends
/// with an [`ErrorKind::BrokerUnreachable`](crate::ErrorKind::BrokerUnreachable) error.
///
/// Offsets are not committed: `enable.auto.commit` is off unless you set it
/// with [`ConsumerSettings::property`] (then librdkafka commits what the
/// consumer has fetched, which is at-most-once for records still in flight).
pub fn plain_source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(PlainSource, Control)> {
    let (handle, outlet) = driver::spawn(DriverConfig {
        settings,
        subscription,
        committable: false,
        partitioned: false,
    })?;
    let SourceRx::Single(rx) = outlet else {
        unreachable!("a single stream was asked for")
    };
    Ok((PlainSource::new(handle.clone(), rx), Control::new(handle)))
}

/// A stream of records with the offsets to commit after processing them, and
/// its [`Control`].
///
/// Needs a consumer group ([`ConsumerSettings::group_id`]). Commit the offsets
/// with [`committer::sink`](crate::committer::sink) once each record is
/// processed: a record whose offset was not committed is delivered again after
/// a restart or a rebalance, so nothing is lost (at-least-once).
pub fn committable_source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(CommittableSource, Control)> {
    let (handle, outlet) = driver::spawn(DriverConfig {
        settings,
        subscription,
        committable: true,
        partitioned: false,
    })?;
    let SourceRx::Single(rx) = outlet else {
        unreachable!("a single stream was asked for")
    };
    Ok((
        CommittableSource::new(handle.clone(), rx),
        Control::new(handle),
    ))
}

/// A stream of `(partition, sub-stream)` pairs, one per assigned partition,
/// each sub-stream a [`PlainSource`] of that partition alone, and the
/// [`Control`].
///
/// Each sub-stream has its own buffer
/// ([`buffer_batches`](ConsumerSettings::buffer_batches) batches): a
/// partition whose sub-stream is slow or not pulled holds back only itself,
/// and the consumer stays in its group. A sub-stream ends when its partition
/// is revoked or lost, or when the consumer stops; the partition's next
/// assignment comes as a new pair.
pub fn plain_partitioned_source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(PlainPartitionedSource, Control)> {
    partitioned(settings, subscription, false, PlainSource::sub_stream)
}

/// A stream of `(partition, sub-stream)` pairs, one per assigned partition,
/// each sub-stream a [`CommittableSource`] of that partition alone, and the
/// [`Control`]. Process each sub-stream in its own task (or with
/// `flatten_unordered`) and commit its offsets with
/// [`committer::sink`](crate::committer::sink).
///
/// Backpressure and sub-stream ends as for [`plain_partitioned_source`].
/// With [rebalance-safe commits](ConsumerSettings::rebalance_safe_commits)
/// (the default) a revoked partition's sub-stream ends at once and the
/// partition is released only once the records it already handed out are
/// committed, or the revoke timeout passed.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use futures::StreamExt;
/// use reactive_kafka::{committer, consumer, CommitterSettings, ConsumerSettings, Subscription};
///
/// let settings = ConsumerSettings::new("127.0.0.1:9092").group_id("billing");
/// let (mut partitions, control) =
///     consumer::committable_partitioned_source(settings, Subscription::topics(["orders"]))?;
/// while let Some(next) = partitions.next().await {
///     let (tp, source) = next?;
///     tokio::spawn(async move {
///         let done = source
///             .map(|msg| {
///                 let msg = msg?;
///                 // process msg.record of partition `tp` here
///                 Ok(msg.offset)
///             })
///             .forward(committer::sink(CommitterSettings::default())?)
///             .await;
///         if let Err(e) = done {
///             eprintln!("{tp}: {e}");
///         }
///         Ok::<_, reactive_kafka::Error>(())
///     });
/// }
/// control.shutdown().await
/// # }
/// ```
pub fn committable_partitioned_source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(CommittablePartitionedSource, Control)> {
    partitioned(settings, subscription, true, CommittableSource::sub_stream)
}

fn partitioned<S>(
    settings: ConsumerSettings,
    subscription: Subscription,
    committable: bool,
    make: fn(Arc<DriverHandle>, SubSource) -> S,
) -> Result<(PartitionedSource<S>, Control)> {
    let (handle, outlet) = driver::spawn(DriverConfig {
        settings,
        subscription,
        committable,
        partitioned: true,
    })?;
    let SourceRx::Partitioned(rx) = outlet else {
        unreachable!("sub-streams were asked for")
    };
    Ok((
        PartitionedSource::new(handle.clone(), rx, make),
        Control::new(handle),
    ))
}
