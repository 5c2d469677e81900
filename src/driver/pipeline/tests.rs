//! The pipeline's rules, with a clock moved by hand and a target that
//! records what would go to the broker.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::oneshot::{self, error::TryRecvError};

use super::super::tests::{test_handle, test_link};
use super::*;

#[derive(Default)]
struct FakeTarget {
    /// (partition, generation) pairs assigned now.
    current: Vec<(TopicPartition, u64)>,
    committed: HashMap<(TopicPartition, u64), i64>,
    sends: Vec<Vec<PartitionOffset>>,
    refuse_sends: Option<RDKafkaErrorCode>,
    failures: usize,
    urgent: bool,
}

impl CommitTarget for FakeTarget {
    fn is_current(&self, tp: &TopicPartition, generation: u64) -> bool {
        self.current
            .iter()
            .any(|(t, g)| t == tp && *g == generation)
    }
    fn committed_next(&self, tp: &TopicPartition, generation: u64) -> Option<i64> {
        self.committed.get(&(tp.clone(), generation)).copied()
    }
    fn send(&mut self, offsets: &[PartitionOffset]) -> std::result::Result<(), KafkaError> {
        if let Some(code) = self.refuse_sends {
            return Err(KafkaError::ConsumerCommit(code));
        }
        self.sends.push(offsets.to_vec());
        Ok(())
    }
    fn urgent(&self) -> bool {
        self.urgent
    }
    fn committed(&mut self, tp: &TopicPartition, generation: u64, next: i64) {
        self.committed.insert((tp.clone(), generation), next);
    }
    fn failed(&mut self, _: &[(PartitionOffset, u64)], _: &Error, _: Instant) {
        self.failures += 1;
    }
}

struct Setup {
    link: Arc<DriverLink>,
    pipeline: CommitPipeline,
    target: FakeTarget,
    now: Instant,
}

/// A pipeline without spacing: every rule but `min_interval`'s.
fn setup() -> Setup {
    setup_spaced(Duration::ZERO)
}

fn setup_spaced(min_interval: Duration) -> Setup {
    let link = test_link(None);
    let mut target = FakeTarget::default();
    for p in 0..3 {
        target.current.push((tp(p), 1));
    }
    Setup {
        pipeline: CommitPipeline::new(link.clone(), "test", Some("group"), min_interval),
        link,
        target,
        now: Instant::now(),
    }
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

fn po(p: i32, offset: i64) -> PartitionOffset {
    PartitionOffset { tp: tp(p), offset }
}

type Reply = oneshot::Receiver<Result<CommitOutcome>>;

impl Setup {
    fn submit(&mut self, offsets: &[(i32, u64, i64)]) -> Reply {
        self.submit_until(offsets, self.now + Duration::from_secs(15))
    }

    fn submit_until(&mut self, offsets: &[(i32, u64, i64)], until: Instant) -> Reply {
        self.submit_as(offsets, until, false)
    }

    /// A committer's batch: waits for `min_interval` even with nothing in flight.
    fn submit_spaced(&mut self, offsets: &[(i32, u64, i64)]) -> Reply {
        self.submit_as(offsets, self.now + Duration::from_secs(15), true)
    }

    fn submit_as(&mut self, offsets: &[(i32, u64, i64)], until: Instant, spaced: bool) -> Reply {
        let offsets = offsets
            .iter()
            .map(|&(p, g, o)| (test_handle(&self.link, &tp(p), g), o))
            .collect();
        let (reply, rx) = oneshot::channel();
        self.pipeline
            .submit(offsets, reply, until, spaced, self.now, &mut self.target);
        rx
    }

    /// The broker answers the oldest commit sent.
    fn answer(&mut self, error: Option<RDKafkaErrorCode>) {
        let offsets = self.target.sends.last().expect("a commit was sent").clone();
        let partitions = offsets
            .iter()
            .map(|o| CommittedPartition {
                tp: o.tp.clone(),
                offset: Some(o.offset),
                error: None,
            })
            .collect();
        let result = match error {
            Some(code) => Err(KafkaError::ConsumerCommit(code)),
            None => Ok(()),
        };
        self.pipeline
            .answered(result, partitions, self.now, &mut self.target);
    }

    fn metric(&self, f: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.link.shared.counters).load(Ordering::Relaxed)
    }
}

fn outcome(rx: &mut Reply) -> CommitOutcome {
    rx.try_recv().expect("answered").expect("committed")
}

