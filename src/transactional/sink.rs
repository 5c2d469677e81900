use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Sink, StreamExt};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use super::producer::TxnCore;
use super::settings::TransactionalSettings;
use crate::consumer::CommittableOffset;
use crate::counted::Counted;
use crate::driver::{self, CommitOffsets, PartitionHandle};
use crate::error::{Error, Result};
use crate::producer::Envelope;
use crate::settings::ProducerSettings;
use crate::task_sink::{Pace, TaskSink};

/// The sink returned by [`sink`]: produces envelopes inside transactions
/// with their consumed offsets (see the [module docs](super)).
///
/// Closing it commits the open transaction and waits for that; dropping it
/// without a close aborts the open transaction. The first
/// failure aborts the open transaction, ends the sink with the error and
/// ends the consumers whose offsets it held.
#[must_use = "sinks do nothing unless envelopes are sent to them"]
pub struct TransactionalSink {
    inner: TaskSink<Envelope<CommittableOffset>>,
    /// Set by `poll_close`: the task commits the open transaction when its
    /// input ends after a close, and aborts it when the sink was dropped.
    closing: Arc<AtomicBool>,
}

impl fmt::Debug for TransactionalSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalSink")
            .field("buffered", &self.inner.buffered())
            .finish_non_exhaustive()
    }
}

/// A sink that produces each envelope's records and commits its offset in
/// one Kafka transaction (exactly once; see the [module docs](super)).
/// Must be created inside a tokio runtime; the transactions are
/// initialised (an earlier producer with the same id fenced) before the
/// first envelope is taken.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use futures::StreamExt;
/// use reactive_kafka::producer::Envelope;
/// use reactive_kafka::transactional::{self, TransactionalSettings};
/// use reactive_kafka::{ConsumerSettings, ProducerRecord, ProducerSettings, Subscription};
///
/// let brokers = "127.0.0.1:9092";
/// let (source, control) = transactional::source(
///     ConsumerSettings::new(brokers).group_id("uppercase"),
///     Subscription::topics(["words"]),
/// )?;
/// let sink = transactional::sink(
///     ProducerSettings::new(brokers),
///     TransactionalSettings::new("uppercase-0"),
/// )?;
/// source
///     .map(|m| {
///         let m = m?;
///         let upper = m.record.payload().unwrap_or_default().to_ascii_uppercase();
///         Ok(Envelope::message(ProducerRecord::new("WORDS").payload(upper), m.offset))
///     })
///     .forward(sink)
///     .await?;
/// # drop(control);
/// # Ok(())
/// # }
/// ```
pub fn sink(producer: ProducerSettings, tx: TransactionalSettings) -> Result<TransactionalSink> {
    let txn = TxnCore::new(&producer, &tx)?;
    let closing = Arc::new(AtomicBool::new(false));
    let flag = closing.clone();
    let inner = TaskSink::spawn("transactional::sink", Pace::new(256), move |rx| {
        run(txn, tx, rx.map(Ok), flag, None)
    })?;
    Ok(TransactionalSink { inner, closing })
}

/// The open transaction: the next offset to commit per partition
/// assignment, and how many records it holds.
#[derive(Default)]
struct Open {
    offsets: CommitOffsets,
    records: usize,
    /// Each envelope's offset, in order, for a flow's output.
    passed: Vec<CommittableOffset>,
}

impl Open {
    fn add(&mut self, offset: &CommittableOffset) {
        let next = offset.offset + 1;
        // Each batch of records has its own handle: match the partition
        // and its assignment.
        let p = &offset.partition;
        match self
            .offsets
            .iter_mut()
            .find(|(h, _)| h.same_partition(p) && h.generation() == p.generation())
        {
            Some((_, n)) => *n = (*n).max(next),
            None => self.offsets.push((offset.partition.clone(), next)),
        }
    }
}

/// Fails on an offset from a consumer with out-of-order commits (made by
/// `consumer::committable_source`, as `transactional::source` refuses the
/// setting): the sink commits the offset after each partition's newest
/// record, which would pass records still being processed, and it never
/// acknowledges offsets, so such a source would wait at its limit for good.
fn refuse_out_of_order(offset: &CommittableOffset) -> Result<()> {
    if offset.partition.tracks_acknowledgements() {
        return Err(Error::config(format!(
            "a transactional sink got an offset of {} from a consumer with \
             `out_of_order_commits`: a transaction commits its outputs with their input offsets, \
             so records must reach the sink in their partition's order",
            offset.partition.tp()
        )));
    }
    Ok(())
}

/// What receives each envelope's offset once its transaction committed
/// (a flow's output).
pub(crate) type Committed = tokio::sync::mpsc::Sender<Result<CommittableOffset>>;

