//! Helpers for tests against a broker: unique names, producing and
//! consuming known records, waiting for a condition, group protocols.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};

use super::TestBroker;
use crate::error::{Error, ErrorKind, Result};
use crate::record::ProducerRecord;
use crate::settings::ConsumerSettings;

/// A name no other test of this process, and no earlier run against the same
/// broker, uses: `prefix-<process id>-<counter>-<clock>`. Use it for topics,
/// groups and transactional ids.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// Produces `n` records `key-i` / `value-i` to `topic`, record `i` to
/// partition `i % partitions`, and waits for every acknowledgement.
pub async fn produce_n(broker: &TestBroker, topic: &str, n: usize, partitions: i32) -> Result<()> {
    produce_n_with(broker.producer_settings(), topic, n, partitions).await
}

/// [`produce_n`] through a producer with `settings`.
pub(crate) async fn produce_n_with(
    settings: crate::ProducerSettings,
    topic: &str,
    n: usize,
    partitions: i32,
) -> Result<()> {
    let mut sink = crate::producer::plain_sink(settings)?;
    for i in 0..n {
        let record = ProducerRecord::new(topic)
            .partition((i % partitions.max(1) as usize) as i32)
            .key(format!("key-{i}"))
            .payload(format!("value-{i}"));
        sink.feed(record).await?;
    }
    sink.close().await
}

/// Takes `n` items from `stream` within `limit`. Fails with the stream's
/// error, or with a [`Timeout`](ErrorKind::Timeout) or
/// [`Closed`](ErrorKind::Closed) error that says how many items came.
pub async fn consume_n<S, T>(stream: &mut S, n: usize, limit: Duration) -> Result<Vec<T>>
where
    S: Stream<Item = Result<T>> + Unpin,
{
    let mut out = Vec::with_capacity(n);
    let taken = tokio::time::timeout(limit, async {
        while out.len() < n {
            match stream.next().await {
                Some(item) => out.push(item?),
                None => {
                    return Err(Error::closed(format!(
                        "the stream ended after {} of {n} items",
                        out.len()
                    )))
                }
            }
        }
        Ok(())
    })
    .await;
    match taken {
        Ok(result) => result.map(|()| out),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("only {} of {n} items within {limit:?}", out.len()),
        )),
    }
}

/// Waits until `done` returns true, checking every 20 ms; fails with a
/// [`Timeout`](ErrorKind::Timeout) error naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    wait_until_async(what, limit, || std::future::ready(done())).await
}

/// As [`wait_until`], with a condition that is itself async (for example a
/// read of committed offsets).
pub async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !done().await {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("{what}: not within {limit:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The group protocols and assignors a consumer can run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupProtocol {
    /// Classic protocol, `range` assignor: every rebalance revokes everything.
    Eager,
    /// Classic protocol, `cooperative-sticky`: only moved partitions are revoked.
    Cooperative,
    /// KIP-848 `consumer` protocol: the broker assigns, incrementally.
    Consumer,
}

impl TestBroker {
    /// Consumer settings for `group` on this broker with `protocol`, and the
    /// test settings of [`consumer_settings`](Self::consumer_settings).
    pub fn group_settings(&self, group: &str, protocol: GroupProtocol) -> ConsumerSettings {
        match protocol {
            GroupProtocol::Eager => self
                .consumer_settings(group)
                .property("partition.assignment.strategy", "range"),
            GroupProtocol::Cooperative => self
                .consumer_settings(group)
                .property("partition.assignment.strategy", "cooperative-sticky"),
            // `session.timeout.ms` and `heartbeat.interval.ms` belong to the
            // broker with this protocol and must not be set on the client.
            GroupProtocol::Consumer => ConsumerSettings::new(self.bootstrap_servers())
                .group_id(group)
                .auto_offset_reset(crate::AutoOffsetReset::Earliest)
                .property("group.protocol", "consumer")
                .property("fetch.wait.max.ms", "20")
                .property("topic.metadata.refresh.interval.ms", "1000")
                .connect_timeout(Duration::from_secs(20)),
        }
    }

    /// Creates a topic named `unique_name(prefix)` with `partitions`
    /// partitions and returns its name.
    pub async fn unique_topic(&self, prefix: &str, partitions: i32) -> Result<String> {
        let topic = unique_name(prefix);
        self.create_topic(&topic, partitions).await?;
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.starts_with("t-"));
    }

    #[tokio::test]
    async fn consume_n_reports_how_many_items_came() {
        let mut short = futures::stream::iter(vec![Ok::<_, Error>(1), Ok(2)]);
        let err = consume_n(&mut short, 3, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert!(err.to_string().contains("2 of 3"), "{err}");

        let mut pending = futures::stream::pending::<Result<i32>>();
        let err = consume_n(&mut pending, 1, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);

        let mut ok = futures::stream::iter(vec![Ok::<_, Error>(1), Ok(2), Ok(3)]);
        assert_eq!(
            consume_n(&mut ok, 2, Duration::from_secs(1)).await.unwrap(),
            vec![1, 2]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_gives_up_after_its_limit() {
        let err = wait_until("never", Duration::from_secs(1), || false)
            .await
            .unwrap_err();
        assert!(err.is_timeout());
        assert!(err.to_string().contains("never"));
        let mut n = 0;
        wait_until("third time", Duration::from_secs(1), || {
            n += 1;
            n == 3
        })
        .await
        .unwrap();
    }
}
