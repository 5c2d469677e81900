//! Consumer sources: Kafka topics as backpressured streams.
//!
//! - [`plain_source`]: a stream of [`ConsumerRecord`](crate::ConsumerRecord)s; offsets are not
//!   committed unless you enable librdkafka's auto commit.
//! - [`committable_source`]: a stream of [`CommittableMessage`]s, each a record
//!   and the [`CommittableOffset`] to commit once it is processed, for
//!   at-least-once delivery with [`committer::sink`](crate::committer::sink).
//!
//! Both return a [`Control`] to stop, drain and shut the consumer down.

mod control;
mod offset;
mod source;
mod subscription;

pub use control::{
    CommitOutcome, ConsumerMetrics, Control, DrainReport, PartitionOffset, Uncommitted,
};
pub use offset::{CommittableMessage, CommittableOffset};
pub use source::{CommittableSource, PlainSource};
pub use subscription::{StartOffset, Subscription};

use crate::driver::{self, EngineConfig};
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
/// engine has fetched, which is at-most-once for records still in flight).
pub fn plain_source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(PlainSource, Control)> {
    let (handle, rx) = driver::spawn(EngineConfig {
        settings,
        subscription,
        committable: false,
    })?;
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
    let (handle, rx) = driver::spawn(EngineConfig {
        settings,
        subscription,
        committable: true,
    })?;
    Ok((
        CommittableSource::new(handle.clone(), rx),
        Control::new(handle),
    ))
}
