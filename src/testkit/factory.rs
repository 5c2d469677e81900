//! Broker-free factories for unit tests of a user's pipeline (Alpakka's
//! `ConsumerResultFactory` and `ConsumerControlFactory`).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::consumer::{CommittableMessage, CommittableOffset, Control};
use crate::driver::fake::FakeConsumer;
use crate::error::Result;
use crate::outcome::{DrainReport, PartitionOffset};
use crate::record::{ConsumerRecord, KeyAndPayload, Timestamp, TopicPartition};

/// A consumer that exists only in a test: it makes [`CommittableMessage`]s
/// and [`CommittableOffset`]s whose commits (through a committer, a batch or
/// `commit()`) are recorded here instead of going to a broker, and a
/// [`Control`] whose `stop`, `shutdown` and `drain_and_shutdown` take effect
/// at once.
///
/// Commits are answered on the caller's thread, so a test on a paused tokio
/// clock stays deterministic. Each partition has one assignment: no offset is
/// ever stale.
///
/// ```
/// use std::time::Duration;
/// use futures::{Stream, StreamExt};
/// use reactive_kafka::testkit::CommitRecorder;
/// use reactive_kafka::{committer, CommittableMessage, CommitterSettings, TopicPartition};
///
/// /// The pipeline under test: keeps even payloads, commits every offset.
/// async fn pipeline(
///     source: impl Stream<Item = reactive_kafka::Result<CommittableMessage>> + Send + 'static,
/// ) -> reactive_kafka::Result<usize> {
///     let kept = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
///     let counter = kept.clone();
///     source
///         .map(move |msg| {
///             let msg = msg?;
///             if msg.record.payload().is_some_and(|p| p[0] % 2 == 0) {
///                 counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///             }
///             Ok(msg.offset)
///         })
///         .forward(committer::sink(CommitterSettings::default())?)
///         .await?;
///     Ok(kept.load(std::sync::atomic::Ordering::Relaxed))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let recorder = CommitRecorder::new();
/// let messages = (0..10).map(|i| recorder.message("orders", 0, i, None, vec![i as u8]));
/// let (source, _control) = recorder.source(messages);
/// assert_eq!(pipeline(source).await.unwrap(), 5);
/// // Every record's offset was committed: the next one to read is 10.
/// assert_eq!(recorder.committed()[&TopicPartition::new("orders", 0)], 10);
/// # }
/// ```
pub struct CommitRecorder {
    fake: FakeConsumer,
}

impl fmt::Debug for CommitRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitRecorder")
            .field("committed", &self.committed())
            .finish()
    }
}

impl Default for CommitRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl CommitRecorder {
    /// A recorder with nothing committed.
    pub fn new() -> Self {
        CommitRecorder {
            fake: FakeConsumer::new(),
        }
    }

    /// The offset of the record at `offset` of `topic`/`partition`, as a
    /// committable source would hand it out.
    pub fn offset(&self, topic: &str, partition: i32, offset: i64) -> CommittableOffset {
        let tp = TopicPartition::new(topic, partition);
        CommittableOffset {
            partition: self.fake.hand_out(&tp, offset),
            offset,
        }
    }

    /// A record with its committable offset, as a committable source would
    /// hand it out (create time now, no headers).
    pub fn message(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Bytes>,
        payload: impl Into<Bytes>,
    ) -> CommittableMessage {
        let now = now_millis();
        CommittableMessage {
            record: ConsumerRecord::new(
                topic,
                partition,
                offset,
                Timestamp::CreateTime(now),
                key.as_deref(),
                Some(&payload.into()),
                Vec::new(),
            ),
            offset: self.offset(topic, partition, offset),
        }
    }

    /// The records at `offsets` of `topic`/`partition` as one batch of a
    /// committable source: their offsets share one handle, and their
    /// payloads one buffer and their topic one name, as a batch's do, so a
    /// pipeline over them costs what it costs behind a source (create time
    /// now, no key, no headers, each with `payload`).
    pub fn batch(
        &self,
        topic: &str,
        partition: i32,
        offsets: std::ops::Range<i64>,
        payload: &[u8],
    ) -> Vec<CommittableMessage> {
        if offsets.is_empty() {
            return Vec::new();
        }
        let tp = TopicPartition::new(topic, partition);
        let handle = self.fake.hand_out_batch(&tp, offsets.clone());
        let data = Bytes::from(payload.repeat((offsets.end - offsets.start) as usize));
        let now = now_millis();
        offsets
            .enumerate()
            .map(|(i, offset)| CommittableMessage {
                record: ConsumerRecord::from_parts(
                    tp.topic.clone(),
                    partition,
                    offset,
                    Timestamp::CreateTime(now),
                    data.slice(i * payload.len()..(i + 1) * payload.len()),
                    KeyAndPayload::of(None, Some(payload)),
                    Vec::new(),
                ),
                offset: CommittableOffset {
                    partition: handle.clone(),
                    offset,
                },
            })
            .collect()
    }

    /// A stream of `messages`, shaped like a committable source's, and a
    /// [`Control`] of this recorder.
    pub fn source(
        &self,
        messages: impl IntoIterator<Item = CommittableMessage>,
    ) -> (BoxStream<'static, Result<CommittableMessage>>, Control) {
        let messages: Vec<_> = messages.into_iter().map(Ok).collect();
        (futures::stream::iter(messages).boxed(), self.control())
    }

