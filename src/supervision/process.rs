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

    /// Processes every item of `items`, at most `concurrency` at a time, and
    /// yields their outcomes in the items' order. Pulls an item only when
    /// one of the in-flight slots is free.
    pub fn run<S>(self, items: S) -> impl Stream<Item = Outcome<T, R>> + Send
    where
        S: Stream<Item = T> + Send,
    {
        let (service, concurrency) = self.build();
        items
            .map(move |item| {
                let service = service.clone();
                async move {
                    let result = service.oneshot(item.clone()).await.map_err(to_error);
                    Outcome { item, result }
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
