//! `Counted`, a shared pointer like `Arc` whose references can also be taken
//! and given back many at a time ([`Refs`]).
//!
//! A committable offset holds a reference to its batch's partition handle.
//! With `Arc`, each offset costs an atomic increment where the source makes
//! it and an atomic decrement where a committer drops it (13 ns together in
//! a loop on the benchmark machine; the pipeline's thread spent 6 to 7 ns a
//! record less without them). With `Refs`, the source takes the references of a whole
//! batch in one atomic add and a committer gives back those of the offsets it
//! folds away in one atomic subtraction per batch.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

/// The most references a value may have (as `Arc`'s limit): beyond it the
/// process aborts rather than let the count wrap.
const MAX_REFS: usize = isize::MAX as usize;

struct Inner<T> {
    count: AtomicUsize,
    value: T,
}

/// A shared, immutable value, freed with its last reference.
pub(crate) struct Counted<T> {
    ptr: NonNull<Inner<T>>,
    owns: PhantomData<Inner<T>>,
}

// SAFETY: as for `Arc<T>`: the value is shared between threads (`Sync`
// needed) and dropped on whichever thread drops the last reference (`Send`
// needed); the count is atomic.
unsafe impl<T: Send + Sync> Send for Counted<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Counted<T> {}

impl<T> Counted<T> {
    pub(crate) fn new(value: T) -> Self {
        let inner = Box::new(Inner {
            count: AtomicUsize::new(1),
            value,
        });
        Counted {
            ptr: NonNull::from(Box::leak(inner)),
            owns: PhantomData,
        }
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: this reference keeps the allocation alive.
        unsafe { self.ptr.as_ref() }
    }

    /// True when both point to the same value.
    pub(crate) fn ptr_eq(this: &Self, other: &Self) -> bool {
        this.ptr == other.ptr
    }

    /// `n` more references to this value, in one atomic add.
    pub(crate) fn refs(this: &Self, n: usize) -> Refs<T> {
        if n > 0 {
            add(&this.inner().count, n);
        }
        Refs {
            ptr: this.ptr,
            n,
            owns: PhantomData,
        }
    }

    /// How many references exist now (for tests).
    #[cfg(test)]
    fn count(this: &Self) -> usize {
        this.inner().count.load(Ordering::Acquire)
    }
}

/// Adds `n` references to `count`; aborts past [`MAX_REFS`]. Relaxed, as
/// `Arc::clone`: a new reference is made from one already held.
fn add(count: &AtomicUsize, n: usize) {
    let old = count.fetch_add(n, Ordering::Relaxed);
    if old.checked_add(n).is_none_or(|new| new > MAX_REFS) {
        std::process::abort();
    }
}

/// Gives back `n` references to the value at `ptr`, freeing it with the last.
///
/// # Safety
///
/// The caller owns `n` references to the value at `ptr` and uses none of
/// them after this call.
unsafe fn release<T>(ptr: NonNull<Inner<T>>, n: usize) {
    if n == 0 {
        return;
    }
    // SAFETY: the caller's references keep the allocation alive until the
    // subtraction below.
    let count = unsafe { &ptr.as_ref().count };
    // Release, then Acquire before freeing, as `Arc`'s drop: every use of
    // the value through another reference happens before it is freed.
    if count.fetch_sub(n, Ordering::Release) != n {
        return;
    }
    fence(Ordering::Acquire);
    // SAFETY: that was the last reference; the allocation came from the
    // `Box` leaked in `Counted::new`.
    drop(unsafe { Box::from_raw(ptr.as_ptr()) });
}

impl<T> Clone for Counted<T> {
    fn clone(&self) -> Self {
        add(&self.inner().count, 1);
        Counted {
            ptr: self.ptr,
            owns: PhantomData,
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        // SAFETY: this value owns one reference, not used again.
        unsafe { release(self.ptr, 1) }
    }
}

impl<T> Deref for Counted<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T: fmt::Debug> fmt::Debug for Counted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// References to one value held as a number, given back all at once when
/// dropped: [`take_of`](Self::take_of) one out without touching the shared count,
/// [`keep`](Self::keep) one in the same way.
pub(crate) struct Refs<T> {
    /// The value these references point to; dangling once `n` is 0 (never
    /// read then).
    ptr: NonNull<Inner<T>>,
    n: usize,
    owns: PhantomData<Inner<T>>,
}

// SAFETY: as for `Counted`: these are references to a `T`.
unsafe impl<T: Send + Sync> Send for Refs<T> {}
// SAFETY: as above; `&Refs` gives no access to the value.
unsafe impl<T: Send + Sync> Sync for Refs<T> {}

impl<T> Default for Refs<T> {
    fn default() -> Self {
        Refs {
            ptr: NonNull::dangling(),
            n: 0,
            owns: PhantomData,
        }
    }
}

impl<T> Refs<T> {
    /// A reference to `of`'s value: one of these when they point to it,
    /// otherwise one of `n` (at least one) taken anew in one atomic add,
    /// after giving back the ones held.
    pub(crate) fn take_of(&mut self, of: &Counted<T>, n: usize) -> Counted<T> {
        if self.n == 0 || self.ptr != of.ptr {
            *self = Counted::refs(of, n.max(1));
        }
        self.n -= 1;
        Counted {
            ptr: self.ptr,
            owns: PhantomData,
        }
    }

