use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc::Receiver;

use super::{CommittableMessage, CommittableOffset};
use crate::driver::{Batch, Command, EngineHandle, EngineState, PartitionHandle};
use crate::error::Result;
use crate::record::{ConsumerRecord, TopicPartition};

/// The part shared by every source: batches in, records out one at a time.
struct SourceCore {
    rx: Receiver<Batch>,
    current: Option<(Arc<PartitionHandle>, std::vec::IntoIter<ConsumerRecord>)>,
    handle: Arc<EngineHandle>,
    finished: bool,
}

impl SourceCore {
    fn new(handle: Arc<EngineHandle>, rx: Receiver<Batch>) -> Self {
        SourceCore {
            rx,
            current: None,
            handle,
            finished: false,
        }
    }

    fn poll_next_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(ConsumerRecord, &Arc<PartitionHandle>) -> T,
    ) -> Poll<Option<Result<T>>> {
        loop {
            if let Some((partition, records)) = &mut self.current {
                if let Some(record) = records.next() {
                    return Poll::Ready(Some(Ok(f(record, partition))));
                }
                self.current = None;
            }
            if self.finished {
                return Poll::Ready(None);
            }
            // Out-of-order commits: wait while too many records handed out
            // are not yet covered by a committable watermark.
            if let Some(outstanding) = &self.handle.link.shared.outstanding {
                if outstanding.at_limit() {
                    outstanding.waker.register(cx.waker());
                    if outstanding.at_limit() {
                        return Poll::Pending;
                    }
                }
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    // Room in the channel: let the engine fetch more.
                    self.handle.link.wake();
                    if let (Some(tracker), Some(outstanding)) = (
                        &batch.partition.tracker,
                        &self.handle.link.shared.outstanding,
                    ) {
                        tracker.register(batch.records.iter().map(|r| r.offset), outstanding);
                    }
                    self.current = Some((batch.partition, batch.records.into_iter()));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    // The engine ended the stream: a failure is reported once.
                    let state = self.handle.link.shared.state.borrow().clone();
                    if let EngineState::Closed(Err(e)) = state {
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SourceCore {
    fn drop(&mut self) {
        // Tell the engine which records it handed over were never pulled, so
        // a drain does not wait for their commits. Never blocks.
        let mut unpulled: Vec<(TopicPartition, i64)> = Vec::new();
        let mut note = |tp: &TopicPartition, offset: i64| {
            if !unpulled.iter().any(|(t, _)| t == tp) {
                unpulled.push((tp.clone(), offset));
            }
        };
        if let Some((partition, records)) = &mut self.current {
            if let Some(r) = records.as_slice().first() {
                note(&partition.tp, r.offset);
            }
        }
        self.rx.close();
        while let Ok(batch) = self.rx.try_recv() {
            if let Some(r) = batch.records.first() {
                note(&batch.partition.tp, r.offset);
            }
        }
        let _ = self.handle.link.send(Command::SourceDropped { unpulled });
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
    pub(crate) fn new(handle: Arc<EngineHandle>, rx: Receiver<Batch>) -> Self {
        PlainSource {
            core: SourceCore::new(handle, rx),
        }
    }
}

impl Stream for PlainSource {
    type Item = Result<ConsumerRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().core.poll_next_with(cx, |record, _| record)
    }
}

impl fmt::Debug for PlainSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainSource")
            .field("engine", &self.core.handle.link.id)
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
    pub(crate) fn new(handle: Arc<EngineHandle>, rx: Receiver<Batch>) -> Self {
        CommittableSource {
            core: SourceCore::new(handle, rx),
        }
    }
}

impl Stream for CommittableSource {
    type Item = Result<CommittableMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().core.poll_next_with(cx, |record, partition| {
            let offset = CommittableOffset {
                partition: partition.clone(),
                offset: record.offset,
            };
            CommittableMessage { record, offset }
        })
    }
}

impl fmt::Debug for CommittableSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommittableSource")
            .field("engine", &self.core.handle.link.id)
            .finish()
    }
}
