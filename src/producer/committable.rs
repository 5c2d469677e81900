use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{Sink, StreamExt};

use super::core::ProducerCore;
use super::envelope::Envelope;
use super::flow::ProducerFlow;
use crate::committer;
use crate::consumer::CommittableOffset;
use crate::error::{Error, Result};
use crate::settings::{CommitterSettings, ProducerSettings};
use crate::task_sink::{Pace, TaskSink};

/// The sink returned by [`committable_sink`](super::committable_sink).
///
/// Clones share one producer, one committer and one task: for a
/// partitioned source, give each partition sub-stream its own clone
/// (consume, transform, produce, commit per partition over one producer).
/// Offsets are committed in the order their envelopes reached the task,
/// each only after its records and every earlier envelope's were delivered.
/// Closing a clone hands over its envelopes and returns; closing the last
/// one waits until everything is produced and committed. The first failure
/// fails every clone, and the consumer.
#[derive(Clone)]
#[must_use = "sinks do nothing unless envelopes are sent to them"]
pub struct CommittableSink {
    inner: TaskSink<Envelope<CommittableOffset>>,
}

impl fmt::Debug for CommittableSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommittableSink")
            .field("buffered", &self.inner.buffered())
            .finish_non_exhaustive()
    }
}

pub(crate) fn committable_sink(
    producer: ProducerSettings,
    committer_settings: CommitterSettings,
) -> Result<CommittableSink> {
    committer_settings.validate()?;
    let core = ProducerCore::new(&producer)?;
    let max_in_flight = producer.max_in_flight;
    // One task runs both the producer flow and the committer's batching.
    let pace = Pace::new(256);
    let inner = TaskSink::spawn("producer::committable_sink", pace, move |rx| async move {
        let envelopes = rx.flat_map(futures::stream::iter);
        // Results come in envelope order; the first failure ends the offsets
        // before any later one reaches the committer, and is returned once
        // the offsets before it are committed.
        let failure = Arc::new(Mutex::new(None));
        let offsets = {
            let failure = failure.clone();
            ProducerFlow::new(core, envelopes, max_in_flight)
                .map(move |result| match result {
                    Ok(r) => Some(r.into_pass_through()),
                    Err(f) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((f.error, f.pass_through));
                        None
                    }
                })
                .take_while(|o| futures::future::ready(o.is_some()))
                .filter_map(futures::future::ready)
        };
        let mut commits = committer::flow(committer_settings, offsets)?;
        while let Some(outcome) = commits.next().await {
            outcome?;
        }
        let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        match failure {
            // The offsets before it are committed: now the consumer of the
            // failed record hears of it (its stream ends with the error).
            Some((err, offset)) => {
                offset.fail_consumer(err.clone());
                Err(err)
            }
            None => Ok(()),
        }
    })?;
    Ok(CommittableSink { inner })
}

impl Sink<Envelope<CommittableOffset>> for CommittableSink {
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

    /// Waits until every envelope is produced and its offset committed.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
