//! Processing with supervision: each item's processing as a tower service
//! call, with a timeout, retries with backoff, a circuit breaker that
//! backpressures, bounded concurrency, and a bulkhead for blocking work.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tower::retry::Policy;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::breaker::{BreakerState, CircuitBreaker};
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind};
use crate::serde::BoxError;

/// One item and what its processing gave: the response, or the error after
/// the retries (kind [`Timeout`](ErrorKind::Timeout) for a call that ran
/// out of time, [`Processing`](ErrorKind::Processing) otherwise). Route a
/// failed item to a dead-letter topic
/// ([`DeadLetters`](crate::producer::DeadLetters)) or end the stream with
/// its error.
#[derive(Debug)]
pub struct Outcome<T, R> {
    /// The item, as it came.
    pub item: T,
    /// What processing it gave.
    pub result: Result<R, Error>,
}

/// How each item is processed: a tower service (your call to a downstream)
/// with a timeout per call, retries with backoff, a circuit breaker and a
/// bound on items in flight. Built with [`Processing::new`] or
/// [`Processing::from_fn`], run over a stream with
/// [`run`](Processing::run).
///
/// Retries count only failures while the breaker is closed: a downstream
/// that is away opens the breaker and makes items wait (the stream stops
/// pulling beyond the items in flight; a consumer keeps its partitions, as
/// its thread polls on), it does not exhaust their retries. An item whose
/// retries run out while the downstream answers others is a failed
/// [`Outcome`].
pub struct Processing<T, R> {
    service: BoxCloneService<T, R, BoxError>,
    timeout: Option<Duration>,
    retries: u32,
    backoff: Backoff,
    breaker: Option<CircuitBreaker>,
    concurrency: usize,
}

impl<T, R> std::fmt::Debug for Processing<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processing")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("breaker", &self.breaker.as_ref().map(CircuitBreaker::state))
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl<T, R> Processing<T, R>
where
    T: Clone + Send + 'static,
    R: Send + 'static,
{
    /// Processing by `service`: no timeout, no retry, no breaker, one item
    /// at a time until configured.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<T, Response = R> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Processing {
            service: BoxCloneService::new(service.map_err(Into::into)),
            timeout: None,
            retries: 0,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10), 0.2),
            breaker: None,
            concurrency: 1,
        }
    }

    /// Processing by an async function.
    pub fn from_fn<F, Fut, E>(f: F) -> Self
    where
        F: Fn(T) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self::new(tower::service_fn(f))
    }

    /// Each call fails with [`ErrorKind::Timeout`] after `timeout` (and is
    /// retried like any failure).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A failed call is tried again up to `retries` times, waiting `backoff`.
    pub fn retries(mut self, retries: u32, backoff: Backoff) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Calls go through `breaker` (see [`CircuitBreaker`]).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// At most `n` items in flight (at least 1); outcomes keep the items'
    /// order.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The service with every layer: retry, then breaker, then timeout.
    fn build(self) -> (BoxCloneService<T, R, BoxError>, usize) {
        let policy = RetryPolicy {
            backoff: self.backoff,
            retries: self.retries,
            attempt: 0,
            breaker: self.breaker.clone(),
        };
        let service = ServiceBuilder::new()
            .retry(policy)
            .option_layer(self.breaker.as_ref().map(CircuitBreaker::layer))
            .option_layer(self.timeout.map(tower::timeout::TimeoutLayer::new))
            .service(self.service);
        (
            BoxCloneService::new(service.map_err(Into::into)),
            self.concurrency,
        )
    }

    /// Processes every item of `items` (a source's stream: an error item is
    /// the stream's own failure and passes through, in order), at most
    /// `concurrency` at a time, and yields their outcomes in the items'
    /// order. Pulls an item only when one of the in-flight slots is free.
    pub fn run<S>(self, items: S) -> impl Stream<Item = crate::Result<Outcome<T, R>>> + Send
    where
        S: Stream<Item = crate::Result<T>> + Send,
    {
        let (service, concurrency) = self.build();
        items
            .map(move |item| {
                let service = service.clone();
                async move {
                    let item = item?;
                    let result = service.oneshot(item.clone()).await.map_err(to_error);
                    Ok(Outcome { item, result })
                }
            })
            .buffered(concurrency)
    }
}

