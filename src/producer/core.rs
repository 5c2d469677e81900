//! The producer every sink, flow and handle is built on: a librdkafka
//! producer with a polling thread, delivery reports turned into counters,
//! wake-ups and (for records that want one) a per-record answer.

use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use tokio::sync::{oneshot, Notify};

use super::{ffi, reaper};
use crate::error::{Error, ErrorKind, Result};
use crate::record::ProducerRecord;
use crate::settings::ProducerSettings;

/// Where a record was written (its topic is the record's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordMetadata {
    /// The partition the record was written to.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

pub(crate) type Delivery = std::result::Result<RecordMetadata, Error>;

/// How a record's answer comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Track {
    /// Nobody waits for this record in particular (no allocation): only
    /// failures are kept, for the sink.
    No,
    /// Its own one-shot channel (records sent by concurrent callers).
    Own,
    /// Tagged with a sequence number the sender counts (a flow, which sends
    /// and takes answers in one order): the answer comes back with it
    /// through [`ProducerCore::take_answers`], no allocation per record.
    InOrder(u64),
}

/// The delivery opaque: nothing, the sender of the record's answer, or its
/// slot in the in-order answers. A sequence number travels in the pointer
/// itself, tagged by its low bit (a boxed sender's address is even).
pub(crate) enum DeliveryReply {
    Untracked,
    Own(Box<oneshot::Sender<Delivery>>),
    InOrder(u64),
}

impl IntoOpaque for DeliveryReply {
    fn into_ptr(self) -> *mut c_void {
        match self {
            DeliveryReply::Untracked => std::ptr::null_mut(),
            DeliveryReply::Own(b) => Box::into_raw(b) as *mut c_void,
            DeliveryReply::InOrder(seq) => ((seq << 1) | 1) as usize as *mut c_void,
        }
    }

    unsafe fn from_ptr(ptr: *mut c_void) -> Self {
        let bits = ptr as usize;
        if ptr.is_null() {
            DeliveryReply::Untracked
        } else if bits & 1 == 1 {
            DeliveryReply::InOrder((bits >> 1) as u64)
        } else {
            // SAFETY: an even non-null pointer was made by `into_ptr` from a
            // Box, once.
            DeliveryReply::Own(unsafe { Box::from_raw(ptr as *mut oneshot::Sender<Delivery>) })
        }
    }
}

/// Delivery bookkeeping shared with librdkafka's delivery callback.
#[derive(Debug, Default)]
pub(crate) struct DeliveryState {
    pub(crate) in_flight: AtomicUsize,
    pub(crate) delivered: AtomicU64,
    pub(crate) delivery_failures: AtomicU64,
    /// The first failure of an untracked record.
    failure: Mutex<Option<Error>>,
    /// Whether `failure` holds one (written under its lock), for a look
    /// without the lock on every record a sink sends.
    failed: AtomicBool,
    /// The one task (a sink or a flow) that waits for room or for deliveries.
    waker: AtomicWaker,
    /// Tasks of cloned handles waiting for room; notified only while some wait.
    room: Notify,
    room_waiters: AtomicUsize,
    /// Answers of records sent with [`Track::InOrder`], by sequence number,
    /// in the order they came; the sender takes them all at once.
    answers: Mutex<Vec<(u64, Delivery)>>,
    /// How many answers `answers` holds (written under its lock), for a
    /// look without the lock.
    answers_waiting: AtomicUsize,
    /// Records sent, for serving delivery reports on the sending thread.
    sent: AtomicUsize,
}

pub(crate) struct CoreContext {
    state: Arc<DeliveryState>,
    /// Secret values of the settings, kept out of what is logged.
    secrets: crate::settings::Secrets,
    /// Why broker connections failed.
    connect_failures: crate::connect::ConnectFailures,
    /// Where SASL/OAUTHBEARER tokens come from, when the user gave one.
    token_provider: Option<crate::settings::TokenProvider>,
    /// This producer's figures (feature `metrics`; nothing without it).
    exporter: crate::export::Producer,
}

impl ClientContext for CoreContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::settings::oauth_token(self.token_provider.as_ref())
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let message = self.secrets.redact(message);
        if fac == "FAIL" && self.connect_failures.note(&message) {
            // A sink or flow waiting for answers hears of it now.
            self.state.waker.wake();
        }
        crate::logging::librdkafka_log(level, fac, &message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.secrets.redact(reason);
        if let Some(code) = error.rdkafka_error_code() {
            if self.connect_failures.note_code(code, Some(&reason)) {
                self.state.waker.wake();
            }
        }
        crate::logging::librdkafka_error("producer", &error, &reason);
    }
}