#[test]
fn requests_made_while_a_commit_is_in_flight_merge_into_the_next() {
    let mut s = setup();
    let mut first = s.submit(&[(0, 1, 5)]);
    assert_eq!(s.target.sends, vec![vec![po(0, 5)]]);
    let mut second = s.submit(&[(0, 1, 7), (1, 1, 3)]);
    let mut third = s.submit(&[(0, 1, 6)]);
    assert_eq!(s.target.sends.len(), 1, "one commit in flight at a time");
    assert_eq!(s.metric(|c| &c.commits_in_flight), 3);
    assert_eq!(second.try_recv().unwrap_err(), TryRecvError::Empty);

    s.answer(None);
    assert_eq!(outcome(&mut first).committed, vec![po(0, 5)]);
    // The two waiting requests went out as one commit, highest offset per partition.
    assert_eq!(s.target.sends[1], vec![po(0, 7), po(1, 3)]);
    s.answer(None);
    assert_eq!(outcome(&mut second).committed, vec![po(0, 7), po(1, 3)]);
    assert_eq!(outcome(&mut third).committed, vec![po(0, 6)]);
    assert_eq!(s.metric(|c| &c.commits), 2);
    assert_eq!(s.metric(|c| &c.commits_in_flight), 0);
    assert!(!s.pipeline.is_busy());
}

#[test]
fn offsets_of_ended_assignments_are_reported_stale_and_not_sent() {
    let mut s = setup();
    // Generation 2 of partition 0 is not assigned; partition 1 of generation 1 is.
    let mut rx = s.submit(&[(0, 2, 5), (1, 1, 9)]);
    assert_eq!(s.target.sends, vec![vec![po(1, 9)]]);
    s.answer(None);
    let o = outcome(&mut rx);
    assert_eq!(o.committed, vec![po(1, 9)]);
    assert_eq!(o.stale, vec![po(0, 5)]);

    let mut only_stale = s.submit(&[(0, 2, 6)]);
    assert_eq!(s.target.sends.len(), 1, "nothing sent for stale offsets");
    assert_eq!(outcome(&mut only_stale).stale, vec![po(0, 6)]);
    assert_eq!(s.metric(|c| &c.offsets_stale), 2);
}

#[test]
fn a_partition_revoked_while_its_request_waited_is_stale_at_send_time() {
    let mut s = setup();
    let _first = s.submit(&[(0, 1, 1)]);
    let mut waiting = s.submit(&[(1, 1, 4)]);
    s.target.current.retain(|(t, _)| *t != tp(1));
    s.answer(None);
    assert_eq!(s.target.sends.len(), 1);
    assert_eq!(outcome(&mut waiting).stale, vec![po(1, 4)]);
}

#[test]
fn a_committed_offset_never_moves_back() {
    let mut s = setup();
    s.target.committed.insert((tp(0), 1), 10);
    let mut rx = s.submit(&[(0, 1, 8)]);
    assert!(s.target.sends.is_empty(), "an older offset is not sent");
    assert_eq!(outcome(&mut rx).committed, vec![po(0, 8)]);
    let _reply = s.submit(&[(0, 1, 11)]);
    assert_eq!(s.target.sends, vec![vec![po(0, 11)]]);
}

#[test]
fn a_retriable_failure_is_retried_after_a_backoff_and_then_answered() {
    let mut s = setup();
    let mut rx = s.submit(&[(0, 1, 5)]);
    s.answer(Some(RDKafkaErrorCode::RequestTimedOut));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(s.metric(|c| &c.commit_retries), 1);
    assert_eq!(s.metric(|c| &c.commits_in_flight), 1);
    assert_eq!(s.target.failures, 1);

    // The first backoff is 40 to 60 ms.
    let due = s
        .pipeline
        .resend_due(s.now, &mut s.target)
        .expect("a retry");
    let wait = due - s.now;
    assert!(
        wait >= Duration::from_micros(37_500) && wait <= Duration::from_micros(62_500),
        "{wait:?}"
    );
    s.now += Duration::from_millis(30);
    s.pipeline.resend_due(s.now, &mut s.target);
    assert_eq!(s.target.sends.len(), 1, "not due yet");
    s.now = due;
    assert_eq!(s.pipeline.resend_due(s.now, &mut s.target), None);
    assert_eq!(s.target.sends.len(), 2);
    s.answer(None);
    assert_eq!(outcome(&mut rx).committed, vec![po(0, 5)]);
    assert_eq!(s.metric(|c| &c.commit_failures), 0);
}

#[test]
fn commit_retries_wait_40_to_60_ms_then_double_up_to_2_to_3_s() {
    let ms = Duration::from_millis;
    assert_eq!(RETRY_BACKOFF.bounds(0), (ms(40), ms(60)));
    assert_eq!(RETRY_BACKOFF.bounds(1), (ms(80), ms(120)));
    assert_eq!(RETRY_BACKOFF.bounds(5), (ms(1280), ms(1920)));
    assert_eq!(RETRY_BACKOFF.bounds(6), (ms(2000), ms(3000)));
    assert_eq!(RETRY_BACKOFF.bounds(30), (ms(2000), ms(3000)));
}