    /// Keeps `reference` as a number: added to these when they point to the
    /// same value (no atomic operation); otherwise these are given back and
    /// it becomes the one held.
    pub(crate) fn keep(&mut self, reference: Counted<T>) {
        let ptr = reference.ptr;
        std::mem::forget(reference);
        if self.n > 0 && self.ptr == ptr {
            self.n += 1;
        } else {
            *self = Refs {
                ptr,
                n: 1,
                owns: PhantomData,
            };
        }
    }
}

impl<T> Drop for Refs<T> {
    fn drop(&mut self) {
        // SAFETY: these are `n` references owned here, not used again.
        unsafe { release(self.ptr, self.n) }
    }
}

impl<T> fmt::Debug for Refs<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refs").field("n", &self.n).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Sets its flag when dropped.
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            assert!(!self.0.swap(true, Ordering::SeqCst), "dropped twice");
        }
    }

    fn flagged() -> (Counted<Flag>, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        (Counted::new(Flag(dropped.clone())), dropped)
    }

    #[test]
    fn the_value_is_dropped_once_with_its_last_reference() {
        let (a, dropped) = flagged();
        let b = a.clone();
        assert_eq!(Counted::count(&a), 2);
        drop(a);
        assert!(!dropped.load(Ordering::SeqCst));
        drop(b);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn references_taken_in_bulk_count_one_each_and_go_back_together() {
        let (a, dropped) = flagged();
        let mut refs = Refs::default();
        let taken: Vec<_> = (0..5).map(|_| refs.take_of(&a, 5)).collect();
        // One atomic add took all five; none is left in `refs`.
        assert_eq!(Counted::count(&a), 6);
        assert_eq!(refs.n, 0);
        assert!(taken.iter().all(|t| Counted::ptr_eq(t, &a)));
        let mut kept = Refs::default();
        for t in taken {
            kept.keep(t);
        }
        // Kept as a number: the shared count did not move.
        assert_eq!(Counted::count(&a), 6);
        drop(kept);
        assert_eq!(Counted::count(&a), 1);
        drop(a);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn refs_of_another_value_are_given_back_before_the_new_ones_are_held() {
        let (a, a_dropped) = flagged();
        let (b, b_dropped) = flagged();
        let mut refs = Refs::default();
        let from_a = refs.take_of(&a, 3);
        // Two of `a`'s are still held; taking one of `b` gives them back.
        assert_eq!(Counted::count(&a), 4);
        let from_b = refs.take_of(&b, 2);
        assert_eq!(Counted::count(&a), 2);
        assert_eq!(Counted::count(&b), 3);
        let mut kept = Refs::default();
        kept.keep(from_a);
        kept.keep(from_b);
        // Keeping `b`'s reference gave `a`'s back.
        assert_eq!(Counted::count(&a), 1);
        drop(a);
        assert!(a_dropped.load(Ordering::SeqCst));
        drop((b, refs));
        assert!(!b_dropped.load(Ordering::SeqCst));
        drop(kept);
        assert!(b_dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn the_last_references_may_be_held_as_a_number() {
        let (a, dropped) = flagged();
        let mut kept = Refs::default();
        kept.keep(a);
        assert!(!dropped.load(Ordering::SeqCst));
        drop(kept);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn references_given_back_on_many_threads_drop_the_value_once() {
        for _ in 0..100 {
            let (a, dropped) = flagged();
            let mut refs = Refs::default();
            let taken: Vec<_> = (0..64).map(|_| refs.take_of(&a, 64)).collect();
            drop(a);
            let threads: Vec<_> = taken
                .chunks(16)
                .map(|c| {
                    let c = c.to_vec();
                    std::thread::spawn(move || {
                        let mut kept = Refs::default();
                        for t in c {
                            kept.keep(t);
                        }
                    })
                })
                .collect();
            drop(taken);
            for t in threads {
                t.join().unwrap();
            }
            assert!(dropped.load(Ordering::SeqCst));
        }
    }
}