impl ProducerContext for CoreContext {
    type DeliveryOpaque = DeliveryReply;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: DeliveryReply) {
        let outcome =
            match result {
                Ok(msg) => {
                    self.state.delivered.fetch_add(1, Ordering::Relaxed);
                    #[cfg(feature = "metrics")]
                    self.exporter.delivered(
                        msg.payload_len() + msg.key_len(),
                        crate::driver::message_latency_us(msg),
                        self.state.in_flight.load(Ordering::Relaxed) - 1,
                    );
                    Ok(RecordMetadata {
                        partition: msg.partition(),
                        offset: msg.offset(),
                    })
                }
                Err((e, msg)) if is_purge(e) => {
                    // Purged by an aborted transaction: discarded on
                    // purpose, not a failure.
                    tracing::trace!(
                        topic = msg.topic(),
                        "record of an aborted transaction purged"
                    );
                    Err(Error::with_source(
                        ErrorKind::Transaction,
                        "record purged: its transaction was aborted",
                        e.clone(),
                    ))
                }
                Err((e, msg)) => {
                    let err =
                        Error::with_source(ErrorKind::Delivery, "record not delivered", e.clone())
                            .at(msg.topic(), Some(msg.partition()).filter(|p| *p >= 0), None);
                    tracing::warn!(error = %err.report(), "delivery failed");
                    self.state.delivery_failures.fetch_add(1, Ordering::Relaxed);
                    self.exporter
                        .failed(self.state.in_flight.load(Ordering::Relaxed) - 1);
                    Err(err)
                }
            };
        match reply {
            DeliveryReply::Own(reply) => {
                let _ = reply.send(outcome);
            }
            DeliveryReply::InOrder(seq) => {
                let mut answers = self.state.answers.lock().unwrap_or_else(|e| e.into_inner());
                answers.push((seq, outcome));
                self.state
                    .answers_waiting
                    .store(answers.len(), Ordering::Release);
            }
            DeliveryReply::Untracked => match outcome {
                Err(err) if err.kind() != ErrorKind::Transaction => {
                    let mut failure = self.state.failure.lock().unwrap_or_else(|e| e.into_inner());
                    failure.get_or_insert(err);
                    self.state.failed.store(true, Ordering::Release);
                }
                _ => {}
            },
        }
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.state.waker.wake();
        if self.state.room_waiters.load(Ordering::Acquire) > 0 {
            self.state.room.notify_waiters();
        }
    }
}

/// True for the delivery error of a record an aborted transaction purged.
fn is_purge(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
    )
}

/// What happened to a record handed to [`ProducerCore::send`].
pub(crate) enum Sent {
    /// Queued; with [`Track::Own`], its answer comes through the receiver
    /// (with [`Track::InOrder`] through [`ProducerCore::take_answers`]).
    Queued(Option<oneshot::Receiver<Delivery>>),
    /// librdkafka's queue is full: try again after a delivery report.
    Full,
}

/// How many records a sender hands to librdkafka between two servings of
/// delivery reports on its own thread.
const SERVE_EVERY: usize = 64;

/// A producer owned by one sink, flow or set of cloned handles.
pub(crate) struct ProducerCore {
    producer: Option<ThreadedProducer<CoreContext>>,
    /// librdkafka's handles of the topics sent to; released before the
    /// producer.
    topics: ffi::TopicHandles,
    pub(crate) state: Arc<DeliveryState>,
    pub(crate) flush_timeout: Duration,
    bootstrap: String,
}

impl fmt::Debug for ProducerCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerCore")
            .field("in_flight", &self.state.in_flight.load(Ordering::Relaxed))
            .field("delivered", &self.state.delivered.load(Ordering::Relaxed))
            .finish()
    }
}

