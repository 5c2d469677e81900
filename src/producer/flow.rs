use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::core::{Delivery, ProducerCore, Sent, Track};
use super::envelope::{Envelope, ProduceFailure, ProducerResult};
use crate::error::Result;
use crate::record::ProducerRecord;
use futures::stream::{Fuse, Stream, StreamExt};
use pin_project_lite::pin_project;

/// The records of one envelope.
enum Records {
    /// An [`Envelope::PassThrough`].
    None,
    /// An [`Envelope::Message`] (no allocation of its own).
    One(ProducerRecord),
    /// An [`Envelope::MultiMessage`].
    Many(Vec<ProducerRecord>),
}

impl Records {
    fn as_slice(&self) -> &[ProducerRecord] {
        match self {
            Records::None => &[],
            Records::One(r) => std::slice::from_ref(r),
            Records::Many(v) => v,
        }
    }

    fn into_vec(self) -> Vec<ProducerRecord> {
        match self {
            Records::None => Vec::new(),
            Records::One(r) => vec![r],
            Records::Many(v) => v,
        }
    }
}

/// The answers of the records a flow sent, by sequence number: slot `i`
/// holds the answer of sequence number `base + i` once it came (a record
/// that could not be queued has its error there from the start). Kept by
/// the flow's task alone; the delivery callback hands answers over in bulk
/// ([`ProducerCore::take_answers`]), so that a record costs the callback one
/// short lock and the task none of its own. The envelopes keep only their
/// records and a count, so that the queue of envelopes on their way, read
/// again only when the oldest is handed out, stays small.
#[derive(Default)]
struct InOrder {
    base: u64,
    slots: VecDeque<Option<Delivery>>,
    /// How many slots at the front are known to hold their answer.
    answered: usize,
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

    /// A record could not be queued: its answer is `error`, and no
    /// delivery report will come for its sequence number.
    fn failed(&mut self, error: crate::error::Error) {
        self.slots.push_back(Some(Err(error)));
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

    /// Whether the `n` oldest records not taken have their answers.
    fn ready(&mut self, n: usize) -> bool {
        while self.answered < n && matches!(self.slots.get(self.answered), Some(Some(_))) {
            self.answered += 1;
        }
        self.answered >= n
    }

    /// Whether the `n` oldest records not taken have their answers, taking
    /// those that came. Registers the task for the next delivery report
    /// while some are missing, unless `registered` says this poll did
    /// already: then only answers said to be waiting are taken (the
    /// producer's lock is shared with its delivery callback; taking it for
    /// every envelope while the oldest waits cost more than the rest of
    /// the flow together).
    fn poll_ready(
        &mut self,
        n: usize,
        core: &ProducerCore,
        registered: &mut bool,
        cx: &mut Context<'_>,
    ) -> bool {
        if self.ready(n) {
            return true;
        }
        if core.answers_waiting() {
            self.collect(core);
            if self.ready(n) {
                return true;
            }
        }
        if !*registered {
            // Registered before looking again: a report that comes in
            // between wakes the task.
            core.register(cx);
            *registered = true;
            self.collect(core);
            return self.ready(n);
        }
        false
    }

    /// The answer of the oldest record not taken, if it came.
    fn pop(&mut self) -> Option<Delivery> {
        if !matches!(self.slots.front(), Some(Some(_))) {
            return None;
        }
        self.base += 1;
        self.answered = self.answered.saturating_sub(1);
        self.slots.pop_front().flatten()
    }

    /// Gives up the oldest record's answer, come or not.
    fn skip(&mut self) {
        if self.slots.pop_front().is_some() {
            self.base += 1;
            self.answered = self.answered.saturating_sub(1);
        }
    }
}

/// One envelope on its way: its records, how many were sent, and its value.
struct Entry<P> {
    records: Records,
    /// How many records were handed to librdkafka (or failed to be); their
    /// answers are the oldest in [`InOrder`] once this entry is the oldest.
    sent: usize,
    pass_through: P,
}

impl<P> Entry<P> {
    fn new(envelope: Envelope<P>) -> Self {
        let (records, pass_through) = match envelope {
            Envelope::Message {
                record,
                pass_through,
            } => (Records::One(record), pass_through),
            Envelope::MultiMessage {
                records,
                pass_through,
            } => (Records::Many(records), pass_through),
            Envelope::PassThrough(p) => (Records::None, p),
        };
        Entry {
            records,
            sent: 0,
            pass_through,
        }
    }

