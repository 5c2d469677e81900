use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures::{FutureExt, Sink};

use super::core::{ProducerCore, Sent, Track};
use crate::error::{Error, ErrorKind, Result};
use crate::record::ProducerRecord;
use crate::settings::ProducerSettings;

/// The sink returned by [`plain_sink`](super::plain_sink).
///
/// Close it (`SinkExt::close`, or `StreamExt::forward` at the end of its
/// stream) to wait for every record's acknowledgement. Dropped without
/// closing, it keeps delivering queued records on a background thread for up
/// to [`flush_timeout`](ProducerSettings::flush_timeout) and logs an error
/// naming how many records could not be delivered.
#[must_use = "sinks do nothing unless records are sent to them"]
pub struct ProducerSink {
    core: ProducerCore,
    pending: Option<ProducerRecord>,
    /// Most records unacknowledged at once (`ProducerSettings::max_in_flight`).
    max_in_flight: usize,
    closed: bool,
    close_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl fmt::Debug for ProducerSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerSink")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl ProducerSink {
    pub(crate) fn new(settings: ProducerSettings) -> Result<Self> {
        Ok(ProducerSink {
            core: ProducerCore::new(&settings)?,
            pending: None,
            max_in_flight: settings.max_in_flight,
            closed: false,
            close_deadline: None,
        })
    }

    /// Records acknowledged by the broker so far.
    pub fn delivered(&self) -> u64 {
        self.core.state.delivered.load(Ordering::Relaxed)
    }

    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    fn check_failure(&self) -> Result<()> {
        self.core.failure()
    }

    /// Queues a record; hands it back when librdkafka's queue is full.
    fn send(&self, record: ProducerRecord) -> Result<Option<ProducerRecord>> {
        if self.closed {
            return Err(Error::closed("the producer sink is closed"));
        }
        Ok(match self.core.send(&record, Track::No)? {
            Sent::Queued(_) => None,
            Sent::Full => Some(record),
        })
    }

    /// Sends the record held back by a full queue, waiting for a delivery
    /// report to free room.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(record) = self.pending.take() else {
            return Poll::Ready(Ok(()));
        };
        let Some(record) = self.send(record)? else {
            return Poll::Ready(Ok(()));
        };
        // Register first, then retry once: a delivery between the two wakes us.
        self.core.register(cx);
        match self.send(record)? {
            None => Poll::Ready(Ok(())),
            Some(r) => {
                self.pending = Some(r);
                Poll::Pending
            }
        }
    }
}

impl Sink<ProducerRecord> for ProducerSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.check_failure()?;
        std::task::ready!(this.poll_pending(cx))?;
        this.core
            .poll_in_flight_below(cx, this.max_in_flight)
            .map(Ok)
    }

    fn start_send(self: Pin<&mut Self>, record: ProducerRecord) -> Result<()> {
        let this = self.get_mut();
        this.pending = this.send(record)?;
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.check_failure()?;
        std::task::ready!(this.poll_pending(cx))?;
        std::task::ready!(this.core.poll_in_flight_below(cx, 1));
        this.check_failure()?;
        Poll::Ready(Ok(()))
    }

    /// Waits (up to `flush_timeout`) until every record is acknowledged, then
    /// releases the producer.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(this.check_failure());
        }
        let timeout = this.core.flush_timeout;
        let deadline = this
            .close_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        let timed_out = deadline.poll_unpin(cx).is_ready();
        let flushed = match Pin::new(&mut *this).poll_flush(cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending if timed_out => Some(Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{} records not acknowledged within {:?} (flush_timeout)",
                    this.in_flight() + usize::from(this.pending.is_some()),
                    timeout
                ),
            ))),
            Poll::Pending => None,
        };
        let Some(result) = flushed else {
            return Poll::Pending;
        };
        this.closed = true;
        // Destroying the client blocks briefly: it happens off this task.
        this.core.release();
        Poll::Ready(result)
    }
}

impl Drop for ProducerSink {
    fn drop(&mut self) {
        if let Some(record) = self.pending.take() {
            tracing::error!(topic = %record.topic, "producer sink dropped with a record it could not queue yet; it was not sent");
        }
        // The core's own drop flushes what is queued on the reaper thread.
    }
}
