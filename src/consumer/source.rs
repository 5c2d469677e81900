use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

use super::{CommittableMessage, CommittableOffset};
use crate::counted::{Counted, Refs};
use crate::driver::{
    DriverHandle, DriverState, HandOver, HandedOut, PartitionHandle, RecordBatch, SourceScope,
    SubSource,
};
use crate::error::Result;
use crate::record::{ConsumerRecord, TopicPartition};

/// The part shared by every source: batches in, records out one at a time.
pub(crate) struct SourceCore {
    rx: Receiver<RecordBatch>,
    /// The batch being handed out: its handle, the records left, and the
    /// references to the handle for their offsets (taken for the whole
    /// batch at its first offset, committable sources only), given back
    /// with the batch.
    current: Option<(
        Counted<PartitionHandle>,
        std::vec::IntoIter<ConsumerRecord>,
        Refs<PartitionHandle>,
    )>,
    /// How many of the current batch's next records have their room taken
    /// (out-of-order commits) and may be handed out without asking again;
    /// without the limit, the whole batch.
    reserved: usize,
    handle: Arc<DriverHandle>,
    finished: bool,
    /// A partition's sub-stream: the assignment it serves.
    partition: Option<Arc<HandOver>>,
    /// True while it holds records of a batch not yet handed out (told to
    /// the driver on each change, for the stall watchdog).
    holding: bool,
    /// Records this source handed out, for the consumer's metrics.
    handed_out: Arc<HandedOut>,
}

/// Whether `handover` was released, asked after registering to wait for
/// room: the fence pairs with the one in the tracker's close, so that
/// either the close's wake sees this waiter or this sees the release.
fn released_after_waiting(handover: &HandOver) -> bool {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    handover.is_released()
}

impl SourceCore {
    pub(crate) fn new(
        handle: Arc<DriverHandle>,
        rx: Receiver<RecordBatch>,
        partition: Option<Arc<HandOver>>,
    ) -> Self {
        SourceCore {
            rx,
            current: None,
            reserved: 0,
            handed_out: handle.open_handed_out(),
            handle,
            finished: false,
            partition,
            holding: false,
        }
    }

    fn set_holding(&mut self, holding: bool) {
        if self.holding != holding {
            self.holding = holding;
            self.handle.holding(holding);
        }
    }

