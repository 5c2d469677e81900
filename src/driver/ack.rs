//! Out-of-order acknowledgement: the committable watermark of a partition.
//!
//! The source registers every offset it hands out, in order (offsets may
//! have gaps: compacted topics, transaction markers). Processing acknowledges
//! offsets in any order. The watermark is the offset after the longest
//! acknowledged prefix of what was handed out: committing it never skips a
//! record still being processed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// Registered-but-not-yet-committable offsets of one consumer, summed over
/// its partitions; its sources wait while it is at its limit.
///
/// Every waiting source is woken when room comes back: a partitioned
/// source's sub-streams wait on it together, each with a waker of its own
/// (one waker slot, overwritten by the last to wait, left the others asleep
/// for good).
#[derive(Debug)]
pub(crate) struct Outstanding {
    count: AtomicUsize,
    max: usize,
    waiters: Mutex<Vec<Waker>>,
    /// True while `waiters` may hold a waker, so a release without waiters
    /// takes no lock.
    waiting: AtomicBool,
}

impl Outstanding {
    pub(crate) fn new(max: usize) -> Self {
        Outstanding {
            count: AtomicUsize::new(0),
            max,
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicBool::new(false),
        }
    }

    fn at_limit(&self) -> bool {
        self.count.load(Ordering::SeqCst) >= self.max
    }

    /// Adds the task's waker to those a release wakes.
    fn wait(&self, cx: &mut Context<'_>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        // Set before the caller looks at the count again, and the release
        // looks at it after its count changed (both sequentially
        // consistent): a release either sees the waiter or is seen by it.
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// Ready while below the limit; otherwise registers the waker, which an
    /// acknowledgement or a closed assignment wakes.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.at_limit() {
            self.wait(cx);
            if self.at_limit() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// Takes room for up to `want` records (at least one), ready once any
    /// is free; otherwise registers the waker, as [`Self::poll_room`].
    pub(crate) fn poll_reserve(&self, want: usize, cx: &mut Context<'_>) -> Poll<usize> {
        let granted = self.reserve(want);
        if granted > 0 {
            return Poll::Ready(granted);
        }
        self.wait(cx);
        match self.reserve(want) {
            0 => Poll::Pending,
            granted => Poll::Ready(granted),
        }
    }

    /// Takes room for up to `want` records, as much as is free.
    fn reserve(&self, want: usize) -> usize {
        let mut count = self.count.load(Ordering::SeqCst);
        loop {
            let granted = want.min(self.max.saturating_sub(count));
            if granted == 0 {
                return 0;
            }
            match self.count.compare_exchange_weak(
                count,
                count + granted,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return granted,
                Err(now) => count = now,
            }
        }
    }

    #[cfg(any(test, feature = "testkit"))]
    fn add(&self, n: usize) {
        self.count.fetch_add(n, Ordering::SeqCst);
    }

    /// Gives back room for `n` records and wakes every waiting source.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.count.fetch_sub(n, Ordering::SeqCst);
        self.wake_waiting();
    }

    /// Wakes every source waiting for room.
    fn wake_waiting(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            let waiters = {
                let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                self.waiting.store(false, Ordering::SeqCst);
                std::mem::take(&mut *waiters)
            };
            for waker in waiters {
                waker.wake();
            }
        }
    }
}

/// The acknowledgements of one assignment of one partition.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Handed out and not yet below the watermark, in offset order.
    offsets: VecDeque<Entry>,
    /// Next offset to commit (after the acknowledged prefix), once known.
    watermark: Option<i64>,
    /// The assignment ended: nothing more is tracked.
    closed: bool,
}

impl Entries {
    /// Appends offsets, neither acknowledged nor freed; returns how many.
    fn push(&mut self, offsets: impl Iterator<Item = i64>) -> usize {
        let before = self.offsets.len();
        self.offsets.extend(offsets.map(|offset| Entry {
            offset,
            acked: false,
            room_freed: false,
        }));
        self.offsets.len() - before
    }
}

/// A record handed out and not yet below the watermark.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    acked: bool,
    /// Its room was given back before it was acknowledged (held back).
    room_freed: bool,
}

