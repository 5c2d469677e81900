//! A sink that hands its items, in chunks, to a task that does the work (and
//! may fail); closing it waits for the task. Used by the committer and the
//! committable producer sink.
//!
//! Clones share the task: each has its own buffer and its own slot in the
//! channel, and each hears of the task's failure. Closing a clone hands
//! over its items; closing the last one also waits for the task.
//!
//! An item may fold the next one into itself ([`Fold`]): the committer folds
//! the offsets of one partition into one, on the sending thread, so the task
//! does not touch every offset.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::channel::mpsc;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Sink};

use crate::error::{Error, Result};

/// What a [`TaskSink`] buffers.
pub(crate) trait Fold: Sized {
    /// Folds `next` into `self`, or gives it back to be buffered on its own
    /// (by default nothing folds).
    fn fold(&mut self, next: Self) -> Option<Self> {
        Some(next)
    }
}

/// Folds `item` into the last of `items`, or appends it.
pub(crate) fn fold_into<T: Fold>(items: &mut Vec<T>, item: T) {
    let left = match items.last_mut() {
        Some(last) => last.fold(item),
        None => Some(item),
    };
    if let Some(item) = left {
        items.push(item);
    }
}

pub(crate) struct TaskSink<T> {
    buf: Vec<T>,
    /// Items taken since the buffer was last handed over (folded ones too).
    taken: usize,
    /// Hands the buffer over once this many items were taken.
    chunk: usize,
    /// The length of the buffer last handed over: the next one's capacity.
    last_len: usize,
    tx: mpsc::Sender<Vec<T>>,
    /// How the task ended, for every clone.
    end: Shared<BoxFuture<'static, Result<()>>>,
    /// Set by the task as it ends (cheap to check per item).
    finished: Arc<AtomicBool>,
    /// Counts the clones: the last one to close waits for the task.
    clones: Arc<()>,
    result: Option<Result<()>>,
}

impl<T> Clone for TaskSink<T> {
    fn clone(&self) -> Self {
        TaskSink {
            buf: Vec::new(),
            taken: 0,
            chunk: self.chunk,
            last_len: 0,
            tx: self.tx.clone(),
            end: self.end.clone(),
            finished: self.finished.clone(),
            clones: self.clones.clone(),
            result: None,
        }
    }
}

impl<T: Send + 'static> TaskSink<T> {
    /// Spawns `work` on the current tokio runtime with the receiving end of
    /// the channel. Fails outside a runtime.
    pub(crate) fn spawn<F, Fut>(name: &str, chunk: usize, work: F) -> Result<Self>
    where
        F: FnOnce(mpsc::Receiver<Vec<T>>) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config(format!("{name} must be created inside a tokio runtime")))?;
        let (tx, rx) = mpsc::channel(4);
        let finished = Arc::new(AtomicBool::new(false));
        let work = work(rx);
        let task = {
            let finished = finished.clone();
            runtime.spawn(async move {
                let result = work.await;
                finished.store(true, Ordering::Release);
                result
            })
        };
        let end = async move {
            match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::closed(format!("the task ended abnormally: {e}"))),
            }
        }
        .boxed()
        .shared();
        Ok(TaskSink {
            buf: Vec::new(),
            taken: 0,
            chunk,
            last_len: 0,
            tx,
            end,
            finished,
            clones: Arc::new(()),
            result: None,
        })
    }
}

impl<T> TaskSink<T> {
    /// Items taken and not yet handed to the task.
    pub(crate) fn buffered(&self) -> usize {
        self.taken
    }

    /// Waits for the task to end and returns how it ended.
    fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.result.is_none() {
            self.result = Some(ready!(self.end.poll_unpin(cx)));
        }
        Poll::Ready(self.result.clone().unwrap_or(Ok(())))
    }

    /// The task stopped taking items, so it ended: report why.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_task(cx)
            .map(|r| r.and(Err(Error::closed("the sink's task has stopped"))))
    }

    /// Ready with the task's failure once it ended before the sink was
    /// closed; otherwise pending, with `cx` woken when the task ends.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.poll_stopped(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Pending,
        }
    }

    /// True once the task ended (an atomic load: cheap enough per item).
    fn ended(&self) -> bool {
        self.result.is_some() || self.finished.load(Ordering::Acquire)
    }

    /// Hands the local buffer to the task.
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.tx.poll_ready(cx)).is_err() {
            return self.poll_stopped(cx);
        }
        let chunk = std::mem::take(&mut self.buf);
        self.taken = 0;
        self.last_len = chunk.len();
        if self.tx.start_send(chunk).is_err() {
            return self.poll_stopped(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Unpin for TaskSink<T> {}

impl<T: Fold> Sink<T> for TaskSink<T> {
    type Error = Error;

    /// Fails at once when the task has failed, without waiting for the
    /// buffer to fill.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.ended() {
            if let Poll::Ready(result) = this.poll_ended(cx) {
                return Poll::Ready(result);
            }
        }
        if this.taken >= this.chunk {
            ready!(this.poll_send_buf(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        let this = self.get_mut();
        this.taken += 1;
        if this.buf.capacity() == 0 {
            this.buf.reserve(this.last_len);
        }
        fold_into(&mut this.buf, item);
        Ok(())
    }

    /// Hands the buffer to the task, and fails once the task has failed.
    /// It also registers the caller to be woken when the task ends:
    /// `StreamExt::forward` flushes whenever its stream has nothing, so a
    /// pipeline whose source is idle still hears of a failure at once.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        if ready!(Pin::new(&mut this.tx).poll_flush(cx)).is_err() {
            return this.poll_stopped(cx);
        }
        if let Poll::Ready(result) = this.poll_ended(cx) {
            return Poll::Ready(result);
        }
        Poll::Ready(Ok(()))
    }

    /// Hands over the buffer. The last clone also ends the channel and
    /// waits for the task; another clone only lets go of its slot (and
    /// still reports a failure of the task that already happened).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        if Arc::strong_count(&this.clones) == 1 {
            this.tx.close_channel();
            return this.poll_task(cx);
        }
        this.tx.disconnect();
        if let Poll::Ready(Err(e)) = this.poll_ended(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Drop for TaskSink<T> {
    fn drop(&mut self) {
        // Best effort, never blocks: what reaches the task is still handled.
        if !self.buf.is_empty() {
            self.taken = 0;
            let _ = self.tx.try_send(std::mem::take(&mut self.buf));
        }
    }
}