    /// The next record as an item: `before` makes what goes with it (from
    /// its offset and its batch's handle), `f` joins the record to that.
    fn poll_next_with<P, T>(
        &mut self,
        cx: &mut Context<'_>,
        mut before: impl FnMut(i64, OffsetHandle<'_>) -> P,
        f: impl FnOnce(ConsumerRecord, P) -> T,
    ) -> Poll<Option<Result<T>>> {
        self.handle.pulled();
        loop {
            if let Some((partition, records, refs)) = &mut self.current {
                // Out-of-order commits: a record is handed out only with room
                // under the limit, taken for as many of the batch's next
                // records as fit (registered then, as handed out). A revoked
                // assignment's records are not handed out: no room is waited
                // for them.
                if self.reserved == 0 && records.len() > 0 && !partition.handover().is_released() {
                    match self.handle.poll_reserve(records.len(), cx) {
                        Poll::Ready(n) => {
                            self.reserved = n;
                            partition
                                .register_handed(records.as_slice()[..n].iter().map(|r| r.offset));
                        }
                        // Revoked meanwhile (its wake may have come before
                        // this waker was registered): drop the batch below.
                        Poll::Pending if released_after_waiting(partition.handover()) => {}
                        Poll::Pending => return Poll::Pending,
                    }
                }
                // Nothing reserved: the batch is done, or revoked. A record
                // is registered as handed out before it is returned, so a
                // drain or a revocation knows what to wait for, and not
                // handed out once released (revoked): the rest belongs to
                // the next owner. The offset is read where the record lies,
                // before the record is moved out: read from the moved
                // record, it made the compiler copy the record once more,
                // through the stack (both sources spent 2 to 8 % more CPU
                // per record, pinned at 100 B).
                let next = records.as_slice().first().map(|r| r.offset);
                let reserved = self.reserved > 0;
                if let Some(offset) = next.filter(|&o| reserved && partition.handover().hand(o)) {
                    // What goes with the record (a committable source's
                    // offset) is made before the record is moved out, so
                    // that the record moves once, into the item: made
                    // after, the record waited on the stack meanwhile (the
                    // committable pipeline's thread spent 13 ns a record
                    // more, pinned at 100 B).
                    let handle = OffsetHandle {
                        partition,
                        refs,
                        left: records.len() - 1,
                    };
                    let pre = before(offset, handle);
                    if let Some(record) = records.next() {
                        self.reserved -= 1;
                        // Records left in this batch wait for the next pull.
                        let more = records.len() > 0;
                        let item = f(record, pre);
                        self.set_holding(more);
                        self.handed_out.one();
                        return Poll::Ready(Some(Ok(item)));
                    }
                }
                // The rest of a revoked assignment's batch goes (its
                // acknowledgements were closed with it).
                self.current = None;
                self.reserved = 0;
                self.set_holding(false);
            }
            if self.finished {
                return Poll::Ready(None);
            }
            // Out-of-order commits: wait while too many records handed out
            // are not yet covered by a committable watermark; a sub-stream
            // whose assignment was revoked only ends (the driver closes its
            // channel), whatever room the partitions still assigned hold.
            let revoked = self.partition.as_ref().is_some_and(|h| h.is_released());
            if !revoked
                && self.handle.poll_room(cx).is_pending()
                && !self
                    .partition
                    .as_deref()
                    .is_some_and(released_after_waiting)
            {
                return Poll::Pending;
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    // Room in the channel: let the driver fetch more.
                    self.handle.wake();
                    if batch.partition.handover().is_released() {
                        continue; // revoked while it waited here
                    }
                    self.current =
                        Some((batch.partition, batch.records.into_iter(), Refs::default()));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    // The driver ended the stream: a failure is reported once.
                    if let DriverState::Closed(Err(e)) = self.handle.state_now() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The current batch's partition handle, for a record's offset.
pub(crate) struct OffsetHandle<'a> {
    partition: &'a Counted<PartitionHandle>,
    refs: &'a mut Refs<PartitionHandle>,
    /// Records of the batch after this one.
    left: usize,
}

impl OffsetHandle<'_> {
    /// A reference to the handle, one of those the source took for the
    /// batch: the first record's offset takes them for all the batch's
    /// records in one atomic add, instead of one per record (with the
    /// committer's side, 6 to 7 ns a record less on the pipeline's thread,
    /// as measured).
    pub(crate) fn get(self) -> Counted<PartitionHandle> {
        self.refs.take_of(self.partition, self.left + 1)
    }
}

impl Drop for SourceCore {
    fn drop(&mut self) {
        // Stop delivering to this stream. Records it held but never returned
        // were never handed out, so nothing waits for them. Never blocks
        // (the handed-out counts' lock is held only to add or sum them).
        self.set_holding(false);
        self.handle.close_handed_out(&self.handed_out);
        let scope = match self.partition.take() {
            Some(a) => SourceScope::Partition(a),
            None => SourceScope::All,
        };
        self.handle.source_dropped(scope);
    }
}

/// The stream of [`plain_source`](super::plain_source): records, or the error
/// that ended the stream.
///
/// Cancel safety: `next()` is cancel safe; a record is only taken from the
/// stream when it is returned.
#[must_use = "streams do nothing unless polled"]
pub struct PlainSource {
    core: SourceCore,
}

impl PlainSource {
    pub(crate) fn new(handle: Arc<DriverHandle>, rx: Receiver<RecordBatch>) -> Self {
        PlainSource {
            core: SourceCore::new(handle, rx, None),
        }
    }
}

impl PlainSource {
    pub(crate) fn sub_stream(handle: Arc<DriverHandle>, sub: SubSource) -> Self {
        PlainSource {
            core: SourceCore::new(handle, sub.rx, Some(sub.handover)),
        }
    }
}

impl Stream for PlainSource {
    type Item = Result<ConsumerRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .core
            .poll_next_with(cx, |_, _| (), |record, ()| record)
    }
}

impl fmt::Debug for PlainSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainSource")
            .field("consumer", &self.core.handle.id())
            .finish()
    }
}