impl AckTracker {
    /// Registers offsets handed out (ascending, after every earlier one),
    /// taking their room whatever the limit (the fake consumer's tests).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn register(&self, offsets: impl Iterator<Item = i64>, outstanding: &Outstanding) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if e.closed {
            return;
        }
        let added = e.push(offsets);
        outstanding.add(added);
    }

    /// Registers `offsets` (ascending, after every earlier one) whose room
    /// was taken with [`Outstanding::poll_reserve`], one per offset; gives
    /// it back if the assignment has ended.
    pub(crate) fn register_reserved(
        &self,
        offsets: impl Iterator<Item = i64>,
        outstanding: &Outstanding,
    ) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if e.closed {
            outstanding.release(offsets.count());
            return;
        }
        e.push(offsets);
    }

    /// Gives back the room of the record at `offset` without acknowledging
    /// it: a committer holds its offset back. The watermark still waits for
    /// it. An offset not tracked (never registered, below the watermark, or
    /// already freed) changes nothing.
    pub(crate) fn free_room(&self, offset: i64, outstanding: &Outstanding) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(i) = e.offsets.binary_search_by_key(&offset, |x| x.offset) {
            let entry = &mut e.offsets[i];
            if !entry.acked && !entry.room_freed {
                entry.room_freed = true;
                outstanding.release(1);
            }
        }
    }

    /// Acknowledges `offset`; returns the watermark (next offset to commit)
    /// when one exists. An offset that was never registered (or is already
    /// below the watermark) changes nothing.
    pub(crate) fn ack(&self, offset: i64, outstanding: &Outstanding) -> Option<i64> {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(i) = e.offsets.binary_search_by_key(&offset, |x| x.offset) {
            e.offsets[i].acked = true;
        }
        let mut freed = 0;
        while let Some(&Entry {
            offset,
            acked: true,
            room_freed,
        }) = e.offsets.front()
        {
            e.offsets.pop_front();
            e.watermark = Some(offset + 1);
            freed += usize::from(!room_freed);
        }
        outstanding.release(freed);
        e.watermark
    }

    /// The assignment ended: forget everything and free the source's room.
    /// Wakes every source waiting for room even if this one held none: the
    /// ended assignment's sub-stream may be waiting for room that others
    /// hold, and now only has to end.
    pub(crate) fn close(&self, outstanding: &Outstanding) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        e.closed = true;
        let n = e.offsets.iter().filter(|x| !x.room_freed).count();
        e.offsets.clear();
        // Pairs with the fence of a source that registered to wait and then
        // looks at its hand-over, released before this close.
        std::sync::atomic::fence(Ordering::SeqCst);
        outstanding.release(n);
        // `release` wakes only when it gave room back (then this finds no
        // waiter left).
        outstanding.wake_waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn the_watermark_waits_for_the_slowest_record() {
        let out = Outstanding::new(100);
        let t = AckTracker::default();
        t.register([10, 11, 13, 14].into_iter(), &out);
        assert_eq!(t.ack(11, &out), None);
        assert_eq!(t.ack(13, &out), None);
        // 12 was never handed out (a gap): the acknowledged prefix is 10, 11, 13.
        assert_eq!(t.ack(10, &out), Some(14));
        assert_eq!(t.ack(14, &out), Some(15));
        // Acknowledging again, or an offset never handed out, changes nothing.
        assert_eq!(t.ack(11, &out), Some(15));
        assert_eq!(t.ack(99, &out), Some(15));
    }

    #[test]
    fn room_is_taken_as_far_as_it_goes_and_waits_for_a_release() {
        let out = Outstanding::new(4);
        let t = AckTracker::default();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // A batch of 10 gets room for 4.
        assert_eq!(out.poll_reserve(10, &mut cx), Poll::Ready(4));
        t.register_reserved([0, 1, 2, 3].into_iter(), &out);
        assert_eq!(out.poll_reserve(6, &mut cx), Poll::Pending);
        // Two processed: room for two more.
        assert_eq!(t.ack(1, &out), None);
        assert_eq!(t.ack(0, &out), Some(2));
        assert_eq!(out.poll_reserve(6, &mut cx), Poll::Ready(2));
        // Room taken for an assignment that ended is given back.
        let ended = AckTracker::default();
        ended.close(&out);
        ended.register_reserved([7, 8].into_iter(), &out);
        assert_eq!(out.count.load(Ordering::Relaxed), 2);
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_release_wakes_every_source_waiting_for_room() {
        let out = Outstanding::new(1);
        let t = AckTracker::default();
        t.register([0].into_iter(), &out);
        let counts: Vec<Arc<Count>> = (0..3)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        for count in &counts {
            let waker = futures::task::waker(count.clone());
            let mut cx = Context::from_waker(&waker);
            assert_eq!(out.poll_reserve(1, &mut cx), Poll::Pending);
        }
        assert_eq!(t.ack(0, &out), Some(1));
        for count in &counts {
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn closing_an_assignment_that_held_no_room_wakes_the_waiting_sources() {
        let out = Outstanding::new(1);
        let holding = AckTracker::default();
        holding.register([0].into_iter(), &out);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures::task::waker(count.clone());
        assert_eq!(
            out.poll_room(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        // Another assignment, with nothing handed out, ends: its sub-stream
        // (the one waiting) must be woken to end, though no room came back.
        AckTracker::default().close(&out);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(out.at_limit(), "the room is still held");
    }

    #[test]
    fn a_held_record_gives_back_its_room_but_keeps_its_place() {
        let out = Outstanding::new(2);
        let t = AckTracker::default();
        t.register([0, 1].into_iter(), &out);
        assert!(out.at_limit());
        // A committer holds 1 back: the source may hand out 2.
        t.free_room(1, &out);
        t.free_room(1, &out);
        assert_eq!(out.count.load(Ordering::Relaxed), 1);
        t.register([2].into_iter(), &out);
        assert!(out.at_limit());
        assert_eq!(t.ack(0, &out), Some(1));
        // The watermark waits for the held record; 2 keeps its room.
        assert_eq!(t.ack(2, &out), Some(1));
        assert_eq!(out.count.load(Ordering::Relaxed), 1);
        // Releasing it frees nothing twice.
        assert_eq!(t.ack(1, &out), Some(3));
        assert_eq!(out.count.load(Ordering::Relaxed), 0);
        // Freeing an offset below the watermark changes nothing.
        t.free_room(1, &out);
        assert_eq!(out.count.load(Ordering::Relaxed), 0);
        // Closing frees only the room still taken.
        t.register([3, 4].into_iter(), &out);
        t.free_room(4, &out);
        t.close(&out);
        assert_eq!(out.count.load(Ordering::Relaxed), 0);
    }

    proptest! {
        /// Against a model: after each acknowledgement the watermark is the
        /// offset after the longest acknowledged prefix of the registered
        /// offsets, and never passes an unacknowledged one; the room taken
        /// is what is above that prefix and not held back.
        #[test]
        fn watermark_matches_the_model(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            held in proptest::collection::vec(any::<bool>(), 200),
            seed in any::<u64>(),
            max in 1usize..300,
        ) {
            let mut offsets = Vec::new();
            let mut o = 100;
            for g in gaps {
                o += g;
                offsets.push(o);
            }
            let out = Outstanding::new(max);
            let t = AckTracker::default();
            t.register(offsets.iter().copied(), &out);
            // A deterministic shuffle from the seed.
            let mut order: Vec<usize> = (0..offsets.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut acked = vec![false; offsets.len()];
            let mut freed = vec![false; offsets.len()];
            for &i in &order {
                if held[i] {
                    // Held back first, released later.
                    t.free_room(offsets[i], &out);
                    freed[i] = true;
                    let prefix = acked.iter().take_while(|a| **a).count();
                    let expected = (prefix..offsets.len()).filter(|&j| !freed[j]).count();
                    prop_assert_eq!(out.count.load(Ordering::Relaxed), expected);
                }
                acked[i] = true;
                let got = t.ack(offsets[i], &out);
                let prefix = acked.iter().take_while(|a| **a).count();
                let expected = (prefix > 0).then(|| offsets[prefix - 1] + 1);
                prop_assert_eq!(got, expected);
                if let Some(w) = got {
                    // Never past an unacknowledged offset.
                    prop_assert!(offsets.iter().zip(&acked).all(|(o, a)| *a || *o >= w));
                }
                let expected = (prefix..offsets.len()).filter(|&j| !freed[j]).count();
                prop_assert_eq!(out.count.load(Ordering::Relaxed), expected);
            }
        }
    }
}