impl ProducerCore {
    pub(crate) fn new(settings: &ProducerSettings) -> Result<Self> {
        let config = settings.to_client_config()?;
        reaper::ensure_started();
        let state = Arc::new(DeliveryState::default());
        let producer = ThreadedProducer::from_config_and_context(
            &config,
            CoreContext {
                state: state.clone(),
                secrets: crate::settings::Secrets::of(&settings.properties),
                connect_failures: Default::default(),
                token_provider: settings.token_provider.clone(),
                exporter: crate::export::Producer::new(
                    settings
                        .properties
                        .get("client.id")
                        .map_or("rdkafka", String::as_str),
                ),
            },
        )
        .map_err(|e| match e {
            // librdkafka's own words name the key or combination it refused.
            KafkaError::ClientCreation(reason) => Error::config(crate::settings::redact(
                &format!("could not create the producer: {reason}"),
                &settings.properties,
            )),
            e => Error::with_source(ErrorKind::Config, "could not create the producer", e),
        })?;
        Ok(ProducerCore {
            producer: Some(producer),
            topics: ffi::TopicHandles::default(),
            state,
            flush_timeout: settings.flush_timeout,
            bootstrap: settings.bootstrap_servers.clone(),
        })
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Acquire)
    }

    /// True until the first record was delivered.
    pub(crate) fn nothing_delivered(&self) -> bool {
        self.state.delivered.load(Ordering::Relaxed) == 0
    }

    /// Why no broker can be reached, when waiting cannot help (failed
    /// authentication or TLS handshake, no bootstrap name resolves) and
    /// nothing was delivered yet: records would only fail at
    /// `message.timeout.ms`. Two atomic loads when all is well.
    pub(crate) fn unreachable(&self) -> Option<Error> {
        if !self.nothing_delivered() {
            return None;
        }
        let producer = self.producer.as_ref()?;
        let err = producer
            .context()
            .connect_failures
            .verdict(&self.bootstrap)?;
        Some(err)
    }

    /// The first delivery failure of an untracked record, or why no broker
    /// can be reached, if any.
    pub(crate) fn failure(&self) -> Result<()> {
        if let Some(e) = self.unreachable() {
            return Err(e);
        }
        if !self.state.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.state.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Hands a record to librdkafka without waiting; `track` says how its
    /// answer comes back.
    pub(crate) fn send(&self, record: &ProducerRecord, track: Track) -> Result<Sent> {
        let Some(producer) = &self.producer else {
            return Err(Error::closed("the producer is closed"));
        };
        let (reply, rx) = match track {
            Track::No => (DeliveryReply::Untracked, None),
            Track::Own => {
                let (tx, rx) = oneshot::channel();
                (DeliveryReply::Own(Box::new(tx)), Some(rx))
            }
            Track::InOrder(seq) => (DeliveryReply::InOrder(seq), None),
        };
        let refused = |e: KafkaError| {
            Error::with_source(ErrorKind::Produce, "could not produce the record", e).at(
                &record.topic,
                record.partition,
                None,
            )
        };
        let rk = NonNull::new(producer.client().native_ptr()).expect("a live producer");
        let topic = self.topics.get(rk, &record.topic).map_err(refused)?;
        #[cfg(feature = "opentelemetry")]
        let (span, context) =
            crate::otel::send(&record.topic, record.partition, record.has_traceparent());
        #[cfg(feature = "opentelemetry")]
        let _entered = span.enter();
        #[cfg(feature = "opentelemetry")]
        let context = context.map(|sc| crate::otel::headers(&sc));
        #[cfg(not(feature = "opentelemetry"))]
        let context: Option<[(&str, String); 0]> = None;
        let headers = (!record.headers.is_empty() || context.is_some()).then(|| {
            let mut headers = ffi::Headers::with_capacity(record.headers.len() + 2);
            for h in &record.headers {
                headers.add(&h.key, h.value.as_deref());
            }
            for (key, value) in context.iter().flatten() {
                headers.add(key, Some(value.as_bytes()));
            }
            headers
        });
        let opaque = reply.into_ptr();
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        let produced = ffi::produce(
            rk,
            ffi::Produce {
                topic: &topic,
                partition: record.partition,
                key: record.key.as_deref(),
                payload: record.payload.as_deref(),
                timestamp: record.timestamp,
                headers,
                opaque,
            },
        );
        match produced {
            Ok(()) => {
                // Every so often the sender serves the delivery reports
                // itself, as a raw send-and-poll loop does: librdkafka then
                // frees its acknowledged messages on the thread that
                // allocated them, instead of on the polling thread against
                // the allocator's lock of this one. The polling thread still
                // serves them while nothing is sent.
                if self.state.sent.fetch_add(1, Ordering::Relaxed) % SERVE_EVERY == 0 {
                    producer.poll(Duration::ZERO);
                }
                Ok(Sent::Queued(rx))
            }
            Err(code) => {
                // The opaque is still ours: dropping it drops the answer's
                // sender (an in-order sequence number was not used: the
                // sender counts only records queued).
                // SAFETY: made by `into_ptr` above; librdkafka did not take it.
                drop(unsafe { DeliveryReply::from_ptr(opaque) });
                self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
                if code == RDKafkaErrorCode::QueueFull {
                    return Ok(Sent::Full);
                }
                Err(refused(KafkaError::MessageProduction(code)))
            }
        }
    }

    /// Swaps the answers of [`Track::InOrder`] records that came since the
    /// last call, with their sequence numbers, into `out`, which must be
    /// empty (one lock for all of them; the two buffers keep their
    /// capacity).
    pub(crate) fn take_answers(&self, out: &mut Vec<(u64, Delivery)>) {
        debug_assert!(out.is_empty());
        let mut answers = self.state.answers.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *answers, out);
        self.state.answers_waiting.store(0, Ordering::Release);
    }

    /// Whether answers of [`Track::InOrder`] records came since the last
    /// [`take_answers`](Self::take_answers), without taking the lock (a
    /// hint: one may come right after it said no).
    pub(crate) fn answers_waiting(&self) -> bool {
        self.state.answers_waiting.load(Ordering::Acquire) > 0
    }

    fn client(&self) -> std::result::Result<&ThreadedProducer<CoreContext>, KafkaError> {
        // Only after `release`, which nothing calls while a transaction runs.
        self.producer.as_ref().ok_or(KafkaError::Canceled)
    }

    /// librdkafka's `init_transactions` (blocks up to `timeout`).
    pub(crate) fn init_transactions(
        &self,
        timeout: Duration,
    ) -> std::result::Result<(), KafkaError> {
        self.client()?.init_transactions(timeout)
    }

    /// librdkafka's `begin_transaction` (does not block). Forgets the
    /// delivery failure of an earlier transaction, which ended with it.
    pub(crate) fn begin_transaction(&self) -> std::result::Result<(), KafkaError> {
        self.client()?.begin_transaction()?;
        let mut failure = self.state.failure.lock().unwrap_or_else(|e| e.into_inner());
        *failure = None;
        self.state.failed.store(false, Ordering::Release);
        Ok(())
    }

    /// librdkafka's `send_offsets_to_transaction` (blocks up to `timeout`).
    pub(crate) fn send_offsets_to_transaction(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> std::result::Result<(), KafkaError> {
        self.client()?
            .send_offsets_to_transaction(offsets, group, timeout)
    }

    /// librdkafka's `commit_transaction`: waits for every record of the
    /// transaction to be delivered, then commits (blocks up to `timeout`).
    pub(crate) fn commit_transaction(
        &self,
        timeout: Duration,
    ) -> std::result::Result<(), KafkaError> {
        self.client()?.commit_transaction(timeout)
    }

    /// librdkafka's `abort_transaction` (blocks up to `timeout`).
    pub(crate) fn abort_transaction(
        &self,
        timeout: Duration,
    ) -> std::result::Result<(), KafkaError> {
        self.client()?.abort_transaction(timeout)
    }

    /// Registers the task to be woken by the next delivery report.
    pub(crate) fn register(&self, cx: &mut Context<'_>) {
        self.state.waker.register(cx.waker());
    }

    /// Ready while fewer than `limit` records are unacknowledged; else
    /// registered to be woken by the next delivery report (registered
    /// first, then looked at again: a report in between wakes the task).
    pub(crate) fn poll_in_flight_below(&self, cx: &mut Context<'_>, limit: usize) -> Poll<()> {
        if self.in_flight() < limit {
            return Poll::Ready(());
        }
        self.register(cx);
        if self.in_flight() < limit {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Waits (for cloned handles) until a delivery report frees room.
    pub(crate) async fn room(&self) {
        self.state.room_waiters.fetch_add(1, Ordering::AcqRel);
        let notified = self.state.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A report between the failed send and `enable` would be missed: wait
        // at most a millisecond in that case.
        let _ = tokio::time::timeout(Duration::from_millis(1), notified).await;
        self.state.room_waiters.fetch_sub(1, Ordering::AcqRel);
    }

    /// Releases the producer: queued records are flushed (up to
    /// `flush_timeout`) and the client destroyed on the reaper thread.
    pub(crate) fn release(&mut self) {
        self.topics.clear();
        let Some(producer) = self.producer.take() else {
            return;
        };
        let timeout = self.flush_timeout;
        reaper::submit(move || {
            if producer.in_flight_count() > 0 {
                if let Err(e) = producer.flush(timeout) {
                    tracing::error!(
                        error = %e,
                        in_flight = producer.in_flight_count(),
                        "producer released with records not delivered within flush_timeout"
                    );
                }
            }
            drop(producer);
        });
    }
}

impl Drop for ProducerCore {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_opaque_comes_back_as_it_went() {
        for seq in [0, 1, 7, u64::MAX >> 1] {
            let ptr = DeliveryReply::InOrder(seq).into_ptr();
            // SAFETY: made by `into_ptr` just above.
            match unsafe { DeliveryReply::from_ptr(ptr) } {
                DeliveryReply::InOrder(back) => assert_eq!(back, seq),
                _ => panic!("sequence {seq} came back as something else"),
            }
        }
        let (tx, mut rx) = oneshot::channel();
        let ptr = DeliveryReply::Own(Box::new(tx)).into_ptr();
        // SAFETY: made by `into_ptr` just above.
        let DeliveryReply::Own(tx) = (unsafe { DeliveryReply::from_ptr(ptr) }) else {
            panic!("a boxed sender came back as something else");
        };
        tx.send(Err(Error::closed("x"))).unwrap();
        assert!(rx.try_recv().unwrap().is_err());
        // SAFETY: null is what `Untracked` makes.
        let untracked = unsafe { DeliveryReply::from_ptr(std::ptr::null_mut()) };
        assert!(matches!(untracked, DeliveryReply::Untracked));
    }
}