/// The stream of [`committable_source`](super::committable_source): records
/// with their offsets, or the error that ended the stream.
///
/// Cancel safety: `next()` is cancel safe; a record is only taken from the
/// stream when it is returned.
#[must_use = "streams do nothing unless polled"]
pub struct CommittableSource {
    core: SourceCore,
}

impl CommittableSource {
    pub(crate) fn new(handle: Arc<DriverHandle>, rx: Receiver<RecordBatch>) -> Self {
        CommittableSource {
            core: SourceCore::new(handle, rx, None),
        }
    }
}

impl CommittableSource {
    pub(crate) fn sub_stream(handle: Arc<DriverHandle>, sub: SubSource) -> Self {
        CommittableSource {
            core: SourceCore::new(handle, sub.rx, Some(sub.handover)),
        }
    }
}

impl Stream for CommittableSource {
    type Item = Result<CommittableMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().core.poll_next_with(
            cx,
            |offset, partition| CommittableOffset {
                partition: partition.get(),
                offset,
            },
            |record, offset| CommittableMessage { record, offset },
        )
    }
}

impl fmt::Debug for CommittableSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommittableSource")
            .field("consumer", &self.core.handle.id())
            .finish()
    }
}

/// The stream of a partitioned source: one `(partition, sub-stream)` pair
/// per assigned partition, in assignment order, then the error that ended
/// the consumer, if one did.
///
/// Each sub-stream is a [`PlainSource`] or [`CommittableSource`] of one
/// partition: it ends when the partition is revoked or lost, or when the
/// consumer stops. A sub-stream that is not pulled holds back only its own
/// partition. Dropping a sub-stream stops the delivery of that partition
/// until it is assigned again; the other partitions and rebalances go on.
#[must_use = "streams do nothing unless polled"]
pub struct PartitionedSource<S> {
    rx: UnboundedReceiver<SubSource>,
    handle: Arc<DriverHandle>,
    finished: bool,
    make: fn(Arc<DriverHandle>, SubSource) -> S,
}

/// The stream of [`plain_partitioned_source`](super::plain_partitioned_source).
pub type PlainPartitionedSource = PartitionedSource<PlainSource>;
/// The stream of [`committable_partitioned_source`](super::committable_partitioned_source).
pub type CommittablePartitionedSource = PartitionedSource<CommittableSource>;

impl<S> PartitionedSource<S> {
    pub(crate) fn new(
        handle: Arc<DriverHandle>,
        rx: UnboundedReceiver<SubSource>,
        make: fn(Arc<DriverHandle>, SubSource) -> S,
    ) -> Self {
        PartitionedSource {
            rx,
            handle,
            finished: false,
            make,
        }
    }
}

impl<S> Stream for PartitionedSource<S> {
    type Item = Result<(TopicPartition, S)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(sub)) => {
                let tp = sub.tp.clone();
                Poll::Ready(Some(Ok((tp, (this.make)(this.handle.clone(), sub)))))
            }
            Poll::Ready(None) => {
                this.finished = true;
                match this.handle.state_now() {
                    DriverState::Closed(Err(e)) => Poll::Ready(Some(Err(e))),
                    _ => Poll::Ready(None),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Drop for PartitionedSource<S> {
    fn drop(&mut self) {
        // No sub-streams for later assignments. Those announced but never
        // taken are dropped with the channel, which ends their delivery.
        self.handle.source_dropped(SourceScope::Assignments);
    }
}

impl<S> fmt::Debug for PartitionedSource<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedSource")
            .field("consumer", &self.handle.id())
            .finish()
    }
}
