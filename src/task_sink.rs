//! A sink that hands its items, in chunks, to a task that does the work (and
//! may fail); closing it waits for the task. Used by the committer and the
//! committable producer sink.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::channel::mpsc;
use futures::{FutureExt, Sink};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

pub(crate) struct TaskSink<T> {
    buf: Vec<T>,
    chunk: usize,
    tx: mpsc::Sender<Vec<T>>,
    task: Option<JoinHandle<Result<()>>>,
    result: Option<Result<()>>,
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
        let task = runtime.spawn(work(rx));
        Ok(TaskSink {
            buf: Vec::with_capacity(chunk),
            chunk,
            tx,
            task: Some(task),
            result: None,
        })
    }
}

impl<T> TaskSink<T> {
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Waits for the task to end and returns how it ended.
    fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(task) = &mut self.task {
            let joined = ready!(task.poll_unpin(cx));
            self.task = None;
            self.result = Some(match joined {
                Ok(r) => r,
                Err(e) => Err(Error::closed(format!("the task ended abnormally: {e}"))),
            });
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
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Hands the local buffer to the task.
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.tx.poll_ready(cx)).is_err() {
            return self.poll_stopped(cx);
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        if self.tx.start_send(chunk).is_err() {
            return self.poll_stopped(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Unpin for TaskSink<T> {}

impl<T> Sink<T> for TaskSink<T> {
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
        if this.buf.len() >= this.chunk {
            ready!(this.poll_send_buf(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        self.get_mut().buf.push(item);
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

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        this.tx.close_channel();
        this.poll_task(cx)
    }
}

impl<T> Drop for TaskSink<T> {
    fn drop(&mut self) {
        // Best effort, never blocks: what reaches the task is still handled.
        if !self.buf.is_empty() {
            let _ = self.tx.try_send(std::mem::take(&mut self.buf));
        }
    }
}
