use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Sink;

use super::run::Run;
use crate::consumer::CommittableOffset;
use crate::error::{Error, Result};
use crate::task_sink::TaskSink;

/// The sink returned by [`sink`](super::sink).
///
/// Clones share one committer (one task, one batch): give each partition
/// sub-stream of a partitioned source its own clone. Closing a clone hands
/// over its offsets and returns; closing the last one waits until
/// everything is committed. A failure reaches every clone.
#[derive(Clone)]
#[must_use = "sinks do nothing unless offsets are sent to them"]
pub struct CommitterSink {
    inner: TaskSink<Run>,
    /// An offset is committable once received
    /// ([`CommitWhen::OffsetFirstObserved`](crate::CommitWhen::OffsetFirstObserved)):
    /// acknowledge it then.
    acknowledge_on_receipt: bool,
}

impl CommitterSink {
    pub(super) fn new(inner: TaskSink<Run>, acknowledge_on_receipt: bool) -> Self {
        CommitterSink {
            inner,
            acknowledge_on_receipt,
        }
    }
}

impl fmt::Debug for CommitterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitterSink")
            .field("buffered", &self.inner.buffered())
            .finish_non_exhaustive()
    }
}

// `poll_ready` and `start_send` run once per record, called from the
// caller's crate (its `forward`): marked `#[inline]`, with what they call,
// so they are inlined there (the `pipeline` benchmark: about 6 ns a record).
impl Sink<CommittableOffset> for CommitterSink {
    type Error = Error;

    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    /// Folds the offset into the run of its partition that the buffer ends
    /// with, or starts a run: no `Run` is built for an offset that folds.
    #[inline]
    fn start_send(self: Pin<&mut Self>, item: CommittableOffset) -> Result<()> {
        let this = self.get_mut();
        let acknowledged = this.acknowledge_on_receipt;
        if acknowledged {
            // Committable once received (see `Run::received`).
            let _ = item.next_to_commit();
        }
        this.inner.start_send_folding(|last| {
            let item = match last {
                Some(run) => run.absorb(item, acknowledged)?,
                None => item,
            };
            Some(Run::received(item, acknowledged))
        });
        Ok(())
    }

    /// Hands every buffered offset to the batching task. It does not force a
    /// commit: that happens by batch size, by interval, or on close.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Commits everything received and waits for the answers.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
