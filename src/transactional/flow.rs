use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::producer::TxnCore;
use super::settings::TransactionalSettings;
use super::sink::run;
use crate::consumer::CommittableOffset;
use crate::error::{Error, Result};
use crate::producer::Envelope;
use crate::settings::ProducerSettings;

/// The stream returned by [`flow`]: each envelope's offset, in order, once
/// the transaction that holds its records and offset has committed.
///
/// Ends when the envelopes end (after the last transaction committed), or
/// with the first error (the open transaction aborted). Dropping it stops
/// its task: a transaction left open is aborted by the broker at its
/// timeout, or at once when a producer with the same transactional id
/// starts.
#[must_use = "streams do nothing unless polled"]
pub struct TransactionalFlow {
    committed: mpsc::Receiver<Result<CommittableOffset>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl fmt::Debug for TransactionalFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalFlow").finish_non_exhaustive()
    }
}

/// Produces `envelopes` in transactions with their consumed offsets (as
/// [`sink`](super::sink) does) and passes each envelope's offset on once
/// its transaction committed: for work downstream that must follow the
/// commit (an acknowledgement, a metric). An error item of `envelopes`
/// aborts the open transaction and ends the flow with it. Must be created
/// inside a tokio runtime.
pub fn flow<S>(
    producer: ProducerSettings,
    tx: TransactionalSettings,
    envelopes: S,
) -> Result<TransactionalFlow>
where
    S: Stream<Item = Result<Envelope<CommittableOffset>>> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::config("transactional::flow must be created inside a tokio runtime"))?;
    let txn = TxnCore::new(&producer, &tx)?;
    // Room for one transaction's offsets at the default size; a slow
    // downstream holds the next transaction back.
    let (out, committed) = mpsc::channel(tx.max_records.clamp(1, 10_000));
    // The end of the envelopes is a close: the open transaction commits.
    let closing = Arc::new(AtomicBool::new(true));
    let input = Box::pin(envelopes.map(|e| e.map(|e| vec![e])));
    let task = runtime.spawn(run(txn, tx, input, closing, Some(out)));
    Ok(TransactionalFlow {
        committed,
        task: Some(task),
    })
}

impl Stream for TransactionalFlow {
    type Item = Result<CommittableOffset>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(item) = futures::ready!(this.committed.poll_recv(cx)) {
            return Poll::Ready(Some(item));
        }
        // The task ended (it dropped its sender): its error, if any, last.
        let Some(task) = this.task.as_mut() else {
            return Poll::Ready(None);
        };
        let ended = futures::ready!(Pin::new(task).poll(cx));
        this.task = None;
        Poll::Ready(match ended {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(join) => Some(Err(Error::closed(format!(
                "the transactional flow's task ended abnormally: {join}"
            )))),
        })
    }
}

impl Drop for TransactionalFlow {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