/// The transaction loop of a sink or flow: envelopes from `input` (an
/// error item fails it), committed when the interval passes, at
/// `max_records`, while the consumer is revoking, and when the input ends
/// after `closing` was set (else aborted); each committed envelope's offset
/// goes to `committed`, if given.
pub(crate) async fn run<S>(
    txn: TxnCore,
    tx: TransactionalSettings,
    mut input: S,
    closing: Arc<AtomicBool>,
    committed: Option<Committed>,
) -> Result<()>
where
    S: futures::Stream<Item = Result<Vec<Envelope<CommittableOffset>>>> + Unpin,
{
    txn.init().await?;
    let mut open: Option<Open> = None;
    let mut deadline = Instant::now();
    // The revocations of the consumer the offsets come from, and one of
    // its partitions (to end it when this fails).
    let mut revoking: Option<watch::Receiver<usize>> = None;
    let mut consumer: Option<Counted<PartitionHandle>> = None;
    let result: Result<()> = async {
        loop {
            let commit_now = tokio::select! {
                biased;
                _ = revoked(&mut revoking), if open.is_some() => true,
                _ = tokio::time::sleep_until(deadline), if open.is_some() => true,
                chunk = input.next() => match chunk {
                    Some(Err(e)) => return Err(e),
                    Some(Ok(envelopes)) => {
                        for envelope in envelopes {
                            refuse_out_of_order(envelope.pass_through_ref())?;
                            if open.is_none() {
                                txn.begin()?;
                                open = Some(Open::default());
                                deadline = Instant::now() + tx.commit_interval;
                            }
                            let o = open.as_mut().expect("opened above");
                            let offset = match envelope {
                                Envelope::Message { record, pass_through } => {
                                    txn.send(&record).await?;
                                    o.records += 1;
                                    pass_through
                                }
                                Envelope::MultiMessage { records, pass_through } => {
                                    for record in &records {
                                        txn.send(record).await?;
                                    }
                                    o.records += records.len();
                                    pass_through
                                }
                                Envelope::PassThrough(pass_through) => pass_through,
                            };
                            o.add(&offset);
                            if committed.is_some() {
                                o.passed.push(offset.clone());
                            }
                            if revoking.is_none() {
                                revoking = Some(offset.partition.revoking());
                                consumer = Some(offset.partition.clone());
                            }
                            if o.records >= tx.max_records {
                                commit(&txn, open.take().expect("open"), committed.as_ref()).await?;
                            }
                        }
                        false
                    }
                    None if closing.load(Ordering::Acquire) => {
                        if let Some(o) = open.take() {
                            commit(&txn, o, committed.as_ref()).await?;
                        }
                        return Ok(());
                    }
                    None => {
                        // Dropped without a close: what is open is not
                        // known to be complete; its records are read again.
                        if open.take().is_some() {
                            tracing::info!("transactional sink dropped without close: aborting the open transaction");
                            txn.abort().await?;
                        }
                        return Ok(());
                    }
                },
            };
            if commit_now {
                if let Some(o) = open.take() {
                    commit(&txn, o, committed.as_ref()).await?;
                }
            }
        }
    }
    .await;
    if let Err(err) = &result {
        // Whatever failed, the transaction that was open is not committed.
        if !err.is_fatal() {
            if let Err(abort) = txn.abort().await {
                tracing::warn!(error = %abort.report(), "could not abort the transaction");
            }
        }
        tracing::error!(error = %err.report(), "transactional sink failed; transaction aborted");
        if let Some(h) = &consumer {
            h.fail_consumer(err.clone());
        }
    }
    result
}

/// Resolves while a revocation of the consumer waits for commits.
async fn revoked(revoking: &mut Option<watch::Receiver<usize>>) {
    match revoking {
        Some(rx) => {
            if rx.wait_for(|n| *n > 0).await.is_err() {
                // The consumer is gone: nothing to wait for.
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Adds the offsets to the transaction with their group's metadata,
/// commits it, and tells the consumers.
async fn commit(txn: &TxnCore, open: Open, committed: Option<&Committed>) -> Result<()> {
    // One call per consumer (group) whose offsets the transaction holds.
    for group in &driver::by_consumer(open.offsets.clone()) {
        let metadata = driver::group_metadata(&group[0].0).await?;
        // One entry per partition (a partition of two assignments: the later
        // offset; the broker refuses the past generation's anyway).
        let mut next_of: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
        for (h, next) in group {
            let e = next_of
                .entry((&h.tp().topic, h.tp().partition))
                .or_insert(*next);
            *e = (*e).max(*next);
        }
        let mut tpl = TopicPartitionList::with_capacity(next_of.len());
        for ((topic, partition), next) in next_of {
            tpl.add_partition_offset(topic, partition, Offset::Offset(next))
                .map_err(|e| txn.error("could not list the offsets", e))?;
        }
        txn.send_offsets(tpl, metadata).await?;
    }
    txn.commit().await?;
    let outcome = driver::committed_in_transaction(open.offsets).await?;
    if !outcome.stale.is_empty() {
        tracing::info!(stale = ?outcome.stale, "transaction committed offsets of partitions revoked meanwhile");
    }
    if let Some(out) = committed {
        for offset in open.passed {
            // A flow dropped downstream: nothing is waiting for these.
            if out.send(Ok(offset)).await.is_err() {
                break;
            }
        }
    }
    Ok(())
}

impl Sink<Envelope<CommittableOffset>> for TransactionalSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Envelope<CommittableOffset>) -> Result<()> {
        Pin::new(&mut self.get_mut().inner).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Commits the open transaction and waits for that.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.closing.store(true, Ordering::Release);
        Pin::new(&mut this.inner).poll_close(cx)
    }
}
