use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Control;
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::DrainReport;

/// A consumer's [`Control`] together with the task that runs its pipeline,
/// so that one call drains the consumer, waits for the pipeline to end and
/// returns the pipeline's own result with the drain report.
///
/// This is the shutdown order that loses nothing and reports everything:
///
/// 1. stop fetching (the source ends after the records already handed out);
/// 2. let the pipeline finish those records and its committer commit them,
///    up to the drain timeout;
/// 3. wait for the pipeline task to end and take its result;
/// 4. leave the group and close the consumer.
///
/// ```no_run
/// use std::time::Duration;
/// use futures::StreamExt;
/// use reactive_kafka::consumer::{self, DrainingControl};
/// use reactive_kafka::{committer, CommitterSettings, ConsumerSettings, Subscription};
///
/// # async fn run() -> reactive_kafka::Result<()> {
/// let settings = ConsumerSettings::new("localhost:9092").group_id("orders");
/// let (source, control) = consumer::committable_source(settings, Subscription::topics(["orders"]))?;
/// let mut pipeline = DrainingControl::spawn(control, async move {
///     source
///         .map(|m| m.map(|m| m.offset)) // process m.record here
///         .forward(committer::sink(CommitterSettings::default())?)
///         .await
/// });
/// tokio::select! {
///     _ = consumer::shutdown_signal() => {} // SIGTERM or Ctrl-C
///     _ = pipeline.ended() => {}            // it failed or ended on its own
/// }
/// let drained = pipeline.drain_and_shutdown(Duration::from_secs(30)).await?;
/// println!("{:?}", drained.report);
/// # Ok(())
/// # }
/// ```
///
/// Dropping a `DrainingControl` does not stop the pipeline task.
pub struct DrainingControl<T> {
    control: Control,
    task: Option<JoinHandle<Result<T>>>,
    ended: Option<Result<T>>,
}

/// What [`DrainingControl::drain_and_shutdown`] returns when the pipeline
/// ended without error.
#[derive(Debug)]
#[non_exhaustive]
pub struct Drained<T> {
    /// What the pipeline task returned.
    pub output: T,
    /// What was committed, left uncommitted and lost.
    pub report: DrainReport,
}

impl<T: Send + 'static> DrainingControl<T> {
    /// Spawns `pipeline` on the current tokio runtime and pairs it with
    /// `control`.
    pub fn spawn(
        control: Control,
        pipeline: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Self {
        Self::new(control, tokio::spawn(pipeline))
    }
}

impl<T> DrainingControl<T> {
    /// Pairs `control` with a pipeline task spawned already.
    pub fn new(control: Control, task: JoinHandle<Result<T>>) -> Self {
        DrainingControl {
            control,
            task: Some(task),
            ended: None,
        }
    }

    /// The consumer's control, for metrics or a plain `stop`.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Resolves when the pipeline task has ended, with an error or not
    /// (its result is kept for [`drain_and_shutdown`](Self::drain_and_shutdown)).
    /// A failure of the consumer or of its committer ends the pipeline at
    /// once, so select on this beside your shutdown signal. Cancel safe.
    pub async fn ended(&mut self) {
        if let Some(task) = &mut self.task {
            let result = join_result(task.await);
            self.task = None;
            self.ended = Some(result);
        }
    }

    /// Kills the pipeline: aborts its task and shuts the consumer down
    /// without a drain, so nothing processed since the last commit is
    /// committed (those records are read again by the partitions' next
    /// owner), as when the process crashes. Returns at once; the consumer
    /// closes in the background.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let control = self.control.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = control.shutdown().await;
            });
        }
    }

    /// True once the pipeline task has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.is_some() || self.task.as_ref().is_some_and(|t| t.is_finished())
    }

    /// Drains the consumer (see [`Control::drain_and_shutdown`]), waits for
    /// the pipeline task to end and closes the consumer.
    ///
    /// Returns the pipeline's error if it failed (that failure is what ended
    /// the consumer; a pipeline that already failed is not drained, as
    /// nothing more of it will commit: the consumer is closed at once),
    /// else the drain's error, else the pipeline's output and
    /// the drain report. Bounded: `timeout` plus the consumer's close wait
    /// (twice `close_timeout` and one second) for the drain and the
    /// consumer's close (a close that hangs in librdkafka is reported as an
    /// [`ErrorKind::Timeout`] error), then at most the close wait again for
    /// the pipeline to end; a pipeline still running then is aborted and
    /// reported as an [`ErrorKind::Timeout`] error.
    pub async fn drain_and_shutdown(mut self, timeout: Duration) -> Result<Drained<T>> {
        if self.is_ended() {
            self.ended().await;
        }
        if let Some(Err(e)) = &self.ended {
            // The pipeline failed: nothing it handed out will be committed
            // any more, so there is nothing to wait for. Close at once.
            let _ = self.control.shutdown().await;
            return Err(e.clone());
        }
        let report = self.control.drain_and_shutdown(timeout).await;
        if let Some(task) = self.task.take() {
            // The source ended when the drain stopped it; the pipeline has
            // only its last commits and its sink's close left to do.
            let limit = self.control.close_wait();
            let abort = task.abort_handle();
            self.ended = Some(match tokio::time::timeout(limit, task).await {
                Ok(joined) => join_result(joined),
                Err(_) => {
                    abort.abort();
                    Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the pipeline did not end within {limit:?} after its consumer was drained; aborted"
                        ),
                    ))
                }
            });
        }
        let output = self.ended.take().expect("the pipeline's result is kept")?;
        Ok(Drained {
            output,
            report: report?,
        })
    }
}

fn join_result<T>(joined: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_string());
            Err(Error::new(
                ErrorKind::Closed,
                format!("the pipeline task panicked: {message}"),
            ))
        }
        Err(_) => Err(Error::new(
            ErrorKind::Closed,
            "the pipeline task was cancelled",
        )),
    }
}

impl<T> fmt::Debug for DrainingControl<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainingControl")
            .field("control", &self.control)
            .field("ended", &self.is_ended())
            .finish()
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or, on Unix,
/// SIGTERM (what container orchestrators send). Select on it beside
/// [`DrainingControl::ended`], then call
/// [`DrainingControl::drain_and_shutdown`].
///
/// If a signal handler cannot be installed, the failure is logged once at
/// `error` and that signal is never reported (the other still is).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
