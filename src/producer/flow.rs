use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::core::{Delivery, ProducerCore, Sent, Track};
use super::envelope::{Envelope, Kind, ProduceFailure, ProducerResult};
use crate::error::Result;
use crate::record::ProducerRecord;
use futures::stream::{Fuse, Stream, StreamExt};
use pin_project_lite::pin_project;

/// The answer for one sent record.
enum Answer {
    /// To come through the producer's in-order answers.
    Waiting,
    Done(Delivery),
}

/// No item, one item (no allocation of its own: most envelopes carry one
/// record), or several.
enum Few<T> {
    Zero,
    One(T),
    Many(Vec<T>),
}

impl<T> Few<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Few::Zero => &[],
            Few::One(t) => std::slice::from_ref(t),
            Few::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Few::Zero => &mut [],
            Few::One(t) => std::slice::from_mut(t),
            Few::Many(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn push(&mut self, item: T) {
        *self = match std::mem::replace(self, Few::Zero) {
            Few::Zero => Few::One(item),
            Few::One(first) => Few::Many(vec![first, item]),
            Few::Many(mut v) => {
                v.push(item);
                Few::Many(v)
            }
        };
    }

    fn into_iter(self) -> impl Iterator<Item = T> {
        let (one, many) = match self {
            Few::Zero => (None, Vec::new()),
            Few::One(t) => (Some(t), Vec::new()),
            Few::Many(v) => (None, v),
        };
        one.into_iter().chain(many)
    }
}

/// One envelope on its way: records sent so far and their answers.
struct Entry<P> {
    kind: Kind,
    records: Few<ProducerRecord>,
    answers: Few<Answer>,
    pass_through: P,
}

impl<P> Entry<P> {
    fn new(envelope: Envelope<P>) -> Self {
        let (records, pass_through, kind) = match envelope {
            Envelope::Message {
                record,
                pass_through,
            } => (Few::One(record), pass_through, Kind::Message),
            Envelope::MultiMessage {
                records,
                pass_through,
            } => (Few::Many(records), pass_through, Kind::Multi),
            Envelope::PassThrough(p) => (Few::Zero, p, Kind::PassThrough),
        };
        Entry {
            kind,
            answers: Few::Zero,
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

    /// Fills in the answers of a fully sent entry (the oldest: its
    /// records' answers are the oldest not taken) from `answered`, taken
    /// from the producer's in-order answers as they come; true once all are
    /// in. Registers the task for the next delivery report while some are
    /// missing.
    fn poll_answers(
        &mut self,
        core: &ProducerCore,
        answered: &mut VecDeque<Delivery>,
        cx: &mut Context<'_>,
    ) -> bool {
        for answer in self.answers.as_mut_slice() {
            if let Answer::Waiting = answer {
                if answered.is_empty() {
                    core.take_in_order(answered);
                }
                if answered.is_empty() {
                    // Registered before looking again: a report that comes
                    // in between wakes the task.
                    core.register(cx);
                    core.take_in_order(answered);
                }
                match answered.pop_front() {
                    Some(delivery) => *answer = Answer::Done(delivery),
                    None => return false,
                }
            }
        }
        true
    }

    fn finish(self) -> std::result::Result<ProducerResult<P>, ProduceFailure<P>> {
        let mut metadata = Few::Zero;
        let mut error = None;
        for answer in self.answers.into_iter() {
            match answer {
                Answer::Done(Ok(m)) => metadata.push(m),
                Answer::Done(Err(e)) => {
                    error.get_or_insert(e);
                }
                Answer::Waiting => unreachable!("finish is called once every answer is in"),
            }
        }
        if let Some(error) = error {
            return Err(ProduceFailure {
                error,
                records: self.records.into_iter().collect(),
                pass_through: self.pass_through,
            });
        }
        Ok(match self.kind {
            Kind::PassThrough => ProducerResult::PassThrough(self.pass_through),
            Kind::Message => {
                let record = self.records.into_iter().next().expect("one record");
                ProducerResult::Message {
                    metadata: metadata.into_iter().next().expect("one answer"),
                    record,
                    pass_through: self.pass_through,
                }
            }
            Kind::Multi => ProducerResult::MultiMessage {
                parts: metadata.into_iter().zip(self.records.into_iter()).collect(),
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
        // Answers taken from the producer, oldest first, for the entries.
        answered: VecDeque<Delivery>,
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
            answered: VecDeque::new(),
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
                    records: entry.records.into_iter().collect(),
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
                    match send_one(this.core, &entry.records.as_slice()[entry.sent()], cx) {
                        Some(outcome) => {
                            entry.answers.push(match outcome {
                                Ok(()) => Answer::Waiting,
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
                if front.fully_sent() && front.poll_answers(this.core, this.answered, cx) {
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
) -> Option<Result<()>> {
    for attempt in 0..2 {
        match core.send(record, Track::InOrder) {
            Ok(Sent::Queued(_)) => return Some(Ok(())),
            Ok(Sent::Full) if attempt == 0 => core.register(cx),
            Ok(Sent::Full) => return None,
            Err(e) => return Some(Err(e)),
        }
    }
    None
}
