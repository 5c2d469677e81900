//! The batching rules on a paused clock, with offsets of a fake consumer
//! that records commits: no broker, no real time.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::*;
use crate::driver::fake::FakeConsumer;
use crate::outcome::PartitionOffset;
use crate::record::TopicPartition;
use crate::settings::{CommitDelivery, CommitWhen};
use crate::ErrorKind;

fn offset(fake: &FakeConsumer, partition: i32, offset: i64) -> CommittableOffset {
    let tp = TopicPartition::new("t", partition);
    CommittableOffset {
        partition: fake.hand_out(&tp, offset),
        offset,
    }
}

fn po(partition: i32, offset: i64) -> PartitionOffset {
    PartitionOffset {
        tp: TopicPartition::new("t", partition),
        offset,
    }
}

/// A flow fed through a channel and driven by a task; its items arrive on
/// the returned receiver.
struct Running {
    offsets: Option<mpsc::UnboundedSender<CommittableOffset>>,
    outcomes: mpsc::UnboundedReceiver<Result<crate::CommitOutcome>>,
}

fn run(settings: CommitterSettings) -> Running {
    let (tx, rx) = mpsc::unbounded_channel();
    let offsets =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) });
    let mut flow = flow(settings, offsets).expect("valid settings");
    let (out_tx, outcomes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = flow.next().await {
            let _ = out_tx.send(item);
        }
    });
    Running {
        offsets: Some(tx),
        outcomes,
    }
}

impl Running {
    fn send(&self, offset: CommittableOffset) {
        self.offsets.as_ref().unwrap().send(offset).unwrap();
    }

    fn end(&mut self) {
        self.offsets = None;
    }

