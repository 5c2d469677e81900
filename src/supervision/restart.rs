//! Restart with backoff: runs a pipeline made by a factory and makes a new
//! one when it fails, waiting a capped exponential backoff with jitter
//! between runs (Alpakka's `RestartSource`, around a whole pipeline).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::consumer::{Drained, DrainingControl};
use crate::error::{Error, Result};

/// When and how often [`restart`] makes a new pipeline.
#[derive(Debug, Clone, Copy)]
pub struct RestartSettings {
    backoff: Backoff,
    max_restarts: Option<(u32, Duration)>,
    reset_after: Duration,
    drain_timeout: Duration,
}

impl RestartSettings {
    /// Waits from `min_backoff`, doubling up to `max_backoff`, each wait up
    /// to `random_factor` longer (see [`Backoff`]). No limit on restarts; the
    /// backoff starts again from `min_backoff` after a run that lasted
    /// longer than `max_backoff`; a drain waits at most 30 s.
    pub fn new(min_backoff: Duration, max_backoff: Duration, random_factor: f64) -> Self {
        let backoff = Backoff::new(min_backoff, max_backoff, random_factor);
        RestartSettings {
            backoff,
            max_restarts: None,
            reset_after: backoff.max(),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// Gives up (ending with the last failure) when a failure would make
    /// more than `count` restarts within `within`.
    pub fn with_max_restarts(mut self, count: u32, within: Duration) -> Self {
        self.max_restarts = Some((count, within));
        self
    }

    /// A run that lasted at least this long counts as healthy: the next
    /// restart waits `min_backoff` again. Default: `max_backoff`.
    pub fn reset_after(mut self, healthy: Duration) -> Self {
        self.reset_after = healthy;
        self
    }

    /// How long draining a run may take: when a failed run is closed, and in
    /// [`RestartControl::drain_and_shutdown`] unless given there. Default 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The backoff between runs.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

/// What a [`RestartControl`] has seen so far.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RestartMetrics {
    /// Runs started, the first included.
    pub runs: u64,
    /// Runs made after a failure.
    pub restarts: u64,
    /// The last failure, if any.
    pub last_failure: Option<Error>,
    /// True while waiting the backoff before the next run.
    pub backing_off: bool,
}

/// What a supervised pipeline is doing, as a [`RestartControl`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartState {
    /// A run is going on.
    Running,
    /// A run failed; the next one starts after the backoff.
    BackingOff,
    /// It ended: a run completed, a failure was fatal or over the limit, or
    /// it was shut down.
    Ended,
}

type Finished<T> = Option<std::result::Result<Option<T>, Error>>;

struct Shared<T> {
    metrics: Mutex<RestartMetrics>,
    /// The outcome, once it ended: `Ok(Some(output))` when a run completed.
    outcome: Mutex<Finished<T>>,
}

/// The one handle on a supervised pipeline across its restarts.
pub struct RestartControl<T> {
    shared: Arc<Shared<T>>,
    state: watch::Receiver<RestartState>,
    stop: Mutex<Option<oneshot::Sender<StopRequest<T>>>>,
    drain_timeout: Duration,
}

impl<T> fmt::Debug for RestartControl<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestartControl")
            .field("state", &*self.state.borrow())
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// Runs the pipeline `make` builds (its consumer's `DrainingControl`, see
/// [`DrainingControl::spawn`]) and, when a run fails, waits the backoff and
/// makes the next one. `make` is given the number of the run (0 first).
///
/// Each run starts from the group's committed offsets, so a record a failed
/// run handed out but did not commit is read again (at-least-once across
/// restarts). A run that completes ends the supervision with its output. A
/// fatal error ([`Error::is_fatal`]: bad configuration, authentication,
/// ACL refusals) is not retried: it ends the supervision, as does a failure
/// over [`with_max_restarts`](RestartSettings::with_max_restarts). `make`
/// failing counts as a failed run. Must be called inside a tokio runtime.
pub fn restart<T, F>(settings: RestartSettings, make: F) -> RestartControl<T>
where
    T: Send + 'static,
    F: FnMut(u64) -> Result<DrainingControl<T>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        metrics: Mutex::new(RestartMetrics::default()),
        outcome: Mutex::new(None),
    });
    let (state_tx, state) = watch::channel(RestartState::Running);
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(supervise(settings, make, shared.clone(), state_tx, stop_rx));
    RestartControl {
        shared,
        state,
        stop: Mutex::new(Some(stop_tx)),
        drain_timeout: settings.drain_timeout,
    }
}

type StopRequest<T> = (Duration, oneshot::Sender<Result<Option<T>>>);

