use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{FutureExt, Sink};
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as RdHeader, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::reaper;
use crate::error::{Error, ErrorKind, Result};
use crate::record::ProducerRecord;
use crate::settings::ProducerSettings;

/// Delivery bookkeeping shared with librdkafka's delivery callback.
#[derive(Debug, Default)]
struct DeliveryState {
    in_flight: AtomicUsize,
    delivered: AtomicU64,
    failure: Mutex<Option<Error>>,
    waker: AtomicWaker,
}

struct SinkContext {
    state: Arc<DeliveryState>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::logging::librdkafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "reactive_kafka::producer", %error, reason, "librdkafka reported an error");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.state.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                let err = Error::with_source(
                    ErrorKind::Delivery,
                    format!("record not delivered: {e}"),
                    e.clone(),
                )
                .at(msg.topic(), Some(msg.partition()).filter(|p| *p >= 0), None);
                tracing::error!(error = %err, "delivery failed");
                let mut failure = self.state.failure.lock().unwrap_or_else(|e| e.into_inner());
                failure.get_or_insert(err);
            }
        }
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.state.waker.wake();
    }
}

/// The sink returned by [`plain_sink`](super::plain_sink).
///
/// Close it (`SinkExt::close`, or `StreamExt::forward` at the end of its
/// stream) to wait for every record's acknowledgement. Dropped without
/// closing, it keeps delivering queued records on a background thread for up
/// to [`flush_timeout`](ProducerSettings::flush_timeout) and logs an error
/// naming how many records could not be delivered.
#[must_use = "sinks do nothing unless records are sent to them"]
pub struct ProducerSink {
    producer: Option<ThreadedProducer<SinkContext>>,
    state: Arc<DeliveryState>,
    pending: Option<ProducerRecord>,
    flush_timeout: Duration,
    close_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl fmt::Debug for ProducerSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerSink")
            .field("in_flight", &self.state.in_flight.load(Ordering::Relaxed))
            .field("delivered", &self.state.delivered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

enum Sent {
    Done,
    Full(ProducerRecord),
}

impl ProducerSink {
    pub(crate) fn new(settings: ProducerSettings) -> Result<Self> {
        let config = settings.to_client_config()?;
        reaper::ensure_started();
        let state = Arc::new(DeliveryState::default());
        let producer = ThreadedProducer::from_config_and_context(
            &config,
            SinkContext {
                state: state.clone(),
            },
        )
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("could not create the producer: {e}"),
                e,
            )
        })?;
        Ok(ProducerSink {
            producer: Some(producer),
            state,
            pending: None,
            flush_timeout: settings.flush_timeout,
            close_deadline: None,
        })
    }

    /// Records acknowledged by the broker so far.
    pub fn delivered(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }

    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    fn check_failure(&self) -> Result<()> {
        match &*self.state.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn send(&self, record: ProducerRecord) -> Result<Sent> {
        let Some(producer) = &self.producer else {
            return Err(Error::closed("the producer sink is closed"));
        };
        let mut base = BaseRecord::<[u8], [u8], ()>::with_opaque_to(&record.topic, ());
        if let Some(k) = &record.key {
            base = base.key(k.as_ref());
        }
        if let Some(p) = &record.payload {
            base = base.payload(p.as_ref());
        }
        if let Some(p) = record.partition {
            base = base.partition(p);
        }
        if let Some(t) = record.timestamp {
            base = base.timestamp(t);
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for h in &record.headers {
                headers = headers.insert(RdHeader {
                    key: &h.key,
                    value: h.value.as_deref(),
                });
            }
            base = base.headers(headers);
        }
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        match producer.send(base) {
            Ok(()) => Ok(Sent::Done),
            Err((e, _)) => {
                self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                    return Ok(Sent::Full(record));
                }
                Err(Error::with_source(
                    ErrorKind::Produce,
                    format!("could not produce the record: {e}"),
                    e,
                )
                .at(&record.topic, record.partition, None))
            }
        }
    }

    /// Sends the record held back by a full queue, waiting for a delivery
    /// report to free room.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(record) = self.pending.take() else {
            return Poll::Ready(Ok(()));
        };
        let record = match self.send(record)? {
            Sent::Done => return Poll::Ready(Ok(())),
            Sent::Full(r) => r,
        };
        // Register first, then retry once: a delivery between the two wakes us.
        self.state.waker.register(cx.waker());
        match self.send(record)? {
            Sent::Done => Poll::Ready(Ok(())),
            Sent::Full(r) => {
                self.pending = Some(r);
                Poll::Pending
            }
        }
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.in_flight.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        self.state.waker.register(cx.waker());
        if self.state.in_flight.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Sink<ProducerRecord> for ProducerSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.check_failure()?;
        this.poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, record: ProducerRecord) -> Result<()> {
        let this = self.get_mut();
        match this.send(record)? {
            Sent::Done => {}
            Sent::Full(r) => this.pending = Some(r),
        }
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.check_failure()?;
        std::task::ready!(this.poll_pending(cx))?;
        std::task::ready!(this.poll_drained(cx));
        this.check_failure()?;
        Poll::Ready(Ok(()))
    }

    /// Waits (up to `flush_timeout`) until every record is acknowledged, then
    /// releases the producer.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.producer.is_none() {
            return Poll::Ready(this.check_failure());
        }
        let timeout = this.flush_timeout;
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
        if let Some(producer) = this.producer.take() {
            // Destroying the client blocks briefly: do it off this task.
            reaper::submit(move || drop(producer));
        }
        Poll::Ready(result)
    }
}

impl Drop for ProducerSink {
    fn drop(&mut self) {
        let Some(producer) = self.producer.take() else {
            return;
        };
        let timeout = self.flush_timeout;
        let pending = self.pending.take();
        reaper::submit(move || {
            if let Some(record) = pending {
                tracing::error!(topic = %record.topic, "producer sink dropped with a record it could not queue; it was not sent");
            }
            if let Err(e) = producer.flush(timeout) {
                tracing::error!(
                    error = %e,
                    in_flight = producer.in_flight_count(),
                    "producer sink dropped without close: records not delivered within flush_timeout"
                );
            }
            drop(producer);
        });
    }
}
