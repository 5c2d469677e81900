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
//!
//! Each hand-over wakes the task. A task that has nothing to do with more
//! items for a while (the committer's, while a commit is in flight) can say
//! so through the sink's [`Pace`]: clones then hand over in larger chunks,
//! and a flush leaves the buffer in a deposit the task takes when it stops
//! deferring, instead of waking it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// Folds `item` into `last`, if there is one; gives back what is left to
/// append.
fn fold_onto<T: Fold>(last: Option<&mut T>, item: T) -> Option<T> {
    match last {
        Some(last) => last.fold(item),
        None => Some(item),
    }
}

/// Folds `item` into the last of `items`, or appends it.
pub(crate) fn fold_into<T: Fold>(items: &mut Vec<T>, item: T) {
    if let Some(item) = fold_onto(items.last_mut(), item) {
        items.push(item);
    }
}

/// How a [`TaskSink`]'s clones hand their items to the task: every `chunk`
/// items, or, while the task defers, every `deferred_chunk` items, with
/// flushes depositing the buffer here instead of waking the task.
pub(crate) struct Pace<T>(Arc<PaceState<T>>);

struct PaceState<T> {
    chunk: usize,
    deferred_chunk: usize,
    /// Set by the task; read as each item is taken.
    deferring: AtomicBool,
    /// True while `deposit` holds items (cheap to check per flush).
    deposited: AtomicBool,
    deposit: Mutex<Vec<T>>,
}

impl<T> Clone for Pace<T> {
    fn clone(&self) -> Self {
        Pace(self.0.clone())
    }
}

impl<T> Pace<T> {
    /// Hands over every `chunk` items (at least one), always.
    pub(crate) fn new(chunk: usize) -> Self {
        Self::deferring_to(chunk, chunk)
    }

    /// Hands over every `chunk` items, and every `deferred_chunk` while the
    /// task [defers](Self::defer).
    pub(crate) fn deferring_to(chunk: usize, deferred_chunk: usize) -> Self {
        Pace(Arc::new(PaceState {
            chunk: chunk.max(1),
            deferred_chunk: deferred_chunk.max(1),
            deferring: AtomicBool::new(false),
            deposited: AtomicBool::new(false),
            deposit: Mutex::new(Vec::new()),
        }))
    }

    /// How many items a clone takes before it hands its buffer over.
    #[inline]
    fn chunk(&self) -> usize {
        if self.deferring() {
            self.0.deferred_chunk
        } else {
            self.0.chunk
        }
    }

    #[inline]
    pub(crate) fn deferring(&self) -> bool {
        self.0.deferring.load(Ordering::SeqCst)
    }

    fn has_deposit(&self) -> bool {
        self.0.deposited.load(Ordering::SeqCst)
    }

    /// For the task: while `deferring`, clones hand over every
    /// `deferred_chunk` items and their flushes deposit. A task that stops
    /// deferring must then take what is in its channel, and after that
    /// [`take_deposit`](Self::take_deposit) (what its channel holds is older).
    pub(crate) fn defer(&self, deferring: bool) {
        self.0.deferring.store(deferring, Ordering::SeqCst);
    }

    /// For the task: the items deposited, oldest first, if any.
    pub(crate) fn take_deposit(&self) -> Option<Vec<T>> {
        if !self.has_deposit() {
            return None;
        }
        let mut deposit = self.0.deposit.lock().unwrap_or_else(|e| e.into_inner());
        self.0.deposited.store(false, Ordering::SeqCst);
        let items = std::mem::take(&mut *deposit);
        (!items.is_empty()).then_some(items)
    }

    /// Moves `items` to the end of the deposit.
    fn deposit(&self, items: &mut Vec<T>) {
        if items.is_empty() {
            return;
        }
        let mut deposit = self.0.deposit.lock().unwrap_or_else(|e| e.into_inner());
        deposit.append(items);
        self.0.deposited.store(true, Ordering::SeqCst);
    }
}

pub(crate) struct TaskSink<T> {
    buf: Vec<T>,
    /// Items taken since the buffer was last handed over (folded ones too).
    taken: usize,
    /// When to hand the buffer over.
    pace: Pace<T>,
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
            pace: self.pace.clone(),
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
    /// the channel; the sink hands its buffer over as `pace` says.
    /// Fails outside a runtime.
    pub(crate) fn spawn<F, Fut>(name: &str, pace: Pace<T>, work: F) -> Result<Self>
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
            pace,
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

    /// Takes one item, as `start_send` does after `poll_ready`: `fold` gets
    /// the last buffered item, folds what it was given into it if it can,
    /// and returns the item to buffer when it did not. A caller whose item
    /// is a part of a `T` folds the part straight in, without building a
    /// `T` only to fold it (the committer's offsets, one per record).
    #[inline]
    pub(crate) fn start_send_folding(&mut self, fold: impl FnOnce(Option<&mut T>) -> Option<T>) {
        self.taken += 1;
        if let Some(item) = fold(self.buf.last_mut()) {
            if self.buf.capacity() == 0 {
                self.buf.reserve(self.last_len);
            }
            self.buf.push(item);
        }
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
    #[inline]
    fn ended(&self) -> bool {
        self.result.is_some() || self.finished.load(Ordering::Acquire)
    }

    /// Hands the deposit, then the local buffer, to the task.
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.buf.is_empty() && !self.pace.has_deposit() {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.tx.poll_ready(cx)).is_err() {
            return self.poll_stopped(cx);
        }
        let chunk = match self.pace.take_deposit() {
            Some(mut deposit) => {
                deposit.append(&mut self.buf);
                deposit
            }
            None => std::mem::take(&mut self.buf),
        };
        self.taken = 0;
        if chunk.is_empty() {
            return Poll::Ready(Ok(())); // the task took the deposit meanwhile
        }
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
    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.ended() {
            if let Poll::Ready(result) = this.poll_ended(cx) {
                return Poll::Ready(result);
            }
        }
        if this.taken >= this.pace.chunk() {
            ready!(this.poll_send_buf(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        self.get_mut()
            .start_send_folding(|last| fold_onto(last, item));
        Ok(())
    }

    /// Hands the buffer to the task (or, while the task defers, to the
    /// deposit it takes when it stops), and fails once the task has failed.
    /// It also registers the caller to be woken when the task ends:
    /// `StreamExt::forward` flushes whenever its stream has nothing, so a
    /// pipeline whose source is idle still hears of a failure at once.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.pace.deferring() {
            this.pace.deposit(&mut this.buf);
            this.taken = 0;
        }
        // Checked again after the deposit: a task that stopped deferring
        // meanwhile may have taken its deposit already, so what is left
        // there goes through the channel.
        if !this.pace.deferring() {
            ready!(this.poll_send_buf(cx))?;
        }
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