async fn supervise<T, F>(
    settings: RestartSettings,
    mut make: F,
    shared: Arc<Shared<T>>,
    state: watch::Sender<RestartState>,
    mut stop: oneshot::Receiver<StopRequest<T>>,
) where
    T: Send + 'static,
    F: FnMut(u64) -> Result<DrainingControl<T>>,
{
    let mut attempt = 0u32; // backoff step
    let mut restarts_at: Vec<Instant> = Vec::new();
    let mut run = 0u64;
    let finish = |outcome: std::result::Result<Option<T>, Error>| {
        *shared.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        let _ = state.send(RestartState::Ended);
    };
    loop {
        let started = Instant::now();
        {
            let mut m = shared.metrics.lock().unwrap_or_else(|p| p.into_inner());
            m.runs += 1;
            m.backing_off = false;
        }
        let _ = state.send(RestartState::Running);
        let failure = match make(run) {
            Err(e) => e,
            Ok(mut pipeline) => {
                tokio::select! {
                    _ = pipeline.ended() => {}
                    request = &mut stop => {
                        let timeout = request.as_ref().map_or(settings.drain_timeout, |(t, _)| *t);
                        let result = pipeline.drain_and_shutdown(timeout).await.map(|d| Some(d.output));
                        let reply = match &result { Ok(_) => Ok(None), Err(e) => Err(e.clone()) };
                        finish(reply);
                        if let Ok((_, tx)) = request {
                            let _ = tx.send(result);
                        }
                        return;
                    }
                }
                match pipeline.drain_and_shutdown(settings.drain_timeout).await {
                    Ok(Drained { output, .. }) => {
                        tracing::info!(run, "supervised pipeline completed");
                        finish(Ok(Some(output)));
                        return;
                    }
                    Err(e) => e,
                }
            }
        };
        run += 1;
        let lasted = started.elapsed();
        shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_failure = Some(failure.clone());
        if failure.is_fatal() {
            tracing::error!(error = %failure.report(), "supervised pipeline failed with a fatal error: not restarted");
            finish(Err(failure));
            return;
        }
        if lasted >= settings.reset_after {
            attempt = 0;
        }
        let now = Instant::now();
        if let Some((count, within)) = settings.max_restarts {
            restarts_at.retain(|t| now.duration_since(*t) < within);
            if restarts_at.len() as u32 >= count {
                let gave_up = failure.with_note(&format!(
                    "gave up: {count} restarts within {within:?} (max_restarts)"
                ));
                tracing::error!(error = %gave_up.report(), "supervised pipeline failed too often");
                finish(Err(gave_up));
                return;
            }
        }
        let wait = settings.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(error = %failure.report(), ?wait, run, "supervised pipeline failed; restarting after the backoff");
        {
            let mut m = shared.metrics.lock().unwrap_or_else(|p| p.into_inner());
            m.backing_off = true;
        }
        let _ = state.send(RestartState::BackingOff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            request = &mut stop => {
                finish(Ok(None));
                if let Ok((_, tx)) = request {
                    let _ = tx.send(Ok(None));
                }
                return;
            }
        }
        restarts_at.push(Instant::now());
        shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restarts += 1;
    }
}

impl<T> RestartControl<T> {
    /// Figures so far: runs, restarts, the last failure.
    pub fn metrics(&self) -> RestartMetrics {
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What it is doing now.
    pub fn state(&self) -> RestartState {
        *self.state.borrow()
    }
}

impl<T: Send + 'static> RestartControl<T> {
    /// Waits until the supervision ends by itself (a run completed, or a
    /// failure that is not restarted) or is shut down. Cancel safe.
    pub async fn ended(&mut self) {
        let _ = self.state.wait_for(|s| *s == RestartState::Ended).await;
    }

    /// The outcome, once ended: the completed run's output, `None` if it
    /// was shut down, or the failure that ended it. Waits for the end.
    pub async fn join(mut self) -> Result<Option<T>> {
        self.ended().await;
        // Every way the supervisor ends records an outcome; none means its
        // task died (the factory panicked): said, not taken for success.
        self.shared
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| {
                Err(Error::closed(
                    "the supervisor stopped without an outcome (did the pipeline factory panic?)",
                ))
            })
    }

    /// Stops supervising: drains and shuts down the current run (its output
    /// if it ended well, `None` if none was running) and cancels any pending
    /// restart, which returns at once. Bounded by the drain timeout of the
    /// settings.
    pub async fn drain_and_shutdown(self) -> Result<Option<T>> {
        let timeout = self.drain_timeout;
        self.drain_and_shutdown_within(timeout).await
    }

    /// [`drain_and_shutdown`](Self::drain_and_shutdown) with this drain timeout.
    pub async fn drain_and_shutdown_within(self, timeout: Duration) -> Result<Option<T>> {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (tx, rx) = oneshot::channel();
        if let Some(stop) = stop {
            if stop.send((timeout, tx)).is_ok() {
                if let Ok(result) = rx.await {
                    return result;
                }
            }
        }
        // Already ended by itself: its outcome.
        self.join().await
    }
}