#[test]
fn retries_due_together_go_out_as_one_commit() {
    let mut s = setup();
    let mut a = s.submit(&[(0, 1, 5)]);
    let mut b = s.submit(&[(1, 1, 6)]);
    s.answer(Some(RDKafkaErrorCode::CoordinatorLoadInProgress));
    // `b` went out merged with nothing else once `a` failed; fail it too.
    s.answer(Some(RDKafkaErrorCode::CoordinatorLoadInProgress));
    assert_eq!(s.target.sends.len(), 2);
    s.now += RETRY_BACKOFF.bounds(u32::MAX).1;
    s.pipeline.resend_due(s.now, &mut s.target);
    assert_eq!(s.target.sends.len(), 3);
    assert_eq!(s.target.sends[2], vec![po(0, 5), po(1, 6)]);
    s.answer(None);
    outcome(&mut a);
    outcome(&mut b);
}

#[test]
fn a_failure_past_the_deadline_or_not_retriable_fails_the_request() {
    let mut s = setup();
    let until = s.now + Duration::from_millis(10);
    let mut rx = s.submit_until(&[(0, 1, 5)], until);
    s.answer(Some(RDKafkaErrorCode::RequestTimedOut));
    let err = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Commit);
    assert_eq!(err.rdkafka_code(), Some(RDKafkaErrorCode::RequestTimedOut));
    assert_eq!(s.metric(|c| &c.commit_failures), 1);

    let mut rx = s.submit(&[(0, 1, 6)]);
    s.answer(Some(RDKafkaErrorCode::InvalidCommitOffsetSize));
    assert!(
        rx.try_recv().unwrap().is_err(),
        "not retriable: fails at once"
    );
    assert_eq!(s.metric(|c| &c.commit_failures), 2);
    assert_eq!(s.metric(|c| &c.commits_in_flight), 0);
}

#[test]
fn a_request_that_runs_out_of_retries_says_how_long_it_tried() {
    let mut s = setup();
    // Retried once (first backoff 40 to 60 ms), not twice (second backoff
    // 80 to 120 ms from 100 ms passes the deadline), whatever the jitter.
    let until = s.now + Duration::from_millis(150);
    let mut rx = s.submit_until(&[(0, 1, 5)], until);
    s.answer(Some(RDKafkaErrorCode::RequestTimedOut));
    s.now += Duration::from_millis(100);
    s.pipeline.resend_due(s.now, &mut s.target);
    s.answer(Some(RDKafkaErrorCode::RequestTimedOut));
    let err = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(err.rdkafka_code(), Some(RDKafkaErrorCode::RequestTimedOut));
    let msg = err.to_string();
    assert!(msg.contains("gave up after 2 attempts over 100ms"), "{msg}");
    assert!(msg.contains("commit_timeout"), "{msg}");
}

#[test]
fn a_group_that_moved_on_is_waited_for() {
    let mut s = setup();
    let mut rx = s.submit(&[(0, 1, 5)]);
    s.answer(Some(RDKafkaErrorCode::IllegalGeneration));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(s.metric(|c| &c.commit_retries), 1);
}

#[test]
fn a_refused_send_counts_as_a_failed_commit() {
    let mut s = setup();
    s.target.refuse_sends = Some(RDKafkaErrorCode::InvalidArgument);
    let mut rx = s.submit(&[(0, 1, 5)]);
    let err = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(err.coordinates().unwrap().offset, Some(5));
    assert_eq!(s.target.failures, 1);
}

#[test]
fn closing_answers_every_request() {
    let mut s = setup();
    let mut sent = s.submit(&[(0, 1, 5)]);
    let mut queued = s.submit(&[(1, 1, 5)]);
    s.pipeline
        .fail_all(&Error::new(ErrorKind::Timeout, "the consumer closed"));
    for rx in [&mut sent, &mut queued] {
        assert_eq!(
            rx.try_recv().unwrap().unwrap_err().kind(),
            ErrorKind::Timeout
        );
    }
    assert!(!s.pipeline.is_busy());
    assert_eq!(s.metric(|c| &c.commits_in_flight), 0);
}

