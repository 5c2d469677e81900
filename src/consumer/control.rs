use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::driver::{DriverHandle, DriverState};
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::{ConsumerMetrics, DrainReport};

/// librdkafka's statistics (see [`Control::statistics`]).
pub use rdkafka::statistics::Statistics;

/// Stops, drains and shuts down a source's consumer, and reports how it ended.
///
/// Cloneable; every clone controls the same consumer. The consumer is closed
/// when [`shutdown`](Self::shutdown) is called, when it fails, or when the
/// source stream and every `Control` have been dropped.
///
/// Cancel safety: each method sends its command before its first `.await`;
/// dropping the returned future does not cancel the command, only the wait.
#[derive(Clone)]
pub struct Control {
    handle: Arc<DriverHandle>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("consumer", &self.handle.id())
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl Control {
    pub(crate) fn new(handle: Arc<DriverHandle>) -> Self {
        Control { handle }
    }

    /// Stops fetching: the source ends after the records already handed to
    /// it. The consumer stays in its group, so offsets of records still being
    /// processed can be committed. Resolves once the consumer has stopped.
    pub async fn stop(&self) -> Result<()> {
        self.handle.stop()?;
        let mut rx = self.handle.state();
        let state = rx
            .wait_for(|s| !matches!(s, DriverState::Running))
            .await
            .map_err(|_| Error::closed("the consumer driver is gone"))?
            .clone();
        match state {
            DriverState::Closed(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops, waits for in-flight commits, leaves the group and closes the
    /// consumer. Resolves when it is closed, with the error that ended it if
    /// one did. Bounded by [`close_timeout`](crate::ConsumerSettings::close_timeout).
    pub async fn shutdown(&self) -> Result<()> {
        // If the driver is already gone this is not an error: wait reports how it ended.
        let _ = self.handle.shutdown();
        self.wait_closed(self.close_wait()).await
    }

    /// Stops fetching, waits up to `timeout` until every record the source
    /// handed out has had its offset committed (through any committer), then
    /// shuts down. The report says what was committed and what was not.
    ///
    /// Every call gets the same report: calls made at the same time, and
    /// calls made after the consumer closed (then the report says what was
    /// committed when it closed). A drain asked for while the consumer is
    /// still connecting returns at once, without waiting for the connect
    /// timeout.
    ///
    /// Records are "handed out" when the stream returned them; if the stream
    /// is dropped, records it held but never returned do not count. A record
    /// your pipeline filters out must still have its offset committed, or a
    /// later one of the same partition, for the drain to complete early.
    ///
    /// Bounded: resolves within `timeout` plus twice
    /// [`close_timeout`](crate::ConsumerSettings::close_timeout) and a
    /// second, or fails with [`ErrorKind::Timeout`] (a consumer whose close
    /// hangs in librdkafka: its thread is left to finish it).
    pub async fn drain_and_shutdown(&self, timeout: Duration) -> Result<DrainReport> {
        let limit = timeout + self.close_wait();
        // A consumer that is closed already answers with its final report.
        let report = match self.handle.drain(Instant::now() + timeout) {
            Ok(rx) => match tokio::time::timeout(limit, rx).await {
                Ok(report) => report.ok(),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("the consumer did not drain and close within {limit:?}"),
                    ))
                }
            },
            Err(_) => None,
        };
        self.wait_closed(self.close_wait()).await?;
        report
            .or_else(|| self.handle.final_report())
            .ok_or_else(|| Error::closed("the consumer closed before the drain finished"))
    }

    /// Resolves when the consumer is closed: `Ok` after a clean shutdown, the
    /// error otherwise (a fatal consumer error, an unreachable broker, a close
    /// that timed out). Does not ask it to close.
    pub async fn is_shutdown(&self) -> Result<()> {
        let mut rx = self.handle.state();
        let state = rx
            .wait_for(|s| matches!(s, DriverState::Closed(_)))
            .await
            .map_err(|_| Error::closed("the consumer driver is gone"))?
            .clone();
        match state {
            DriverState::Closed(result) => result,
            _ => unreachable!("wait_for returned a state that is not closed"),
        }
    }

    /// True once the consumer is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.handle.state_now(), DriverState::Closed(_))
    }

    /// How the consumer is doing: running or not, partitions assigned, time
    /// since the stream was last pulled, since the consumer thread last
    /// polled and since the last successful commit, stalls, the last error.
    pub fn health(&self) -> crate::outcome::ConsumerHealth {
        self.handle.health()
    }

    /// librdkafka's statistics, the latest each time they come (every
    /// `statistics.interval.ms`; `None` until the first, and always when
    /// that property is not set). A watch: a slow reader sees the latest
    /// and never holds the consumer thread back.
    pub fn statistics(&self) -> tokio::sync::watch::Receiver<Option<Arc<Statistics>>> {
        self.handle.statistics()
    }

    /// Per assigned partition, how many records it is behind the end of
    /// the partition, from the latest statistics (`consumer_lag`; partitions
    /// librdkafka does not know the lag of yet are left out). Empty without
    /// `statistics.interval.ms`.
    pub fn lag(&self) -> Vec<(crate::record::TopicPartition, i64)> {
        self.handle.lag()
    }

    /// A snapshot of the consumer's counters.
    pub fn metrics(&self) -> ConsumerMetrics {
        self.handle.metrics()
    }

    /// How long `shutdown` and `drain_and_shutdown` wait for the close:
    /// twice the close timeout and a second, for the final revocation.
    pub(crate) fn close_wait(&self) -> Duration {
        self.handle.close_timeout() * 2 + Duration::from_secs(1)
    }

    async fn wait_closed(&self, limit: Duration) -> Result<()> {
        match tokio::time::timeout(limit, self.is_shutdown()).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("the consumer did not close within {limit:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::fake::FakeConsumer;

    /// A consumer whose close hangs (in librdkafka) never answers the
    /// drain: the caller still gets an answer, a timeout, within the bound.
    #[tokio::test]
    async fn a_drain_of_a_consumer_whose_close_hangs_fails_within_its_bound() {
        let fake = FakeConsumer::new();
        fake.hang_close();
        let control = Control::new(fake.control_handle());
        let timeout = Duration::from_millis(100);
        let bound = timeout + control.close_wait();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            bound + Duration::from_secs(5),
            control.drain_and_shutdown(timeout),
        )
        .await
        .expect("drain_and_shutdown answers within its bound");
        let err = answer.expect_err("the consumer never closed");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(started.elapsed() < bound + Duration::from_secs(1));
    }
}
