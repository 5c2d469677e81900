//! Supervision: the toolbox for services that run in a failing world.
//!
//! - [`restart`]: runs a pipeline and makes a new one when it fails, with
//!   capped exponential [`Backoff`] and jitter, a limit on restarts within a
//!   window, a reset after a healthy run, and one [`RestartControl`] across
//!   restarts. Fatal errors are not retried. Each run resumes from the
//!   committed offsets, so nothing is lost across restarts.
//! - [`Processing`]: each item's processing as a tower service call with a
//!   timeout, retries with backoff, a [`CircuitBreaker`] that backpressures
//!   (the stream stops pulling while the downstream is away; the consumer
//!   keeps its partitions) and bounded concurrency; [`blocking`] is a
//!   bulkhead for blocking work. Items whose retries run out come out as
//!   failed [`Outcome`]s, for a dead-letter topic or to end the stream.
//!
//! The engine's own commit retries use the same [`Backoff`].

mod breaker;
mod process;
mod restart;

pub use crate::backoff::Backoff;
pub use breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer, Guarded};
pub use process::{blocking, Outcome, Processing};
pub use restart::{restart, RestartControl, RestartMetrics, RestartSettings, RestartState};
