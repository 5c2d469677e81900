//! A circuit breaker that backpressures: while it is open, a service behind
//! it is not ready, so a stream feeding it stops pulling instead of failing
//! records fast; after the open period one call goes through as a probe
//! (half-open) and its outcome closes or reopens the breaker.
//!
//! Crate breakers (failsafe, tower-resilience) reject calls while open,
//! which here would fail or skip records; this one makes callers wait,
//! which is what keeps a consumer's records in order and its group
//! membership (the consumer thread polls on) while a downstream is away.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// The breaker's state, as [`CircuitBreaker::transitions`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls wait until the open period has passed.
    Open,
    /// One call (the probe) goes through; the others wait for its outcome.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Tasks waiting for the probe's outcome.
    waiting: Vec<Waker>,
    opened: u64,
}

/// A circuit breaker shared by every clone of the services it guards (see
/// [`layer`](Self::layer)): it opens after `max_failures` consecutive
/// failures, stays open `reset_timeout`, then lets one probe through.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    inner: Arc<Mutex<Inner>>,
    max_failures: u32,
    reset_timeout: Duration,
    transitions: watch::Sender<BreakerState>,
}

impl CircuitBreaker {
    /// Opens after `max_failures` consecutive failures (at least 1), for
    /// `reset_timeout` each time.
    pub fn new(max_failures: u32, reset_timeout: Duration) -> Self {
        CircuitBreaker {
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                waiting: Vec::new(),
                opened: 0,
            })),
            max_failures: max_failures.max(1),
            reset_timeout,
            transitions: watch::Sender::new(BreakerState::Closed),
        }
    }

    /// A tower layer that puts this breaker in front of a service.
    pub fn layer(&self) -> CircuitBreakerLayer {
        CircuitBreakerLayer {
            breaker: self.clone(),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.transitions.borrow()
    }

    /// Every state change, as it happens (a `watch` receiver: a slow reader
    /// sees the latest).
    pub fn transitions(&self) -> watch::Receiver<BreakerState> {
        self.transitions.subscribe()
    }

    /// How many times it opened.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, inner: &mut Inner, state: State) {
        let public = match state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        if matches!(state, State::Open { .. }) {
            inner.opened += 1;
        }
        inner.state = state;
        for w in inner.waiting.drain(..) {
            w.wake();
        }
        self.transitions.send_if_modified(|s| {
            let changed = *s != public;
            if changed {
                tracing::info!(from = ?*s, to = ?public, "circuit breaker");
            }
            *s = public;
            changed
        });
    }

    /// Ready when a call may go through: `Ok(true)` for the probe.
    fn poll_permit(&self, cx: &mut Context<'_>, sleep: &mut Option<Pin<Box<Sleep>>>) -> Poll<bool> {
        let mut inner = self.lock();
        loop {
            match inner.state {
                State::Closed { .. } => return Poll::Ready(false),
                State::Open { until } => {
                    if Instant::now() >= until {
                        self.set(&mut inner, State::HalfOpen { probing: false });
                        continue;
                    }
                    let timer =
                        sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    if timer.deadline() != until {
                        timer.as_mut().reset(until);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
                State::HalfOpen { probing: false } => {
                    inner.state = State::HalfOpen { probing: true };
                    return Poll::Ready(true);
                }
                State::HalfOpen { probing: true } => {
                    inner.waiting.push(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }

    /// Records a call's outcome.
    fn record(&self, probe: bool, ok: bool) {
        let mut inner = self.lock();
        match (&inner.state, probe, ok) {
            (_, true, true) => self.set(&mut inner, State::Closed { failures: 0 }),
            (_, true, false) => {
                let until = Instant::now() + self.reset_timeout;
                self.set(&mut inner, State::Open { until });
            }
            (State::Closed { .. }, false, true) => inner.state = State::Closed { failures: 0 },
            (State::Closed { failures }, false, false) => {
                let failures = failures + 1;
                if failures >= self.max_failures {
                    let until = Instant::now() + self.reset_timeout;
                    self.set(&mut inner, State::Open { until });
                } else {
                    inner.state = State::Closed { failures };
                }
            }
            // Calls that started before it opened: their outcome says
            // nothing the probe will not.
            _ => {}
        }
    }
}

/// Puts a [`CircuitBreaker`] in front of a service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: CircuitBreaker,
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            breaker: self.breaker.clone(),
            sleep: None,
            probe: false,
            permitted: false,
        }
    }
}

/// A service behind a [`CircuitBreaker`]: not ready while it is open.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    breaker: CircuitBreaker,
    sleep: Option<Pin<Box<Sleep>>>,
    probe: bool,
    permitted: bool,
}

impl<S: Clone> Clone for Guarded<S> {
    fn clone(&self) -> Self {
        Guarded {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            sleep: None,
            probe: false,
            permitted: false,
        }
    }
}

impl<S> Drop for Guarded<S> {
    /// A probe permit taken and never used goes back, so that the breaker
    /// does not wait for a probe that will not come.
    fn drop(&mut self) {
        if self.permitted && self.probe {
            let mut inner = self.breaker.lock();
            if matches!(inner.state, State::HalfOpen { probing: true }) {
                self.breaker
                    .set(&mut inner, State::HalfOpen { probing: false });
            }
        }
    }
}

impl<S, Req> Service<Req> for Guarded<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            match self.breaker.poll_permit(cx, &mut self.sleep) {
                Poll::Ready(probe) => {
                    self.probe = probe;
                    self.permitted = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let probe = std::mem::take(&mut self.probe);
        self.permitted = false;
        let breaker = self.breaker.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            breaker.record(probe, result.is_ok());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    /// A service that fails while `down` is set.
    fn downstream(
        down: Arc<AtomicBool>,
    ) -> impl Service<
        u32,
        Response = u32,
        Error = &'static str,
        Future = futures::future::Ready<Result<u32, &'static str>>,
    > + Clone {
        tower::service_fn(move |n: u32| {
            futures::future::ready(if down.load(Ordering::SeqCst) {
                Err("down")
            } else {
                Ok(n)
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_failures_waits_then_probes_once_and_closes() {
        let down = Arc::new(AtomicBool::new(true));
        let breaker = CircuitBreaker::new(3, Duration::from_secs(10));
        let mut transitions = breaker.transitions();
        let mut svc = breaker.layer().layer(downstream(down.clone()));
        for _ in 0..2 {
            assert!(svc.ready().await.unwrap().call(1).await.is_err());
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        assert!(svc.ready().await.unwrap().call(1).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
        transitions.changed().await.unwrap();
        assert_eq!(*transitions.borrow_and_update(), BreakerState::Open);

        // Not ready while open: a caller waits the whole reset timeout.
        let started = Instant::now();
        let mut other = svc.clone();
        assert!(
            tokio::time::timeout(Duration::from_secs(9), other.ready())
                .await
                .is_err(),
            "still open after 9 s"
        );
        down.store(false, Ordering::SeqCst);
        other.ready().await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);

        // Only the probe goes through; another caller waits for its outcome.
        let mut third = svc.clone();
        assert!(
            tokio::time::timeout(Duration::from_secs(60), third.ready())
                .await
                .is_err(),
            "one probe at a time"
        );
        assert_eq!(other.call(7).await, Ok(7));
        assert_eq!(breaker.state(), BreakerState::Closed);
        third.ready().await.unwrap();
        assert_eq!(breaker.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_for_the_reset_timeout() {
        let down = Arc::new(AtomicBool::new(true));
        let breaker = CircuitBreaker::new(1, Duration::from_secs(5));
        let mut svc = breaker.layer().layer(downstream(down.clone()));
        assert!(svc.ready().await.unwrap().call(1).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
        let started = Instant::now();
        assert!(
            svc.ready().await.unwrap().call(1).await.is_err(),
            "the probe fails"
        );
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.times_opened(), 2);
        down.store(false, Ordering::SeqCst);
        assert_eq!(svc.ready().await.unwrap().call(2).await, Ok(2));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "two open periods"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let down = Arc::new(AtomicBool::new(true));
        let breaker = CircuitBreaker::new(2, Duration::from_secs(5));
        let mut svc = breaker.layer().layer(downstream(down.clone()));
        assert!(svc.ready().await.unwrap().call(1).await.is_err());
        down.store(false, Ordering::SeqCst);
        assert!(svc.ready().await.unwrap().call(1).await.is_ok());
        down.store(true, Ordering::SeqCst);
        assert!(svc.ready().await.unwrap().call(1).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Closed, "1 of 2 again");
    }
}