#[test]
fn a_commit_unanswered_at_its_deadline_fails_its_requests_and_a_late_answer_still_counts() {
    let mut s = setup();
    let until = s.now + Duration::from_secs(60);
    let mut first = s.submit_until(&[(0, 1, 5)], until);
    let mut second = s.submit_until(&[(1, 1, 3)], until + Duration::from_secs(30));
    assert_eq!(s.target.sends.len(), 1);
    s.now += Duration::from_secs(59);
    s.pipeline.resend_due(s.now, &mut s.target);
    assert_eq!(first.try_recv().unwrap_err(), TryRecvError::Empty);
    s.now += Duration::from_secs(1);
    s.pipeline.resend_due(s.now, &mut s.target);
    let err = first.try_recv().expect("answered").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("t-0@5"), "{err}");
    assert!(err.to_string().contains("commit_timeout"), "{err}");
    assert_eq!(
        second.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "its deadline is later"
    );
    // The coordinator answers at last: the offset is recorded, and the
    // queued request goes out.
    s.answer(None);
    assert_eq!(s.target.committed[&(tp(0), 1)], 5);
    assert_eq!(s.target.sends.len(), 2);
    s.answer(None);
    assert_eq!(outcome(&mut second).committed, vec![po(1, 3)]);
}

#[test]
fn commits_that_keep_coming_go_out_min_interval_apart_merged_unless_urgent() {
    let mut s = setup_spaced(Duration::from_millis(20));
    let start = s.now;
    let mut first = s.submit(&[(0, 1, 5)]);
    assert_eq!(s.target.sends.len(), 1, "nothing in flight: sent at once");
    let mut second = s.submit(&[(0, 1, 7)]);
    s.now += Duration::from_millis(2);
    s.answer(None);
    assert_eq!(outcome(&mut first).committed, vec![po(0, 5)]);

    // The second came while the first was in flight: it waits until 20 ms
    // after the first went out, and what comes meanwhile merges into it.
    assert_eq!(s.target.sends.len(), 1, "sent 2 ms after the last");
    assert_eq!(
        s.metric(|c| &c.commits_in_flight),
        1,
        "a waiting request counts"
    );
    s.now = start + Duration::from_millis(10);
    let mut third = s.submit(&[(1, 1, 3)]);
    let due = s.pipeline.resend_due(s.now, &mut s.target);
    assert_eq!(due, Some(start + Duration::from_millis(20)));
    assert_eq!(s.target.sends.len(), 1);
    s.now = start + Duration::from_millis(20);
    assert_eq!(s.pipeline.resend_due(s.now, &mut s.target), None);
    assert_eq!(
        s.target.sends[1],
        vec![po(0, 7), po(1, 3)],
        "merged into one"
    );
    s.answer(None);
    assert_eq!(outcome(&mut second).committed, vec![po(0, 7)]);
    assert_eq!(outcome(&mut third).committed, vec![po(1, 3)]);

    // One caller committing and waiting, one at a time, is not held back.
    s.now = start + Duration::from_millis(21);
    let mut alone = s.submit(&[(2, 1, 8)]);
    assert_eq!(
        s.target.sends[2],
        vec![po(2, 8)],
        "sent 1 ms after the last"
    );
    // Another comes while it is in flight; a revocation waiting (or a
    // close) does not wait for the interval.
    let mut urgent = s.submit(&[(2, 1, 9)]);
    s.answer(None);
    assert_eq!(outcome(&mut alone).committed, vec![po(2, 8)]);
    assert_eq!(s.target.sends.len(), 3);
    s.target.urgent = true;
    assert_eq!(s.pipeline.resend_due(s.now, &mut s.target), None);
    assert_eq!(s.target.sends[3], vec![po(2, 9)], "urgent: sent at once");
    s.answer(None);
    assert_eq!(outcome(&mut urgent).committed, vec![po(2, 9)]);
}

#[test]
fn a_committers_batch_waits_for_the_interval_with_nothing_in_flight() {
    let mut s = setup_spaced(Duration::from_millis(20));
    let start = s.now;
    let mut first = s.submit_spaced(&[(0, 1, 5)]);
    assert_eq!(s.target.sends.len(), 1, "the first commit goes out at once");
    s.now += Duration::from_millis(2);
    s.answer(None);
    assert_eq!(outcome(&mut first).committed, vec![po(0, 5)]);

    // The committer asks again once answered, with nothing in flight: it
    // still waits until 20 ms after the last commit went out.
    s.now = start + Duration::from_millis(3);
    let mut second = s.submit_spaced(&[(0, 1, 7)]);
    assert_eq!(s.target.sends.len(), 1, "sent 3 ms after the last");
    let due = s.pipeline.resend_due(s.now, &mut s.target);
    assert_eq!(due, Some(start + Duration::from_millis(20)));
    s.now = start + Duration::from_millis(20);
    assert_eq!(s.pipeline.resend_due(s.now, &mut s.target), None);
    assert_eq!(s.target.sends[1], vec![po(0, 7)]);
    s.answer(None);
    assert_eq!(outcome(&mut second).committed, vec![po(0, 7)]);
}
