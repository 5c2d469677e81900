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

/// The answers of the records a flow sent, by sequence number: slot `i`
/// holds the answer of sequence number `base + i` once it came. Kept by the
/// flow's task alone; the delivery callback hands answers over in bulk
/// ([`ProducerCore::take_answers`]), so that a record costs the callback one
/// short lock and the task none of its own.
#[derive(Default)]
struct InOrder {
    base: u64,
    slots: VecDeque<Option<Delivery>>,
    /// Answers taken from the producer, before they go to their slots.
    incoming: Vec<(u64, Delivery)>,
}

impl InOrder {
    /// The sequence number of the next record sent.
    fn next_seq(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// A record with [`next_seq`](Self::next_seq) was queued.
    fn sent(&mut self) {
        self.slots.push_back(None);
    }

    /// Moves the answers that came to their slots.
    fn collect(&mut self, core: &ProducerCore) {
        let mut incoming = std::mem::take(&mut self.incoming);
        core.take_answers(&mut incoming);
        self.place(incoming.drain(..));
        self.incoming = incoming;
    }

    fn place(&mut self, answers: impl Iterator<Item = (u64, Delivery)>) {
        for (seq, delivery) in answers {
            // Below `base`: the answer of a record whose envelope was
            // failed already (`skip`).
            if let Some(slot) = seq
                .checked_sub(self.base)
                .and_then(|i| self.slots.get_mut(i as usize))
            {
                *slot = Some(delivery);
            }
        }
    }

    /// The answer of the oldest record not taken, if it came.
    fn pop(&mut self) -> Option<Delivery> {
        if !matches!(self.slots.front(), Some(Some(_))) {
            return None;
        }
        self.base += 1;
        self.slots.pop_front().flatten()
    }

    /// Gives up the oldest record's answer, come or not.
    fn skip(&mut self) {
        if self.slots.pop_front().is_some() {
            self.base += 1;
        }
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
    /// records' answers are the oldest not taken) from `in_order`; true
    /// once all are in. Registers the task for the next delivery report
    /// while some are missing, unless `registered` says this poll did
    /// already: then only answers said to be waiting are taken (the
    /// producer's lock is shared with its delivery callback; taking it for
    /// every envelope while the oldest waits cost more than the rest of
    /// the flow together).
    fn poll_answers(
        &mut self,
        core: &ProducerCore,
        in_order: &mut InOrder,
        registered: &mut bool,
        cx: &mut Context<'_>,
    ) -> bool {
        for answer in self.answers.as_mut_slice() {
            if let Answer::Waiting = answer {
                let mut delivery = in_order.pop();
                if delivery.is_none() && core.answers_waiting() {
                    in_order.collect(core);
                    delivery = in_order.pop();
                }
                if delivery.is_none() && !*registered {
                    // Registered before looking again: a report that comes
                    // in between wakes the task.
                    core.register(cx);
                    *registered = true;
                    in_order.collect(core);
                    delivery = in_order.pop();
                }
                match delivery {
                    Some(delivery) => *answer = Answer::Done(delivery),
                    None => return false,
                }
            }
        }
        true
    }

    /// Gives up the answers this entry (the oldest) still waits for.
    fn forget_answers(&self, in_order: &mut InOrder) {
        for answer in self.answers.as_slice() {
            if let Answer::Waiting = answer {
                in_order.skip();
            }
        }
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
        // The answers of records sent, for the entries.
        in_order: InOrder,
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
            in_order: InOrder::default(),
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
                entry.forget_answers(this.in_order);
                *this.unsent = this.unsent.saturating_sub(1);
                return Poll::Ready(Some(Err(ProduceFailure {
                    error,
                    records: entry.records.into_iter().collect(),
                    pass_through: entry.pass_through,
                })));
            }
        }
        let mut registered = false;
        loop {
            let mut progressed = false;

            // 1. Send what is not sent yet, in order, while there is room.
            'send: while let Some(entry) = this.entries.get_mut(*this.unsent) {
                while !entry.fully_sent() {
                    if this
                        .core
                        .poll_in_flight_below(cx, *this.max_in_flight)
                        .is_pending()
                    {
                        break 'send;
                    }
                    let record = &entry.records.as_slice()[entry.sent()];
                    match send_one(this.core, record, this.in_order.next_seq(), cx) {
                        Some(outcome) => {
                            entry.answers.push(match outcome {
                                Ok(()) => {
                                    this.in_order.sent();
                                    Answer::Waiting
                                }
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
                if front.fully_sent()
                    && front.poll_answers(this.core, this.in_order, &mut registered, cx)
                {
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

/// Sends one record as sequence number `seq`. `None` when the queue is full
/// (the task is registered for the next delivery report); otherwise
/// whether it was queued, or the error that kept it from being queued.
fn send_one(
    core: &ProducerCore,
    record: &ProducerRecord,
    seq: u64,
    cx: &mut Context<'_>,
) -> Option<Result<()>> {
    for attempt in 0..2 {
        match core.send(record, Track::InOrder(seq)) {
            Ok(Sent::Queued(_)) => return Some(Ok(())),
            Ok(Sent::Full) if attempt == 0 => core.register(cx),
            Ok(Sent::Full) => return None,
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::RecordMetadata;

    fn at(offset: i64) -> Delivery {
        Ok(RecordMetadata {
            partition: 0,
            offset,
        })
    }

    fn offset(d: Option<Delivery>) -> Option<i64> {
        d.map(|d| d.expect("delivered").offset)
    }

    #[test]
    fn answers_come_out_in_the_order_records_were_sent() {
        let mut in_order = InOrder::default();
        for _ in 0..3 {
            in_order.sent();
        }
        // Answers of other partitions overtake the oldest.
        in_order.place([(2, at(12)), (1, at(11))].into_iter());
        assert_eq!(offset(in_order.pop()), None, "the oldest has no answer yet");
        in_order.place([(0, at(10))].into_iter());
        assert_eq!(offset(in_order.pop()), Some(10));
        assert_eq!(offset(in_order.pop()), Some(11));
        assert_eq!(offset(in_order.pop()), Some(12));
        assert_eq!(offset(in_order.pop()), None);
        assert_eq!(in_order.next_seq(), 3);
    }

    #[test]
    fn a_skipped_record_s_late_answer_goes_to_no_other_record() {
        let mut in_order = InOrder::default();
        in_order.sent();
        in_order.sent();
        in_order.skip();
        in_order.place([(0, at(10))].into_iter());
        assert_eq!(offset(in_order.pop()), None, "seq 1 has not been answered");
        in_order.place([(1, at(11))].into_iter());
        assert_eq!(offset(in_order.pop()), Some(11));
    }
}