    /// Lets the flow's task run without moving the clock.
    async fn settle(&self) {
        settle().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_is_committed_at_once() {
    let fake = FakeConsumer::new();
    let running = run(CommitterSettings::default().max_batch(3));
    for o in 0..3 {
        running.send(offset(&fake, 0, o));
    }
    running.settle().await;
    assert_eq!(fake.commits(), vec![vec![po(0, 3)]]);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_waits_for_max_interval() {
    let fake = FakeConsumer::new();
    let mut running = run(CommitterSettings::default()
        .max_batch(100)
        .max_interval(Duration::from_secs(10)));
    running.send(offset(&fake, 0, 0));
    running.send(offset(&fake, 1, 7));
    running.settle().await;
    tokio::time::advance(Duration::from_millis(9_990)).await;
    running.settle().await;
    assert!(fake.commits().is_empty(), "committed before max_interval");
    tokio::time::advance(Duration::from_millis(20)).await;
    running.settle().await;
    assert_eq!(fake.commits(), vec![vec![po(0, 1), po(1, 8)]]);
    let outcome = running.outcomes.recv().await.unwrap().unwrap();
    assert_eq!(outcome.committed, vec![po(0, 1), po(1, 8)]);
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_offsets_commits_the_rest_and_ends_the_flow() {
    let fake = FakeConsumer::new();
    let mut running = run(CommitterSettings::default().max_interval(Duration::from_secs(3600)));
    running.send(offset(&fake, 0, 4));
    running.end();
    assert!(running.outcomes.recv().await.unwrap().is_ok());
    assert!(running.outcomes.recv().await.is_none(), "the flow ends");
    assert_eq!(fake.committed().get(&TopicPartition::new("t", 0)), Some(&5));
}

/// A commit the consumer still holds (librdkafka waits for the broker) is
/// not failed by a timer of the committer: it ends with the consumer's
/// answer (the driver's own deadline rule is tested with the pipeline).
#[tokio::test(start_paused = true)]
async fn a_commit_in_flight_is_not_failed_by_a_timer() {
    let fake = FakeConsumer::new();
    fake.hold_answers(true);
    let mut running = run(CommitterSettings::default().commit_timeout(Duration::from_secs(15)));
    running.send(offset(&fake, 0, 0));
    running.end();
    running.settle().await;
    tokio::time::advance(Duration::from_secs(120)).await;
    running.settle().await;
    assert!(running.outcomes.try_recv().is_err(), "failed by a timer");
    fake.hold_answers(false);
    let outcome = running.outcomes.recv().await.unwrap().unwrap();
    assert_eq!(outcome.committed, vec![po(0, 1)]);
    assert!(running.outcomes.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_fails_the_flow_unless_send_and_forget() {
    let fake = FakeConsumer::new();
    fake.fail_commits(1);
    let mut running = run(CommitterSettings::default().max_batch(1));
    running.send(offset(&fake, 0, 0));
    let err = running.outcomes.recv().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Commit);

    let fake = FakeConsumer::new();
    fake.fail_commits(1);
    let mut running = run(CommitterSettings::default()
        .max_batch(1)
        .delivery(CommitDelivery::SendAndForget));
    running.send(offset(&fake, 0, 0));
    running.send(offset(&fake, 0, 1));
    running.end();
    let outcome = running.outcomes.recv().await.unwrap().unwrap();
    assert_eq!(outcome.committed, vec![po(0, 2)]);
    assert!(running.outcomes.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn offsets_merge_while_every_commit_slot_is_busy() {
    let fake = FakeConsumer::new();
    fake.hold_answers(true);
    let mut running = run(CommitterSettings::default().max_batch(1).parallelism(1));
    for o in 0..5 {
        running.send(offset(&fake, 0, o));
    }
    running.settle().await;
    fake.hold_answers(false); // answers the first commit
    running.settle().await;
    running.end();
    while running.outcomes.recv().await.is_some() {}
    // One commit in flight; the four offsets that came meanwhile went out as one.
    assert_eq!(fake.commits(), vec![vec![po(0, 1)], vec![po(0, 5)]]);
}

#[tokio::test(start_paused = true)]
async fn a_revocation_commits_the_partial_batch_at_once() {
    let fake = FakeConsumer::new();
    let running = run(CommitterSettings::default()
        .max_batch(100)
        .max_interval(Duration::from_secs(3600)));
    running.send(offset(&fake, 0, 0));
    running.settle().await;
    assert!(fake.commits().is_empty());
    fake.hold_revocation(&TopicPartition::new("t", 0));
    running.settle().await;
    assert_eq!(fake.commits(), vec![vec![po(0, 1)]]);
    // While the revocation is held, each offset goes out without waiting.
    running.send(offset(&fake, 0, 1));
    running.settle().await;
    assert_eq!(fake.commits().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn partitions_that_are_not_revoked_keep_batching_during_a_revocation() {
    let fake = FakeConsumer::new();
    let running = run(CommitterSettings::default()
        .max_batch(100)
        .max_interval(Duration::from_secs(3600)));
    running.send(offset(&fake, 0, 0));
    running.settle().await;
    fake.hold_revocation(&TopicPartition::new("t", 0));
    running.settle().await;
    assert_eq!(fake.commits().len(), 1, "the revoked partition's offset");
    // Offsets of another partition do not go out one commit each.
    for o in 0..10 {
        running.send(offset(&fake, 1, o));
        running.settle().await;
    }
    assert_eq!(fake.commits().len(), 1, "{:?}", fake.commits());
    // An offset of the revoked partition takes them along.
    running.send(offset(&fake, 0, 1));
    running.settle().await;
    assert_eq!(fake.commits().len(), 2);
    assert_eq!(fake.commits()[1], vec![po(1, 10), po(0, 2)]);
}

/// Lets spawned tasks run without moving the clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Feeds offsets `from..to` of partition 0 to `sink`, flushing after every
/// three, as `forward` does when its source has nothing for a moment.
async fn feed_flushing(sink: &mut CommitterSink, fake: &FakeConsumer, from: i64, to: i64) {
    use futures::SinkExt;
    for o in from..to {
        sink.feed(offset(fake, 0, o)).await.expect("feed");
        if o % 3 == 2 {
            sink.flush().await.expect("flush");
        }
    }
    settle().await;
}

/// A committer sink (`max_batch` 3) whose first commit, of offsets 0..3 of
/// partition 0, is in flight: the fake consumer holds its answer.
async fn sink_with_a_commit_in_flight() -> (FakeConsumer, CommitterSink) {
    let fake = FakeConsumer::new();
    fake.hold_answers(true);
    let mut sink = sink(CommitterSettings::default().max_batch(3)).expect("sink");
    feed_flushing(&mut sink, &fake, 0, 3).await;
    assert_eq!(fake.requests(), 1, "a full batch goes out");
    (fake, sink)
}

#[tokio::test(start_paused = true)]
async fn the_sink_hands_offsets_over_without_a_wake_up_each_while_a_commit_is_in_flight() {
    let (fake, mut sink) = sink_with_a_commit_in_flight().await;
    // With the commit in flight, ten more full batches arrive, flushed each:
    // they wait in the sink's deposit instead of one commit request each.
    feed_flushing(&mut sink, &fake, 3, 33).await;
    assert_eq!(
        fake.requests(),
        1,
        "nothing more while the commit is in flight"
    );
    // The answer alone brings them out: nothing polls the sink after it.
    fake.hold_answers(false);
    settle().await;
    assert_eq!(fake.requests(), 2);
    assert_eq!(fake.commits(), vec![vec![po(0, 3)], vec![po(0, 33)]]);
    futures::SinkExt::close(&mut sink).await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn a_revocation_takes_the_offsets_a_deferring_sink_deposited_at_once() {
    let (fake, mut sink) = sink_with_a_commit_in_flight().await;
    feed_flushing(&mut sink, &fake, 3, 9).await;
    assert_eq!(fake.requests(), 1);
    fake.hold_revocation(&TopicPartition::new("t", 0));
    settle().await;
    assert_eq!(fake.requests(), 2, "the revoked partition's offsets go out");
    fake.hold_answers(false);
    settle().await;
    assert_eq!(fake.committed()[&TopicPartition::new("t", 0)], 9);
}

#[tokio::test(start_paused = true)]
async fn closing_the_sink_commits_what_it_deposited() {
    let (fake, mut sink) = sink_with_a_commit_in_flight().await;
    feed_flushing(&mut sink, &fake, 3, 10).await; // the last one buffered
    let close = tokio::spawn(async move { futures::SinkExt::close(&mut sink).await });
    settle().await;
    fake.hold_answers(false);
    close.await.expect("join").expect("close");
    assert_eq!(fake.committed()[&TopicPartition::new("t", 0)], 10);
}

/// With out-of-order commits the sink acknowledges each offset as it
/// receives it: offsets waiting in the sink while a commit is in flight do
/// not hold their partition's watermark back, so the source keeps handing
/// out records instead of waiting a commit round trip.
#[tokio::test(start_paused = true)]
async fn out_of_order_offsets_waiting_in_the_sink_do_not_hold_the_watermark() {
    let fake = FakeConsumer::out_of_order(2);
    fake.hold_answers(true);
    let mut sink = sink(CommitterSettings::default().max_batch(3)).expect("sink");
    feed_flushing(&mut sink, &fake, 0, 3).await;
    assert_eq!(fake.requests(), 1, "a full batch goes out");
    feed_flushing(&mut sink, &fake, 3, 9).await;
    assert_eq!(
        fake.requests(),
        1,
        "the offsets wait for the commit in flight"
    );
    assert!(
        fake.has_room(),
        "every record the sink received is behind the watermark"
    );
    fake.hold_answers(false);
    futures::SinkExt::close(&mut sink).await.expect("close");
    assert_eq!(fake.committed()[&TopicPartition::new("t", 0)], 9);
}

/// Acknowledged on receipt or not, the sink commits only the watermark:
/// never past a record it has not received.
#[tokio::test(start_paused = true)]
async fn out_of_order_the_sink_commits_nothing_past_a_record_still_in_flight() {
    use futures::SinkExt;
    let fake = FakeConsumer::out_of_order(100);
    let mut sink = sink(CommitterSettings::default().max_batch(2)).expect("sink");
    let (first, second, third) = (
        offset(&fake, 0, 0),
        offset(&fake, 0, 1),
        offset(&fake, 0, 2),
    );
    sink.feed(second).await.expect("feed");
    sink.feed(third).await.expect("feed");
    sink.flush().await.expect("flush");
    settle().await;
    assert!(fake.committed().is_empty(), "record 0 is still in flight");
    sink.feed(first).await.expect("feed");
    sink.close().await.expect("close");
    assert_eq!(fake.committed()[&TopicPartition::new("t", 0)], 3);
}

/// With `NextOffsetObserved` the newest offset of a partition is not
/// processed until a newer one arrives: the sink does not acknowledge it on
/// receipt, so the watermark waits for it; but it gives back its room in the
/// source, which must hand out that newer record (with a limit of one, the
/// held record kept the source from ever handing out another).
#[tokio::test(start_paused = true)]
async fn out_of_order_next_offset_observed_holds_the_newest_offset_outside_the_sources_room() {
    use futures::SinkExt;
    let fake = FakeConsumer::out_of_order(1);
    let mut sink = sink(
        CommitterSettings::default()
            .max_batch(1)
            .when(CommitWhen::NextOffsetObserved),
    )
    .expect("sink");
    sink.feed(offset(&fake, 0, 0)).await.expect("feed");
    sink.flush().await.expect("flush");
    settle().await;
    assert!(fake.has_room(), "held record 0 gives back its room");
    assert!(fake.commits().is_empty(), "record 0 is held, not processed");
    sink.feed(offset(&fake, 0, 1)).await.expect("feed");
    sink.flush().await.expect("flush");
    settle().await;
    assert_eq!(fake.commits(), vec![vec![po(0, 1)]]);
    assert!(fake.has_room(), "record 1 is held in its turn");
    sink.close().await.expect("close");
    assert_eq!(fake.committed()[&TopicPartition::new("t", 0)], 2);
}

#[tokio::test(start_paused = true)]
async fn next_offset_observed_holds_the_newest_offset_until_a_newer_one() {
    let fake = FakeConsumer::new();
    let mut running = run(CommitterSettings::default()
        .max_batch(1)
        .when(CommitWhen::NextOffsetObserved));
    running.send(offset(&fake, 0, 0));
    running.settle().await;
    assert!(fake.commits().is_empty(), "the only offset is held");
    running.send(offset(&fake, 0, 1));
    running.settle().await;
    assert_eq!(fake.commits(), vec![vec![po(0, 1)]]);
    running.end();
    while running.outcomes.recv().await.is_some() {}
    assert_eq!(fake.commits().last().unwrap(), &vec![po(0, 2)]);
}

/// Offsets of partitions 0 and 1 in a scrambled order, with repeats.
fn scrambled(fake: &FakeConsumer, seed: u64) -> Vec<CommittableOffset> {
    let mut x = seed;
    (0..60)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let partition = i32::from((x >> 60) as u8 % 3 == 0);
            offset(fake, partition, ((x >> 33) % 16) as i64)
        })
        .collect()
}

#[test]
fn runs_keep_a_partitions_two_highest_offsets_and_count_the_rest() {
    let fake = FakeConsumer::new();
    let first = offset(&fake, 0, 5);
    let mut offsets = vec![first.clone(), first, offset(&fake, 0, 3)];
    offsets.extend([7, 7, 6].map(|o| offset(&fake, 0, o)));
    offsets.push(offset(&fake, 1, 2));
    offsets.push(offset(&fake, 0, 8));
    let runs = run::runs(offsets);
    let shape: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.highest.topic_partition().partition,
                r.highest.offset(),
                r.next_highest.as_ref().map(CommittableOffset::offset),
                r.folded,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![(0, 7, Some(7), 4), (1, 2, None, 0), (0, 8, None, 0)]
    );
}

#[test]
fn absorbing_offsets_builds_the_runs_that_folding_them_builds() {
    // The sink folds each offset straight into the last run; a batch of
    // runs must not tell that from folding a run of each offset.
    let shape = |runs: &[run::Run]| -> Vec<_> {
        runs.iter()
            .map(|r| {
                (
                    r.highest.topic_partition().partition,
                    r.highest.offset(),
                    r.next_highest.as_ref().map(CommittableOffset::offset),
                    r.folded,
                    r.acknowledged,
                )
            })
            .collect()
    };
    for seed in 0..50 {
        for acknowledged in [false, true] {
            let fake = FakeConsumer::new();
            let offsets = scrambled(&fake, seed);
            let mut folded = Vec::new();
            for o in offsets.iter().cloned() {
                crate::task_sink::fold_into(&mut folded, run::Run::received(o, acknowledged));
            }
            let mut absorbed: Vec<run::Run> = Vec::new();
            for o in offsets {
                let left = match absorbed.last_mut() {
                    Some(last) => last.absorb(o, acknowledged),
                    None => Some(o),
                };
                if let Some(o) = left {
                    absorbed.push(run::Run::received(o, acknowledged));
                }
            }
            assert!(absorbed.len() > 1, "seed {seed}: both partitions");
            assert_eq!(shape(&absorbed), shape(&folded), "seed {seed}");
        }
    }
}

#[test]
fn a_batch_of_runs_commits_what_a_batch_of_each_offset_commits() {
    for seed in 0..50 {
        let fake = FakeConsumer::new();
        let offsets = scrambled(&fake, seed);
        let mut each = CommittableOffsetBatch::new();
        each.extend(offsets.iter().cloned());
        let mut folded = CommittableOffsetBatch::new();
        for r in run::runs(offsets) {
            folded.add_run(r);
        }
        assert_eq!(folded.offsets(), each.offsets(), "seed {seed}");
        assert_eq!(folded.len(), each.len(), "seed {seed}");
    }
}

#[test]
fn holding_runs_back_commits_what_holding_each_offset_back_commits() {
    // CommitWhen::NextOffsetObserved: the same offsets go to the batch, and
    // the same are held, whether the offsets come folded or one by one.
    for seed in 0..50 {
        let fake = FakeConsumer::new();
        let offsets = scrambled(&fake, seed);
        let (mut held_each, mut each) = (flow::Held::default(), CommittableOffsetBatch::new());
        held_each.observe(
            offsets.iter().cloned().map(run::Run::new).collect(),
            &mut each,
        );
        let (mut held_runs, mut folded) = (flow::Held::default(), CommittableOffsetBatch::new());
        held_runs.observe(run::runs(offsets), &mut folded);
        assert_eq!(folded.offsets(), each.offsets(), "seed {seed}");
        assert_eq!(folded.len(), each.len(), "seed {seed}");
        held_each.release(&mut each);
        held_runs.release(&mut folded);
        assert_eq!(folded.offsets(), each.offsets(), "seed {seed}");
    }
}