    /// A [`Control`] of this recorder: `stop` stops and `shutdown` closes at
    /// once; `drain_and_shutdown` reports what this recorder committed
    /// against what its factories handed out.
    pub fn control(&self) -> Control {
        Control::new(self.fake.control_handle())
    }

    /// The highest committed offset (the next to read) of each partition.
    pub fn committed(&self) -> BTreeMap<TopicPartition, i64> {
        self.fake.committed()
    }

    /// Every commit in the order it arrived, each with its offsets.
    pub fn commits(&self) -> Vec<Vec<PartitionOffset>> {
        self.fake.commits()
    }

    /// What [`Control::drain_and_shutdown`] would report now.
    pub fn drain_report(&self) -> DrainReport {
        self.fake.drain_report()
    }

    /// While `true`, commits are not answered (a slow broker); set it back
    /// to `false` to answer the ones held, in order.
    pub fn hold_answers(&self, hold: bool) {
        self.fake.hold_answers(hold);
    }

    /// Holds a revocation of `topic`/`partition` for commits, as a
    /// consumer with rebalance-safe commits does during a rebalance:
    /// committers send that partition's offsets without waiting for their
    /// batch to fill (other partitions batch as usual). Make an offset of
    /// the partition first; the hold lasts as long as the recorder.
    pub fn hold_revocation(&self, topic: &str, partition: i32) {
        self.fake
            .hold_revocation(&TopicPartition::new(topic, partition));
    }

    /// Ends the consumer with an [`ErrorKind::Consume`](crate::ErrorKind::Consume)
    /// error carrying `message`, as a fatal consumer error would: the
    /// [`Control`]'s `is_shutdown` resolves with it.
    pub fn fail_consumer(&self, message: &str) {
        self.fake.fail(crate::error::Error::new(
            crate::ErrorKind::Consume,
            message.to_owned(),
        ));
    }

    /// Fails the next `n` commits with an [`ErrorKind::Commit`](crate::ErrorKind::Commit) error.
    pub fn fail_next_commits(&self, n: usize) {
        self.fake.fail_commits(n);
    }
}

/// The time now, as a record's timestamp.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{committer, CommitterSettings, ErrorKind};
    use std::time::Duration;

    #[tokio::test]
    async fn the_control_drains_against_what_was_handed_out() {
        let recorder = CommitRecorder::new();
        let a = recorder.offset("t", 0, 4);
        let _b = recorder.offset("t", 1, 0);
        a.commit().await.unwrap();
        let report = recorder
            .control()
            .drain_and_shutdown(Duration::from_secs(1))
            .await
            .unwrap();
        assert!(!report.complete);
        assert_eq!(report.uncommitted.len(), 1);
        assert_eq!(report.uncommitted[0].tp, TopicPartition::new("t", 1));
        assert_eq!(report.committed[0].offset, 5);
    }

    #[tokio::test]
    async fn a_failed_consumer_is_reported_by_its_control() {
        let recorder = CommitRecorder::new();
        let control = recorder.control();
        assert!(!control.is_closed());
        recorder.fail_consumer("broken");
        let err = control.is_shutdown().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Consume);
        assert_eq!(err.to_string(), "broken");
    }

    #[tokio::test]
    async fn a_batch_commits_like_its_records_one_by_one() {
        let recorder = CommitRecorder::new();
        let mut messages = recorder.batch("t", 0, 5..9, b"x");
        messages.extend(recorder.batch("t", 1, 0..3, b"yz"));
        let offsets: Vec<_> = messages
            .iter()
            .map(|m| {
                let r = &m.record;
                (
                    r.partition(),
                    r.offset(),
                    m.offset.offset(),
                    r.key(),
                    r.payload(),
                )
            })
            .collect();
        let (x, yz) = (Some(&b"x"[..]), Some(&b"yz"[..]));
        assert_eq!(
            offsets,
            [
                (0, 5, 5, None, x),
                (0, 6, 6, None, x),
                (0, 7, 7, None, x),
                (0, 8, 8, None, x),
                (1, 0, 0, None, yz),
                (1, 1, 1, None, yz),
                (1, 2, 2, None, yz)
            ]
        );
        // Each batch is handed out up to its last record.
        let handed: Vec<_> = recorder
            .drain_report()
            .uncommitted
            .into_iter()
            .map(|u| (u.tp.partition, u.committed_next, u.emitted_next))
            .collect();
        assert_eq!(handed, [(0, None, 9), (1, None, 3)]);
        let (source, control) = recorder.source(messages);
        source
            .map(|m| m.map(|m| m.offset))
            .forward(committer::sink(CommitterSettings::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            recorder.committed().into_iter().collect::<Vec<_>>(),
            [
                (TopicPartition::new("t", 0), 9),
                (TopicPartition::new("t", 1), 3)
            ]
        );
        // Everything handed out is committed.
        let report = control
            .drain_and_shutdown(std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert!(report.complete, "{report:?}");
    }

    #[tokio::test]
    async fn refused_commits_fail_the_committer() {
        let recorder = CommitRecorder::new();
        recorder.fail_next_commits(1);
        let (source, control) = recorder.source([recorder.message("t", 0, 0, None, "x")]);
        let err = source
            .map(|m| m.map(|m| m.offset))
            .forward(committer::sink(CommitterSettings::default()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Commit);
        // The failed committer ended the consumer with its error.
        assert_eq!(
            control.is_shutdown().await.unwrap_err().kind(),
            ErrorKind::Commit
        );
        assert!(recorder.committed().is_empty());
    }
}
