//! Exactly-once consume-transform-produce through Kafka transactions.
//!
//! [`source`] reads with `isolation.level=read_committed` and hands out
//! [`CommittableMessage`]s; [`sink`] produces each envelope's records inside
//! a transaction and adds the envelope's consumed offset to the same
//! transaction with the consumer's group metadata (KIP-447), committing
//! every [`commit_interval`](TransactionalSettings::commit_interval) (100 ms
//! by default, as Alpakka's `eos-commit-interval`) or when
//! [`max_records`](TransactionalSettings::max_records) are in the open
//! transaction. Output records and input offsets become visible together
//! or not at all: a `read_committed` reader of the output sees every input
//! record's output exactly once, whatever crashes in between.
//!
//! - **Rebalances.** When the consumer's partitions are being revoked, the
//!   sink commits its open transaction at once, and the consumer holds the
//!   revocation until the transaction's offsets are recorded as committed
//!   (rebalance-safe commits, bounded by `revoke_timeout`). The broker
//!   refuses a transaction's offsets from a group generation that is no
//!   longer current, so a transaction never spans two owners of a
//!   partition: it aborts, and the next owner reads those records again.
//! - **Failures.** Any error aborts the open transaction and ends the
//!   pipeline with it ([`ErrorKind::Transaction`]); a fenced producer
//!   ([`ErrorKind::ProducerFenced`]: another instance with the same
//!   transactional id, or a newer group generation) is fatal. The consumer
//!   hears of it too: its stream ends with the error.
//! - **Shutdown.** Closing the sink commits the open transaction;
//!   `DrainingControl::drain_and_shutdown` stops the source, lets the
//!   pipeline close its sink (committing the last transaction) and closes
//!   the consumer.
//! - **Transactional ids.** With KIP-447 the group generation fences
//!   zombies of a consumer, so one producer per consumer is enough, and
//!   its transactional id needs to be stable per instance of your service
//!   (across restarts) and unique among the instances running: for example
//!   `"{application}-{instance}"` with the instance a StatefulSet pod
//!   ordinal or a host name. A restarted instance with the same id fences
//!   the old one's producer and aborts its open transaction at
//!   `init_transactions`.
//!
//! [`flow`] does what [`sink`] does and passes each envelope's offset on
//! once its transaction committed. [`partitioned_source`] gives a
//! `read_committed` sub-stream per partition; merge them into one sink (or
//! flow): one transaction holds the offsets of every partition of the
//! consumer. [`TransactionalProducer`] writes to several topics atomically
//! without a source.
//!
//! Needs a broker with transactions (Apache Kafka 2.5 or later for
//! KIP-447). The embedded broker runs the transaction API but does not
//! emulate `read_committed`: aborted records are delivered to its readers.
//!
//! [`CommittableMessage`]: crate::consumer::CommittableMessage
//! [`ErrorKind::Transaction`]: crate::ErrorKind::Transaction
//! [`ErrorKind::ProducerFenced`]: crate::ErrorKind::ProducerFenced

mod flow;
mod producer;
mod settings;
mod sink;

pub use flow::{flow, TransactionalFlow};
pub use producer::{Transaction, TransactionalProducer};
pub use settings::TransactionalSettings;
pub use sink::{sink, TransactionalSink};

use crate::consumer::{self, CommittablePartitionedSource, CommittableSource, Control};
use crate::error::Result;
use crate::settings::ConsumerSettings;
use crate::subscription::Subscription;

/// The consumer settings of a transactional source: `read_committed`, and
/// no out-of-order commits. A transaction commits its records' outputs with
/// their input offsets; an offset held back behind a slower record would
/// leave outputs committed whose input is read again after a crash (the
/// duplicates exactly-once rules out), so records must reach the sink in
/// their partition's order.
fn transactional_settings(settings: ConsumerSettings) -> Result<ConsumerSettings> {
    if settings.max_outstanding.is_some() {
        return Err(crate::error::Error::config(
            "invalid setting `out_of_order_commits` for a transactional source: a transaction \
             commits its outputs with their input offsets, so records must reach the sink in \
             their partition's order",
        ));
    }
    Ok(settings.property("isolation.level", "read_committed"))
}

/// A committable source that reads only committed records
/// (`isolation.level=read_committed`): what a transactional pipeline
/// consumes. Commit its offsets through [`sink`], not through a committer.
///
/// Records must reach the sink in their partition's order (`then`, not
/// `buffer_unordered`): the sink commits the offset after the newest record
/// it received of each partition. Settings with
/// [`out_of_order_commits`](ConsumerSettings::out_of_order_commits) are
/// refused.
pub fn source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(CommittableSource, Control)> {
    consumer::committable_source(transactional_settings(settings)?, subscription)
}

/// A committable partitioned source that reads only committed records: a
/// sub-stream per assigned partition. Send every sub-stream's envelopes to
/// one [`sink`] (for example `flatten_unordered` over the sub-streams, or a
/// channel): a sink's transaction commits the offsets of all of them.
///
/// As for [`source`], records must reach the sink in their partition's
/// order, and settings with out-of-order commits are refused.
pub fn partitioned_source(
    settings: ConsumerSettings,
    subscription: Subscription,
) -> Result<(CommittablePartitionedSource, Control)> {
    consumer::committable_partitioned_source(transactional_settings(settings)?, subscription)
}
