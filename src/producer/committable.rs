use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, StreamExt};

use super::core::ProducerCore;
use super::envelope::Envelope;
use super::flow::ProducerFlow;
use crate::committer;
use crate::consumer::CommittableOffset;
use crate::error::{Error, Result};
use crate::settings::{CommitterSettings, ProducerSettings};
use crate::task_sink::TaskSink;

/// The sink returned by [`committable_sink`](super::committable_sink).
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
    let inner = TaskSink::spawn("producer::committable_sink", 256, move |rx| async move {
        let commits = committer::sink(committer_settings)?;
        let envelopes = rx.flat_map(futures::stream::iter);
        // Results come in envelope order; the first failure ends the stream
        // before any later offset reaches the committer.
        ProducerFlow::new(core, envelopes, max_in_flight)
            .map(|result| result.map(|r| r.into_pass_through()).map_err(Error::from))
            .forward(commits)
            .await
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
