//! The hand-over point between a source and the driver for one assignment
//! of one partition.
//!
//! One atomic holds the next offset after the last record the source handed
//! to the user, or "released". The source takes a record with one
//! compare-and-swap before it returns it; the driver releases the partition
//! by swapping in the sentinel. So once the driver releases a partition, no
//! record of it reaches the user, and every record that did is known to the
//! driver: a revocation waits exactly for those.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

#[derive(Debug)]
pub(crate) struct HandOver {
    handed_next: AtomicI64,
    /// The partition's revocation is held for commits: committers send its
    /// offsets without waiting for their batch to fill.
    revoking: AtomicBool,
}

impl HandOver {
    const NONE: i64 = -1;
    const RELEASED: i64 = i64::MIN;

    pub(crate) fn new() -> Self {
        HandOver {
            handed_next: AtomicI64::new(Self::NONE),
            revoking: AtomicBool::new(false),
        }
    }

    /// Called by the source before it hands out the record at `offset`;
    /// false once the partition is released (the record must be dropped).
    #[inline]
    pub(crate) fn hand(&self, offset: i64) -> bool {
        let current = self.handed_next.load(Ordering::Acquire);
        current != Self::RELEASED
            && self
                .handed_next
                .compare_exchange(current, offset + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Marks the partition's revocation held.
    pub(crate) fn start_revoking(&self) {
        self.revoking.store(true, Ordering::Release);
    }

    /// True while (or once) the partition's revocation is held.
    pub(crate) fn is_revoking(&self) -> bool {
        self.revoking.load(Ordering::Acquire)
    }

    /// True once released.
    pub(crate) fn is_released(&self) -> bool {
        self.handed_next.load(Ordering::Acquire) == Self::RELEASED
    }

    /// The next offset after the last record handed out (`None`: nothing
    /// handed out, or released).
    pub(crate) fn handed_next(&self) -> Option<i64> {
        match self.handed_next.load(Ordering::Acquire) {
            Self::NONE | Self::RELEASED => None,
            n => Some(n),
        }
    }

    /// Releases the assignment if nothing was handed out since the driver
    /// read `handed_next`; false if the source handed more meanwhile.
    pub(crate) fn release_if(&self, handed_next: Option<i64>) -> bool {
        let expected = handed_next.unwrap_or(Self::NONE);
        self.handed_next
            .compare_exchange(
                expected,
                Self::RELEASED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Releases the assignment whatever was handed out; returns that.
    pub(crate) fn release(&self) -> Option<i64> {
        match self.handed_next.swap(Self::RELEASED, Ordering::AcqRel) {
            Self::NONE | Self::RELEASED => None,
            n => Some(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_handed_after_release() {
        let h = HandOver::new();
        assert_eq!(h.handed_next(), None);
        assert!(h.hand(10));
        assert!(h.hand(11));
        assert_eq!(h.handed_next(), Some(12));
        assert_eq!(h.release(), Some(12));
        assert!(h.is_released());
        assert!(!h.hand(12));
        assert_eq!(h.handed_next(), None);
    }

    #[test]
    fn a_conditional_release_fails_if_more_was_handed_meanwhile() {
        let h = HandOver::new();
        assert!(h.hand(4));
        let seen = h.handed_next();
        assert!(h.hand(5));
        assert!(!h.release_if(seen));
        assert!(!h.is_released());
        assert!(h.release_if(h.handed_next()));
        assert!(h.is_released());
    }

    #[test]
    fn racing_hands_and_a_release_never_lose_a_handed_record() {
        // Whatever the interleaving, the offset reported at release covers
        // every record `hand` accepted.
        for _ in 0..50 {
            let h = std::sync::Arc::new(HandOver::new());
            let source = {
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut last = None;
                    for o in 0..10_000 {
                        if !h.hand(o) {
                            break;
                        }
                        last = Some(o);
                    }
                    last
                })
            };
            std::thread::yield_now();
            let released = h.release();
            let last = source.join().unwrap();
            assert_eq!(released, last.map(|o| o + 1));
        }
    }
}