/// The crate's error for a failed call: `Timeout` for an elapsed timeout.
fn to_error(e: BoxError) -> Error {
    if e.is::<tower::timeout::error::Elapsed>() {
        Error::new(ErrorKind::Timeout, format!("processing timed out: {e}"))
    } else {
        match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::processing(format!("processing failed: {e}")),
        }
    }
}

/// Retries failures while the breaker (if any) is closed, up to `retries`.
#[derive(Debug, Clone)]
struct RetryPolicy {
    backoff: Backoff,
    retries: u32,
    attempt: u32,
    breaker: Option<CircuitBreaker>,
}

impl<T: Clone, R> Policy<T, R, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _: &mut T, result: &mut Result<R, BoxError>) -> Option<Self::Future> {
        if result.is_ok() {
            return None;
        }
        // A failure while the breaker is open or probing is the downstream's,
        // not this item's: the item waits for the breaker, it is not failed.
        let counts = self
            .breaker
            .as_ref()
            .is_none_or(|b| b.state() == BreakerState::Closed);
        if counts {
            if self.attempt >= self.retries {
                return None;
            }
            self.attempt += 1;
        }
        Some(tokio::time::sleep(
            self.backoff.delay(self.attempt.saturating_sub(1)),
        ))
    }

    fn clone_request(&mut self, req: &T) -> Option<T> {
        Some(req.clone())
    }
}

/// A bulkhead for blocking work: a service that runs `f` on tokio's
/// blocking pool, at most `max_concurrent` calls at once, so that blocking
/// calls neither stall the stream's async workers nor take every blocking
/// thread. A call waiting for a slot waits without blocking anything.
pub fn blocking<T, R, E, F>(
    max_concurrent: usize,
    f: F,
) -> impl Service<T, Response = R, Error = BoxError, Future = impl Send> + Clone + Send
where
    T: Send + 'static,
    R: Send + 'static,
    E: Into<BoxError> + Send + 'static,
    F: Fn(T) -> Result<R, E> + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
    tower::service_fn(move |item: T| {
        let (slots, f) = (slots.clone(), f.clone());
        async move {
            let slot = slots.acquire_owned().await.map_err(BoxError::from)?;
            tokio::task::spawn_blocking(move || {
                let _slot = slot; // held until the work is done, even after a timeout
                f(item).map_err(Into::into)
            })
            .await
            .map_err(BoxError::from)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bulkhead_bounds_blocking_calls_and_keeps_the_workers_free() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let work = blocking(2, move |n: u64| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50)); // blocking on purpose
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(n * 2)
        });
        let processing = Processing::new(work).concurrency(8);
        let items = futures::stream::iter((0..16u64).map(Ok));
        // An async task keeps running on the workers meanwhile.
        let ticks = tokio::spawn(async {
            let mut n = 0;
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                n += 1;
            }
            n
        });
        let outcomes: Vec<_> = processing.run(items).collect().await;
        let doubled: Vec<u64> = outcomes
            .into_iter()
            .map(|o| o.unwrap().result.unwrap())
            .collect();
        assert_eq!(
            doubled,
            (0..16).map(|n| n * 2).collect::<Vec<_>>(),
            "in order"
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "at most 2 blocking calls at once"
        );
        assert_eq!(ticks.await.unwrap(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_that_keeps_failing_comes_out_failed_after_its_retries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let processing = Processing::from_fn(move |n: u32| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if n == 3 {
                    Err("refused")
                } else {
                    Ok(n)
                }
            }
        })
        .retries(
            2,
            Backoff::new(Duration::from_millis(10), Duration::from_millis(10), 0.0),
        )
        .timeout(Duration::from_secs(1));
        let outcomes: Vec<_> = processing
            .run(futures::stream::iter((0..5u32).map(Ok)))
            .collect()
            .await;
        let failed: Vec<u32> = outcomes
            .iter()
            .filter_map(|o| {
                o.as_ref()
                    .unwrap()
                    .result
                    .as_ref()
                    .err()
                    .map(|_| o.as_ref().unwrap().item)
            })
            .collect();
        assert_eq!(failed, [3]);
        let err = outcomes[3].as_ref().unwrap().result.as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Processing);
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4 + 3,
            "one call each, three for the refused one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_runs_out_of_time_is_a_timeout() {
        let processing = Processing::from_fn(|n: u32| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, BoxError>(n)
        })
        .timeout(Duration::from_secs(1));
        let outcomes: Vec<_> = processing
            .run(futures::stream::iter([Ok(1u32)]))
            .collect()
            .await;
        let err = outcomes[0].as_ref().unwrap().result.as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    }
}
