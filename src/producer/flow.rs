use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Fuse, Stream, StreamExt};
use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use super::core::{Delivery, ProducerCore, Sent};
use super::envelope::{Envelope, Kind, ProduceFailure, ProducerResult};
use crate::error::{Error, Result};
use crate::record::ProducerRecord;

/// The answer for one sent record.
enum Answer {
    Waiting(oneshot::Receiver<Delivery>),
    Done(Delivery),
}

/// One envelope on its way: records sent so far and their answers.
struct Entry<P> {
    kind: Kind,
    records: Vec<ProducerRecord>,
    answers: Vec<Answer>,
    pass_through: P,
}

impl<P> Entry<P> {
    fn new(envelope: Envelope<P>) -> Self {
        let (records, pass_through, kind) = envelope.into_parts();
        Entry {
            kind,
            answers: Vec::with_capacity(records.len()),
            records,
            pass_through,
        }
    }

    /// How many records were handed to librdkafka (or failed to be).
    fn sent(&self) -> usize {
        self.answers.len()
    }

    fn fully_sent(&self) -> bool {
        self.answers.len() == self.records.len()
    }

    /// Polls the answers of a fully sent entry; true once all are in.
    fn poll_answers(&mut self, cx: &mut Context<'_>) -> bool {
        let mut done = true;
        for answer in &mut self.answers {
            if let Answer::Waiting(rx) = answer {
                match Pin::new(rx).poll(cx) {
                    Poll::Ready(r) => {
                        *answer = Answer::Done(r.unwrap_or_else(|_| {
                            Err(Error::closed("the producer closed before answering"))
                        }));
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        done
    }

    fn finish(self) -> std::result::Result<ProducerResult<P>, ProduceFailure<P>> {
        let mut metadata = Vec::with_capacity(self.records.len());
        let mut error = None;
        for answer in self.answers {
            match answer {
                Answer::Done(Ok(m)) => metadata.push(m),
                Answer::Done(Err(e)) => {
                    error.get_or_insert(e);
                }
                Answer::Waiting(_) => unreachable!("finish is called once every answer is in"),
            }
        }
        if let Some(error) = error {
            return Err(ProduceFailure {
                error,
                records: self.records,
                pass_through: self.pass_through,
            });
        }
        Ok(match self.kind {
            Kind::PassThrough => ProducerResult::PassThrough(self.pass_through),
            Kind::Message => {
                let record = self.records.into_iter().next().expect("one record");
                ProducerResult::Message {
                    metadata: metadata.pop().expect("one answer"),
                    record,
                    pass_through: self.pass_through,
                }
            }
            Kind::Multi => ProducerResult::MultiMessage {
                parts: metadata.into_iter().zip(self.records).collect(),
                pass_through: self.pass_through,
            },
        })
    }
}

pin_project! {
    /// The stream returned by [`flow`](super::flow): one result per envelope,
    /// in the order the envelopes came.
    ///
    /// A failed envelope yields a [`ProduceFailure`] with its records and
    /// pass-through value, and the flow goes on. If you commit offsets
    /// carried as pass-through values, stop at the first failure (as
    /// [`committable_sink`](super::committable_sink) does): committing a later
    /// offset would skip the failed record.
    #[must_use = "streams do nothing unless polled"]
    pub struct ProducerFlow<S, P> {
        #[pin]
        upstream: Fuse<S>,
        core: ProducerCore,
        entries: VecDeque<Entry<P>>,
        // Entries before this index have every record sent.
        unsent: usize,
        max_in_flight: usize,
    }
}

impl<S, P> fmt::Debug for ProducerFlow<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerFlow")
            .field("core", &self.core)
            .field("envelopes", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<S, P> ProducerFlow<S, P>
where
    S: Stream<Item = Envelope<P>>,
{
    pub(crate) fn new(core: ProducerCore, upstream: S, max_in_flight: usize) -> Self {
        ProducerFlow {
            upstream: upstream.fuse(),
            core,
            entries: VecDeque::new(),
            unsent: 0,
            max_in_flight,
        }
    }
}

impl<S, P> ProducerFlow<S, P> {
    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }
}

impl<S, P> Stream for ProducerFlow<S, P>
where
    S: Stream<Item = Envelope<P>>,
{
    type Item = std::result::Result<ProducerResult<P>, ProduceFailure<P>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        // No broker can ever be reached (authentication, TLS, DNS): the
        // oldest envelope fails now, not at `message.timeout.ms`.
        if !this.entries.is_empty() {
            if let Some(error) = this.core.unreachable() {
                let entry = this.entries.pop_front().expect("not empty");
                *this.unsent = this.unsent.saturating_sub(1);
                return Poll::Ready(Some(Err(ProduceFailure {
                    error,
                    records: entry.records,
                    pass_through: entry.pass_through,
                })));
            }
        }
        loop {
            let mut progressed = false;

            // 1. Send what is not sent yet, in order, while there is room.
            'send: while let Some(entry) = this.entries.get_mut(*this.unsent) {
                while !entry.fully_sent() {
                    if this.core.in_flight() >= *this.max_in_flight {
                        this.core.register(cx);
                        if this.core.in_flight() >= *this.max_in_flight {
                            break 'send;
                        }
                    }
                    match send_one(this.core, &entry.records[entry.sent()], cx) {
                        Some(outcome) => {
                            entry.answers.push(match outcome {
                                Ok(rx) => Answer::Waiting(rx),
                                Err(e) => Answer::Done(Err(e)),
                            });
                            progressed = true;
                        }
                        None => break 'send, // queue full: a delivery report wakes us
                    }
                }
                *this.unsent += 1;
            }

            // 2. Hand out the oldest envelope once all its answers are in.
            if let Some(front) = this.entries.front_mut() {
                if front.fully_sent() && front.poll_answers(cx) {
                    let entry = this.entries.pop_front().expect("front exists");
                    *this.unsent = this.unsent.saturating_sub(1);
                    return Poll::Ready(Some(entry.finish()));
                }
            }

            // 3. Take more envelopes while records may be sent.
            let room = this.core.in_flight() < *this.max_in_flight
                && this.entries.len() < *this.max_in_flight;
            if room && *this.unsent == this.entries.len() {
                match this.upstream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(envelope)) => {
                        this.entries.push_back(Entry::new(envelope));
                        progressed = true;
                    }
                    Poll::Ready(None) => {}
                    Poll::Pending => {}
                }
            }
            if this.upstream.is_done() && this.entries.is_empty() {
                return Poll::Ready(None);
            }
            if !progressed {
                if !this.entries.is_empty() && this.core.nothing_delivered() {
                    // Until a first delivery, also woken if the brokers turn
                    // out to be unreachable for good (no wake-up per delivery
                    // after that).
                    this.core.register(cx);
                    if this.core.unreachable().is_some() {
                        cx.waker().wake_by_ref();
                    }
                }
                return Poll::Pending;
            }
        }
    }
}

/// Sends one record. `None` when the queue is full (the task is registered
/// for the next delivery report); otherwise the answer, or the error that
/// kept the record from being queued.
fn send_one(
    core: &ProducerCore,
    record: &ProducerRecord,
    cx: &mut Context<'_>,
) -> Option<Result<oneshot::Receiver<Delivery>>> {
    for attempt in 0..2 {
        match core.send(record, true) {
            Ok(Sent::Queued(rx)) => return Some(Ok(rx.expect("tracked records have an answer"))),
            Ok(Sent::Full) if attempt == 0 => core.register(cx),
            Ok(Sent::Full) => return None,
            Err(e) => return Some(Err(e)),
        }
    }
    None
}