    fn fully_sent(&self) -> bool {
        self.sent == self.records.as_slice().len()
    }

    /// Gives up the answers this entry (the oldest) has or waits for.
    fn forget_answers(&self, in_order: &mut InOrder) {
        for _ in 0..self.sent {
            in_order.skip();
        }
    }

    /// The result of this entry (the oldest), whose answers are all in
    /// `in_order` ([`InOrder::ready`]); takes them.
    fn finish(
        self,
        in_order: &mut InOrder,
    ) -> std::result::Result<ProducerResult<P>, ProduceFailure<P>> {
        let mut answer = || {
            in_order
                .pop()
                .expect("finish is called once every answer is in")
        };
        let pass_through = self.pass_through;
        match self.records {
            Records::None => Ok(ProducerResult::PassThrough(pass_through)),
            Records::One(record) => match answer() {
                Ok(metadata) => Ok(ProducerResult::Message {
                    metadata,
                    record,
                    pass_through,
                }),
                Err(error) => Err(ProduceFailure {
                    error,
                    records: vec![record],
                    pass_through,
                }),
            },
            Records::Many(records) => {
                let mut metadata = Vec::with_capacity(records.len());
                let mut error = None;
                for _ in 0..records.len() {
                    match answer() {
                        Ok(m) => metadata.push(m),
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                match error {
                    Some(error) => Err(ProduceFailure {
                        error,
                        records,
                        pass_through,
                    }),
                    None => Ok(ProducerResult::MultiMessage {
                        parts: metadata.into_iter().zip(records).collect(),
                        pass_through,
                    }),
                }
            }
        }
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
                    records: entry.records.into_vec(),
                    pass_through: entry.pass_through,
                })));
            }
        }
        let mut registered = false;
        loop {
            let mut progressed = false;

            // 1. Send what is not sent yet, in order, while there is room.
            'send: while let Some(entry) = this.entries.get_mut(*this.unsent) {
                let Entry { records, sent, .. } = entry;
                let records = records.as_slice();
                while *sent < records.len() {
                    if this
                        .core
                        .poll_in_flight_below(cx, *this.max_in_flight)
                        .is_pending()
                    {
                        break 'send;
                    }
                    match send_one(this.core, &records[*sent], this.in_order.next_seq(), cx) {
                        Some(Ok(())) => this.in_order.sent(),
                        Some(Err(e)) => this.in_order.failed(e),
                        None => break 'send, // queue full: a delivery report wakes us
                    }
                    *sent += 1;
                    progressed = true;
                }
                *this.unsent += 1;
            }

            // 2. Hand out the oldest envelope once all its answers are in.
            if let Some(front) = this.entries.front_mut() {
                if front.fully_sent()
                    && this
                        .in_order
                        .poll_ready(front.sent, this.core, &mut registered, cx)
                {
                    let entry = this.entries.pop_front().expect("front exists");
                    *this.unsent = this.unsent.saturating_sub(1);
                    return Poll::Ready(Some(entry.finish(this.in_order)));
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

    #[test]
    fn a_record_that_could_not_be_queued_keeps_its_place_and_takes_no_report() {
        let mut in_order = InOrder::default();
        in_order.sent();
        in_order.failed(crate::error::Error::config("refused"));
        in_order.sent();
        assert_eq!(in_order.next_seq(), 3);
        assert!(!in_order.ready(1), "seq 0 has not been answered");
        // A report for seq 2 fills seq 2, not the failed record's slot.
        in_order.place([(2, at(12)), (0, at(10))].into_iter());
        assert!(in_order.ready(3));
        assert_eq!(offset(in_order.pop()), Some(10));
        assert!(in_order.pop().expect("answered").is_err());
        assert_eq!(offset(in_order.pop()), Some(12));
        assert!(!in_order.ready(1), "nothing is left");
    }

    #[test]
    fn ready_counts_only_answers_at_the_front() {
        let mut in_order = InOrder::default();
        for _ in 0..3 {
            in_order.sent();
        }
        in_order.place([(0, at(10)), (2, at(12))].into_iter());
        assert!(in_order.ready(1));
        assert!(!in_order.ready(2), "seq 1 is missing");
        in_order.place([(1, at(11))].into_iter());
        assert!(in_order.ready(3));
        in_order.skip();
        assert!(
            in_order.ready(2),
            "skipping keeps the count of those after it"
        );
        assert!(!in_order.ready(3));
        assert_eq!(offset(in_order.pop()), Some(11));
        assert_eq!(offset(in_order.pop()), Some(12));
    }
}
