//! The driver thread: the only code that calls librdkafka's consumer API.
//!
//! Each pass: take commands, serve the main queue (rebalances, commit results,
//! errors), then, while the sources have room, deliver from the records
//! queue every assigned partition's queue is forwarded to. When a source is
//! not pulled the records queue is simply not drained (librdkafka stops
//! fetching once its prefetch limits, which then hold for the whole
//! consumer, are reached), while the main queue keeps being served, so the
//! consumer stays in its group however long the stall lasts. Nothing is
//! paused for a single stream, so nothing prefetched is thrown away; a
//! partitioned source pauses only a partition whose own sub-stream is full
//! while others read on (see `Driver::deliver`).

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::ack::AckTracker;
use super::context::{self, ContextEvent, DriverConsumer};
use super::delivery::{deliver_batch, flush_pending, pending_records, Delivered};
use super::ffi::{MessageBuf, QueueRef, ReadError, RecordsQueue, Run};
use super::missing::MissingTopics;
use super::pipeline::{CommitPipeline, CommitTarget};
use super::records::{BatchSize, RecordBuilder};
use super::revocation::RevocationHolds;
use super::table::{Partition, PartitionTable};
use super::{
    Command, Counters, DriverLink, DriverState, HandOver, PartitionHandle, RecordBatch,
    SourceScope, SubSource,
};
use crate::counted::Counted;
use crate::error::{consumer_error_class, Error, ErrorClass, ErrorKind, Report, Result};
use crate::outcome::{CommitOutcome, DrainReport, PartitionOffset};
use crate::record::TopicPartition;
use crate::subscription::{StartOffset, Subscription};

/// Where the driver delivers records.
pub(super) enum Output {
    /// Every partition into one stream.
    Single(tokio::sync::mpsc::Sender<RecordBatch>),
    /// A sub-stream per assigned partition, announced on this channel.
    Partitioned(tokio::sync::mpsc::UnboundedSender<SubSource>),
}

/// How long one try to reach the cluster at start-up waits, so that
/// commands are served between tries.
const CONNECT_TRY: Duration = Duration::from_millis(200);

/// How start-up ended.
enum Started {
    Running,
    /// A shutdown or a drain came before the cluster answered.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    Stopped,
    Closing { deadline: Instant },
}

/// At most this many main-queue events are served a pass, so that records
/// keep flowing while a backlog of log lines is worked off.
const MAIN_QUEUE_EVENTS_PER_PASS: usize = 1024;

pub(super) struct Driver {
    /// Where commit results arrive; released before the consumer.
    pub(super) commit_queue: Option<QueueRef>,
    /// The queue the main-queue poll serves, to see whether events wait;
    /// released before the consumer.
    pub(super) polled_queue: Option<QueueRef>,
    /// Where every assigned partition's records arrive (`None` if librdkafka
    /// could not make it: records then arrive on the consumer queue);
    /// released before the consumer.
    pub(super) records: Option<Arc<RecordsQueue>>,
    pub(super) consumer: Option<Arc<DriverConsumer>>,
    pub(super) link: Arc<DriverLink>,
    pub(super) commands: mpsc::Receiver<Command>,
    /// `None` once the source stopped or was dropped: nothing is delivered
    /// to partitions assigned after that.
    pub(super) output: Option<Output>,
    pub(super) table: PartitionTable,
    pub(super) holds: RevocationHolds,
    pub(super) pipeline: CommitPipeline,
    pub(super) builder: RecordBuilder,
    /// Message pointers of one batch read; kept to reuse its allocation.
    pub(super) scratch: MessageBuf,
    /// Where the next delivery pass starts, so every partition gets its turn.
    pub(super) rr: usize,
    pub(super) phase: Phase,
    /// A drain's deadline and everyone waiting for its report.
    pub(super) drain: Option<(Instant, Vec<oneshot::Sender<DrainReport>>)>,
    pub(super) failure: Option<Error>,
    pub(super) buffer_batches: usize,
    /// How many records the next read of the records queue asks for.
    pub(super) batch_size: BatchSize,
    pub(super) wake_interval: Duration,
    pub(super) close_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) missing_topics: MissingTopics,
    pub(super) bootstrap: String,
    pub(super) group_id: Option<String>,
    /// The stall watchdog's interval, and whether a stall ends the consumer.
    pub(super) max_pull_interval: Option<(Duration, bool)>,
    /// True while the current stall has been reported.
    pub(super) stalled: bool,
    /// Publishes figures through the `metrics` facade (a no-op without it).
    pub(super) exporter: crate::export::Exporter,
    pub(super) next_export: Instant,
    pub(super) committable: bool,
    pub(super) subscription: Subscription,
}

/// The commit pipeline's view of the driver: the partition table, the held
/// revocations and the consumer to send through.
struct Broker<'a> {
    table: &'a mut PartitionTable,
    holds: &'a mut RevocationHolds,
    consumer: Option<&'a DriverConsumer>,
    queue: Option<&'a QueueRef>,
    /// A revocation waits for commits, or the consumer drains or closes.
    urgent: bool,
}

impl CommitTarget for Broker<'_> {
    fn is_current(&self, tp: &TopicPartition, generation: u64) -> bool {
        self.table.is_current(tp, generation)
    }

    fn committed_next(&self, tp: &TopicPartition, generation: u64) -> Option<i64> {
        self.table.committed_next(tp, generation)
    }

    fn urgent(&self) -> bool {
        self.urgent
    }

    fn send(&mut self, offsets: &[PartitionOffset]) -> std::result::Result<(), KafkaError> {
        let (Some(consumer), Some(queue)) = (self.consumer, self.queue) else {
            return Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::InvalidArgument,
            ));
        };
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for o in offsets {
            tpl.add_partition_offset(&o.tp.topic, o.tp.partition, Offset::Offset(o.offset))?;
        }
        queue.commit(consumer, &tpl)
    }

    fn committed(&mut self, tp: &TopicPartition, generation: u64, next: i64) {
        self.table.record_committed(tp, generation, next);
    }

    fn failed(&mut self, offsets: &[(PartitionOffset, u64)], err: &Error, now: Instant) {
        self.holds
            .commit_failed(offsets.iter().map(|(o, _)| &o.tp), err, now);
    }
}

impl Driver {
    fn consumer(&self) -> &Arc<DriverConsumer> {
        self.consumer
            .as_ref()
            .expect("consumer is present until close")
    }

    fn counters(&self) -> &Counters {
        &self.link.shared.counters
    }

    /// Splits the driver into the pipeline and its view of the rest.
    fn pipeline(&mut self) -> (&mut CommitPipeline, Broker<'_>) {
        let urgent = !self.holds.is_empty() || self.drain.is_some() || self.phase != Phase::Running;
        let broker = Broker {
            urgent,
            table: &mut self.table,
            holds: &mut self.holds,
            consumer: self.consumer.as_deref(),
            queue: self.commit_queue.as_ref(),
        };
        (&mut self.pipeline, broker)
    }

    pub(super) fn run(mut self) {
        let span = tracing::info_span!("consumer", id = self.link.id);
        let _guard = span.enter();
        match self.start() {
            Ok(Started::Running) => self.main_loop(),
            Ok(Started::Closing) => {}
            Err(e) => {
                tracing::error!(error = %Report(&e), "consumer failed to start");
                self.failure = Some(e);
            }
        }
        self.close();
    }

    /// Checks that the cluster answers, then subscribes or assigns.
    fn start(&mut self) -> Result<Started> {
        if !self.await_cluster()? {
            return Ok(Started::Closing);
        }
        let consumer = self.consumer().clone();
        match self.subscription.clone() {
            Subscription::Topics(topics) => {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&names).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Config,
                        format!("could not subscribe to {topics:?}"),
                        e,
                    )
                })?;
                tracing::info!(?topics, "subscribed");
                self.missing_topics.subscribed(Instant::now());
            }
            Subscription::Pattern(pattern) => {
                consumer.subscribe(&[pattern.as_str()]).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Config,
                        format!("could not subscribe to pattern `{pattern}`"),
                        e,
                    )
                })?;
                tracing::info!(%pattern, "subscribed to pattern");
            }
            Subscription::Assignment(assignment) => {
                let mut tpl = TopicPartitionList::with_capacity(assignment.len());
                let mut split = Vec::with_capacity(assignment.len());
                for (tp, start) in &assignment {
                    let offset = match start {
                        StartOffset::Committed => Offset::Stored,
                        StartOffset::Beginning => Offset::Beginning,
                        StartOffset::End => Offset::End,
                        StartOffset::Offset(o) => Offset::Offset(*o),
                    };
                    tpl.add_partition_offset(&tp.topic, tp.partition, offset)
                        .map_err(|e| {
                            Error::with_source(ErrorKind::Config, "invalid start offset", e).at(
                                &tp.topic,
                                Some(tp.partition),
                                None,
                            )
                        })?;
                    split.push((tp.clone(), consumer.context().forward(&consumer, tp)));
                }
                consumer.assign(&tpl).map_err(|e| {
                    Error::with_source(ErrorKind::Config, "could not assign partitions", e)
                })?;
                drop(tpl);
                self.on_assigned(split);
            }
        }
        Ok(Started::Running)
    }

    /// Waits until the cluster answers, at most `connect_timeout`, serving
    /// commands between short tries so that a shutdown or a drain during
    /// start-up takes effect at once. False: asked to close meanwhile.
    fn await_cluster(&mut self) -> Result<bool> {
        let started = Instant::now();
        let deadline = started + self.connect_timeout;
        loop {
            let try_started = Instant::now();
            let slice = deadline
                .saturating_duration_since(try_started)
                .min(CONNECT_TRY);
            let Err(e) = self.consumer().fetch_metadata(None, slice) else {
                tracing::debug!(elapsed = ?started.elapsed(), "cluster answered");
                return Ok(true);
            };
            // Serve the consumer's queue (nothing is subscribed yet, so it
            // holds only librdkafka's logs and errors): they say why the
            // connections fail.
            let consumer = self.consumer().clone();
            for _ in 0..MAIN_QUEUE_EVENTS_PER_PASS {
                match consumer.poll(Duration::ZERO) {
                    Some(Err(e)) => {
                        if let Some(code) = e.rdkafka_error_code() {
                            let _ = consumer.context().connect_failures.note_code(code, None);
                        }
                        crate::logging::retried_consumer_error(&e, None);
                    }
                    Some(Ok(_)) => {}
                    // A log line served (see `poll_main`), or nothing left.
                    None if self.main_queue_waiting() => {}
                    None => break,
                }
            }
            // Failed authentication, TLS or DNS: waiting does not help.
            if let Some(cause) = self
                .consumer()
                .context()
                .connect_failures
                .verdict(&self.bootstrap)
            {
                return Err(cause);
            }
            if Instant::now() >= deadline {
                return Err(Error::with_source(
                    ErrorKind::BrokerUnreachable,
                    format!(
                        "no broker at `{}` answered within {:?} (connect_timeout)",
                        self.bootstrap, self.connect_timeout
                    ),
                    e,
                ));
            }
            // A try that failed early (connection refused) waits out its slice.
            std::thread::park_timeout(slice.saturating_sub(try_started.elapsed()));
            self.handle_commands();
            if self.drain.is_some() || matches!(self.phase, Phase::Closing { .. }) {
                tracing::info!("closing before the cluster answered");
                return Ok(false);
            }
        }
    }

    fn main_loop(&mut self) {
        loop {
            self.handle_commands();
            if self.failure.is_some() || self.close_due() {
                return;
            }
            let mut progressed = self.poll_main();
            let health = &self.link.shared.health;
            health.mark(&health.polled);
            health.look_at_pulls();
            progressed |= self.handle_context_events();
            if self.failure.is_some() {
                return;
            }
            progressed |= self.deliver();
            if self.missing_topics.due(Instant::now()) {
                let missing = self.missing_topics_now();
                if let Some(e) = self.missing_topics.found(&missing) {
                    tracing::error!(error = %Report(&e), "subscribed topics missing");
                    self.failure = Some(e);
                    return;
                }
            }
            if !self.holds.is_empty() {
                progressed |= self.settle_revocations(false);
            }
            if self.watch_stalls() {
                return;
            }
            self.export();
            let now = Instant::now();
            let (pipeline, mut broker) = self.pipeline();
            let next_retry = pipeline.resend_due(now, &mut broker);
            self.check_drain();
            if !progressed {
                let wait = next_retry.map_or(self.wake_interval, |due| {
                    due.saturating_duration_since(Instant::now())
                        .min(self.wake_interval)
                });
                std::thread::park_timeout(wait);
            }
        }
    }

    /// The subscribed topics the cluster says do not exist (a metadata
    /// request per topic, up to 2 s each; one that gets no answer counts as
    /// existing).
    fn missing_topics_now(&self) -> Vec<String> {
        self.subscribed_topics_with(RDKafkaErrorCode::UnknownTopicOrPartition)
    }

    /// The subscribed topics whose metadata comes with the error `code`.
    fn subscribed_topics_with(&self, code: RDKafkaErrorCode) -> Vec<String> {
        let Subscription::Topics(topics) = &self.subscription else {
            return Vec::new();
        };
        let consumer = self.consumer();
        topics
            .iter()
            .filter(|topic| {
                consumer
                    .fetch_metadata(Some(topic.as_str()), Duration::from_secs(2))
                    .is_ok_and(|md| {
                        md.topics()
                            .iter()
                            .any(|t| t.error().is_some_and(|e| RDKafkaErrorCode::from(e) == code))
                    })
            })
            .cloned()
            .collect()
    }

    fn close_due(&self) -> bool {
        match self.phase {
            Phase::Closing { deadline } => !self.pipeline.is_busy() || Instant::now() >= deadline,
            _ => false,
        }
    }

    fn stop(&mut self) {
        if self.phase == Phase::Running {
            tracing::info!("stopping: no new records");
            self.phase = Phase::Stopped;
            self.table.disconnect(|_| true);
            self.output = None;
            self.link.shared.set_state(DriverState::Stopped);
        }
    }

    fn begin_close(&mut self) {
        self.stop();
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.phase = Phase::Closing {
                deadline: Instant::now() + self.close_timeout,
            };
        }
    }

    fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Commit {
                    offsets,
                    reply,
                    retry_until,
                    spaced,
                } => {
                    if matches!(self.phase, Phase::Closing { .. }) {
                        let _ = reply.send(Err(Error::closed(
                            "the consumer is closing; commit not sent",
                        )));
                        continue;
                    }
                    let (pipeline, mut broker) = self.pipeline();
                    pipeline.submit(
                        offsets,
                        reply,
                        retry_until,
                        spaced,
                        Instant::now(),
                        &mut broker,
                    );
                }
                Command::Stop => self.stop(),
                Command::Drain { deadline, reply } => {
                    self.stop();
                    // Every drain gets the same report, at the earliest deadline.
                    match &mut self.drain {
                        Some((d, replies)) => {
                            *d = (*d).min(deadline);
                            replies.push(reply);
                        }
                        None => self.drain = Some((deadline, vec![reply])),
                    }
                }
                Command::Shutdown => self.begin_close(),
                Command::SourceDropped(scope) => match scope {
                    SourceScope::All => {
                        self.output = None;
                        self.table.disconnect(|_| true);
                    }
                    SourceScope::Assignments => self.output = None,
                    SourceScope::Partition(h) => self
                        .table
                        .disconnect(|p| Arc::ptr_eq(&p.handle.handover, &h)),
                },
                Command::Fail(err) => {
                    if self.failure.is_none() {
                        tracing::error!(error = %Report(&err), "the pipeline of this consumer failed; closing the consumer");
                        self.failure = Some(err);
                    }
                }
                Command::GroupMetadata(reply) => {
                    // As for commits: a closing consumer is leaving its
                    // partitions; a transaction must not commit offsets
                    // for it any more (it aborts, the records are read
                    // again by the next owner).
                    if matches!(self.phase, Phase::Closing { .. }) {
                        let _ = reply.send(None);
                        continue;
                    }
                    let metadata = self
                        .consumer
                        .as_ref()
                        .and_then(|c| c.group_metadata())
                        .map(super::GroupMetadata);
                    let _ = reply.send(metadata);
                }
                Command::CommittedInTransaction { offsets, reply } => {
                    let _ = reply.send(self.committed_in_transaction(offsets));
                }
                Command::Released => {
                    // Commits already in flight still get their answer.
                    tracing::debug!("all handles dropped: closing");
                    self.begin_close();
                }
            }
        }
    }

    /// Records offsets a producer's transaction committed for this group:
    /// the revocation holds of their partitions may settle, and the drain
    /// report counts them. Offsets of partitions revoked meanwhile are
    /// stale (the broker refused the transaction's offsets of a past
    /// generation: the transaction could not have committed them).
    fn committed_in_transaction(&mut self, offsets: super::CommitOffsets) -> CommitOutcome {
        let mut outcome = CommitOutcome::default();
        for (handle, next) in offsets {
            let o = PartitionOffset {
                tp: handle.tp.clone(),
                offset: next,
            };
            if self.table.is_current(&handle.tp, handle.generation) {
                self.table
                    .record_committed(&handle.tp, handle.generation, next);
                outcome.committed.push(o);
            } else {
                outcome.stale.push(o);
            }
        }
        let counters = &self.link.shared.counters;
        Counters::add(&counters.commits, 1);
        Counters::add(&counters.offsets_committed, outcome.committed.len() as u64);
        Counters::add(&counters.offsets_stale, outcome.stale.len() as u64);
        let health = &self.link.shared.health;
        health.mark(&health.committed);
        self.settle_revocations(false);
        outcome
    }

    /// Serves the main queue: rebalances, commit results, errors, log
    /// lines, and any record that reached it before its partition was
    /// split; up to `MAIN_QUEUE_EVENTS_PER_PASS` events a pass.
    ///
    /// rdkafka's `poll` answers `None` both when the queue is empty and
    /// when it served an event itself (a log line, a commit result, a
    /// rebalance), so the queue's length says whether to go on. (Stopping
    /// at the first `None` served one such event a pass: with librdkafka
    /// logging at debug level, or the burst of lines a broker outage
    /// brings, the backlog outgrew the passes, and rebalances and commit
    /// answers waited behind it until commits timed out.)
    fn poll_main(&mut self) -> bool {
        let mut progressed = false;
        let consumer = self.consumer().clone();
        for _ in 0..MAIN_QUEUE_EVENTS_PER_PASS {
            let Some(result) = consumer.poll(Duration::ZERO) else {
                // Not counted as progress: were the queue to hold an event
                // `poll` never serves, the pass would still end here.
                if self.main_queue_waiting() {
                    continue;
                }
                break;
            };
            progressed = true;
            match result {
                Ok(msg) => {
                    let running = self.phase == Phase::Running;
                    let Some(p) = self.table.find_mut(msg.topic(), msg.partition()) else {
                        continue;
                    };
                    if !running || !p.is_delivering() {
                        continue;
                    }
                    self.builder.push_message(&msg);
                    let records = self.builder.finish(&p.handle.tp.topic, msg.partition());
                    p.pending.push_back(RecordBatch {
                        partition: Counted::new(PartitionHandle::clone(&p.handle)),
                        records,
                    });
                }
                Err(e) => self.on_consumer_error(e),
            }
            if self.failure.is_some() {
                break;
            }
        }
        progressed
    }

    /// Whether events wait in the queue the main-queue poll serves.
    fn main_queue_waiting(&self) -> bool {
        self.polled_queue.as_ref().is_some_and(|q| q.len() > 0)
    }

    /// An error from the main queue: a retried one is logged and counted;
    /// one no retry fixes ends the stream (see `ErrorClass`).
    fn on_consumer_error(&mut self, e: KafkaError) {
        if self.retried(&e, None) {
            return;
        }
        let (message, topic) = self.describe_failure(&e);
        let err = Error::with_source(ErrorKind::Consume, message, e);
        self.fail(match topic {
            Some(topic) => err.at(&topic, None, None),
            None => err,
        });
    }

    /// An error a partition's queue gave in place of a record: the same,
    /// and the failure names the partition and the offset.
    fn on_read_error(&mut self, tp: &TopicPartition, read: ReadError) {
        if self.retried(&read.error, Some(tp)) {
            return;
        }
        let mut message = format!("cannot read the partition: {}", read.reason);
        if read.error.rdkafka_error_code() == Some(RDKafkaErrorCode::NotImplemented)
            && read.reason.contains("codec")
        {
            message.push_str(" (this build lacks the record's compression codec: zstd needs the crate's `zstd` feature)");
        }
        let err = Error::with_source(ErrorKind::Consume, message, read.error).at(
            &tp.topic,
            Some(tp.partition),
            read.offset,
        );
        self.fail(err);
    }

    /// True (logged and counted) when librdkafka retries `e` on its own.
    fn retried(&self, e: &KafkaError, tp: Option<&TopicPartition>) -> bool {
        let class = match e {
            KafkaError::MessageConsumptionFatal(_) => ErrorClass::Fatal,
            e => e
                .rdkafka_error_code()
                .map_or(ErrorClass::Transient, consumer_error_class),
        };
        if class != ErrorClass::Transient {
            return false;
        }
        Counters::add(&self.link.shared.counters.retried_errors, 1);
        self.link.shared.health.error(&Error::with_source(
            ErrorKind::Consume,
            "consumer error (retried)",
            e.clone(),
        ));
        crate::logging::retried_consumer_error(e, tp);
        true
    }

    fn fail(&mut self, err: Error) {
        tracing::error!(error = %Report(&err), "consumer failed");
        self.link.shared.health.error(&err);
        self.failure = Some(err);
    }

    /// The stall watchdog (`max_pull_interval`): records wait for a stream
    /// that has not been pulled for longer than the interval. Warns and
    /// counts once per stall; with `fail`, ends the consumer. True when it
    /// did.
    fn watch_stalls(&mut self) -> bool {
        let Some((interval, fail)) = self.max_pull_interval else {
            return false;
        };
        let health = &self.link.shared.health;
        let since = health
            .since(&health.pulled)
            .unwrap_or_else(|| health.started.elapsed());
        if since <= interval {
            self.stalled = false;
            return false;
        }
        if self.stalled || !self.records_wait() {
            return false;
        }
        self.stalled = true;
        health
            .stalls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let err = Error::new(
            ErrorKind::Timeout,
            format!(
                "the stream was not pulled for {since:?} while records waited for it (max_pull_interval {interval:?})"
            ),
        );
        if fail {
            self.fail(err);
            return true;
        }
        tracing::warn!(error = %Report(&err), "stream stalled");
        health.error(&err);
        false
    }

    /// Publishes the figures through the `metrics` facade, once a second.
    fn export(&mut self) {
        let now = Instant::now();
        if now < self.next_export {
            return;
        }
        self.next_export = now + Duration::from_secs(1);
        let metrics = self.link.shared.metrics();
        let stats = self.link.shared.statistics.borrow().clone();
        let lag = super::lag_of(stats.as_deref());
        self.exporter.publish(&metrics, &lag);
    }

    /// True when records were read for a stream and wait for it to be pulled.
    fn records_wait(&self) -> bool {
        let queued =
            |tx: &tokio::sync::mpsc::Sender<RecordBatch>| tx.capacity() < tx.max_capacity();
        let single = matches!(&self.output, Some(Output::Single(tx)) if queued(tx));
        let held = self
            .link
            .shared
            .health
            .holding
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0;
        held || single
            || self
                .table
                .iter()
                .any(|p| !p.pending.is_empty() || p.out.as_ref().is_some_and(queued))
    }

    /// What a fatal consumer error means here, and the topic it concerns
    /// when there is one: an ACL refusal names the group, or the subscribed
    /// topics refused (asked of the cluster: librdkafka's error does not
    /// say which).
    fn describe_failure(&self, e: &KafkaError) -> (String, Option<String>) {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::GroupAuthorizationFailed) => (
                format!(
                    "not authorized to use consumer group `{}` (ACL)",
                    self.group_id.as_deref().unwrap_or_default()
                ),
                None,
            ),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                let mut refused =
                    self.subscribed_topics_with(RDKafkaErrorCode::TopicAuthorizationFailed);
                match refused.len() {
                    0 => (
                        "not authorized to read a subscribed topic (ACL)".to_owned(),
                        None,
                    ),
                    1 => (
                        "not authorized to read the topic (ACL)".to_owned(),
                        refused.pop(),
                    ),
                    _ => (
                        format!(
                            "not authorized to read topics `{}` (ACL)",
                            refused.join("`, `")
                        ),
                        None,
                    ),
                }
            }
            _ => ("consumer failed".to_owned(), None),
        }
    }

    fn handle_context_events(&mut self) -> bool {
        let events = self.consumer().context().take_events();
        let any = !events.is_empty();
        for event in events {
            match event {
                ContextEvent::Assigned(split) => self.on_assigned(split),
                ContextEvent::Revoked {
                    partitions,
                    lost,
                    released,
                } => self.on_revoked(partitions, lost, released),
                ContextEvent::Committed { result, partitions } => {
                    let (pipeline, mut broker) = self.pipeline();
                    pipeline.answered(result, partitions, Instant::now(), &mut broker);
                }
                ContextEvent::RebalanceFailed(e) => tracing::warn!(error = %e, "rebalance error"),
            }
        }
        any
    }

    fn on_assigned(&mut self, split: Vec<(TopicPartition, bool)>) {
        let generation = self.table.next_generation();
        Counters::add(&self.counters().assignments, 1);
        let tps: Vec<String> = split.iter().map(|(tp, _)| tp.to_string()).collect();
        tracing::info!(partitions = ?tps, generation, "partitions assigned");
        for (tp, forwarded) in split {
            if !forwarded {
                tracing::warn!(partition = %tp, "could not forward the partition's queue; its records arrive on the main queue");
            }
            let handover = Arc::new(HandOver::new());
            let out = match &self.output {
                Some(Output::Single(tx)) => Some(tx.clone()),
                Some(Output::Partitioned(announce)) => {
                    let (tx, rx) = tokio::sync::mpsc::channel(self.buffer_batches);
                    let sub = SubSource {
                        tp: tp.clone(),
                        handover: handover.clone(),
                        rx,
                    };
                    announce.send(sub).is_ok().then_some(tx)
                }
                None => None,
            };
            let handle = Counted::new(PartitionHandle {
                tp,
                generation,
                link: self.link.clone(),
                acks: self
                    .link
                    .shared
                    .outstanding
                    .as_ref()
                    .map(|_| Arc::new(AckTracker::default())),
                handover,
                copies: Arc::new(()),
            });
            self.table.insert(Partition::new(handle, out));
        }
        self.update_assigned();
    }

    fn on_revoked(&mut self, revoked: Vec<TopicPartition>, lost: bool, released: bool) {
        Counters::add(&self.counters().revocations, 1);
        let tps: Vec<String> = revoked.iter().map(|tp| tp.to_string()).collect();
        if released {
            tracing::info!(partitions = ?tps, lost, "partitions revoked");
            self.notify_revoked(&revoked, lost);
            if lost {
                self.resume_paused(&|tp| revoked.contains(tp));
                self.table.forget_lost(&revoked);
            } else {
                self.forget(|tp| revoked.contains(tp));
            }
            self.update_assigned();
            return;
        }
        // Rebalance-safe: nothing more of these partitions is handed out;
        // librdkafka keeps them until the records already handed out are
        // committed (see `settle_revocations`).
        tracing::info!(partitions = ?tps, timeout = ?self.holds.timeout(), "partitions revoked: waiting for in-flight records to be committed");
        self.table.start_revoking(&revoked);
        self.holds.hold(revoked, Instant::now());
        self.link.shared.revoking.send_modify(|n| *n += 1);
        self.update_assigned();
        self.settle_revocations(false);
    }

    fn update_assigned(&self) {
        self.counters().assigned_partitions.store(
            self.table.live() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn notify_revoked(&self, partitions: &[TopicPartition], lost: bool) {
        if let Some(listener) = &self.consumer().context().listener {
            if lost {
                listener.on_lost(partitions);
            } else {
                listener.on_revoked(partitions);
            }
        }
    }

    /// Completes the held revocations that may complete now (all of them
    /// when `all`, as on close), giving their partitions back to librdkafka.
    fn settle_revocations(&mut self, all: bool) -> bool {
        let settled = self.holds.settle(&self.table, Instant::now(), all);
        let any = !settled.is_empty();
        for s in settled {
            tracing::info!(partitions = ?s.partitions, waited = ?s.waited, "revoked partitions released");
            Counters::add(
                &self.link.shared.counters.revocation_hold_nanos,
                s.waited.as_nanos() as u64,
            );
            self.pipeline.timings.revocation_hold(s.waited);
            self.notify_revoked(&s.partitions, false);
            self.forget(|tp| s.partitions.contains(tp));
            context::release(self.consumer(), &s.partitions);
            self.link
                .shared
                .revoking
                .send_modify(|n| *n = n.saturating_sub(1));
            self.update_assigned();
        }
        any
    }

    /// Moves records to the sources while they have room: first what waits
    /// in the partitions' pending lists, then batches read off the records
    /// queue, up to `buffer_batches` reads per pass so that the main queue
    /// and commands are served between passes.
    ///
    /// A single stream that is full is backpressure: the records queue is
    /// not read, and librdkafka stops fetching at its prefetch limits, which
    /// then hold for the whole consumer. A partitioned source reads on while
    /// any sub-stream has room; a partition whose sub-stream is full keeps up
    /// to a batch of records pending beyond what the read gave (the batch
    /// size of the read: `max_batch_records`, fewer for large records),
    /// then is paused in librdkafka (what it prefetched meanwhile is
    /// dropped and fetched again from the first record not read) and
    /// resumed once its pending records are delivered.
    fn deliver(&mut self) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let mut progressed = false;
        let mut closed = false;
        let mut resume = Vec::new();
        let n = self.table.len();
        for k in 0..n {
            let p = self.table.get_mut((self.rr + k) % n);
            if p.pending.is_empty() {
                continue;
            }
            match flush_pending(p, &self.link.shared.counters) {
                Delivered::Some => progressed = true,
                Delivered::Nothing => {}
                Delivered::Closed => {
                    p.disconnect();
                    closed = true;
                }
            }
            if p.paused && p.pending.is_empty() && p.is_delivering() {
                p.paused = false;
                resume.push(p.handle.tp.clone());
            }
        }
        self.rr = self.rr.wrapping_add(1);
        let mut pause = Vec::new();
        let mut errors = Vec::new();
        let partitioned = matches!(self.output, Some(Output::Partitioned(_)));
        for _ in 0..self.buffer_batches {
            if closed || !self.has_room() {
                break;
            }
            let Driver {
                table,
                builder,
                scratch,
                link,
                batch_size,
                records: Some(records),
                ..
            } = self
            else {
                break;
            };
            let counters = &link.shared.counters;
            // A partition is paused once more than a batch of its records
            // waits: at most `buffer_batches + 3` batches per partition,
            // whatever the record size.
            let asked = batch_size.next();
            let (mut copied, mut bytes) = (0, 0);
            #[cfg(feature = "opentelemetry")]
            let group = self.group_id.as_deref();
            let read = records.read(asked, scratch, |run: Run<'_>| {
                let Some(topic) = run.topic else {
                    // An error not tied to a partition.
                    if let Some(e) = run.read_into(builder) {
                        errors.push((None, e));
                    }
                    builder.clear();
                    return;
                };
                // Not assigned any more: librdkafka dropped its fetches.
                let Some(p) = table.find_mut(topic, run.partition) else {
                    return;
                };
                if !p.is_delivering() {
                    // Revoked (the next owner reads these records) or
                    // nobody takes its records: stop fetching them.
                    if !p.revoking && !p.paused {
                        p.paused = true;
                        pause.push(p.handle.tp.clone());
                    }
                    return;
                }
                if let Some(e) = run.read_into(builder) {
                    errors.push((Some(p.handle.tp.clone()), e));
                }
                if builder.is_empty() {
                    return;
                }
                #[cfg(feature = "opentelemetry")]
                crate::otel::poll(topic, run.partition, group)
                    .record("messaging.batch.message_count", run.len());
                copied += builder.len();
                bytes += builder.bytes();
                Counters::add(&counters.bytes, builder.bytes() as u64);
                let batch = RecordBatch {
                    partition: Counted::new(PartitionHandle::clone(&p.handle)),
                    records: builder.finish(&p.handle.tp.topic, run.partition),
                };
                match deliver_batch(p, batch, counters) {
                    Delivered::Some => {}
                    Delivered::Nothing => {
                        if partitioned && !p.paused && pending_records(p) > asked {
                            p.paused = true;
                            pause.push(p.handle.tp.clone());
                        }
                    }
                    Delivered::Closed => {
                        p.disconnect();
                        closed = true;
                    }
                }
            });
            if read == 0 {
                break;
            }
            batch_size.observe(copied, bytes);
            progressed = true;
            // Pause now, before reading on: a partition's pending records
            // stay within what the next read can add.
            if !pause.is_empty() {
                break;
            }
        }
        self.pause_resume(&pause, &resume);
        // The one stream of a non-partitioned source is gone: stop them all.
        if closed && matches!(self.output, Some(Output::Single(_))) {
            tracing::debug!("the source was dropped; no more records are fetched");
            self.output = None;
            self.table.disconnect(|_| true);
        }
        for (tp, read) in errors {
            match tp {
                Some(tp) => self.on_read_error(&tp, read),
                None => self.on_consumer_error(read.error),
            }
        }
        progressed
    }

    /// True while a read of the records queue has somewhere to go: the one
    /// stream has room and nothing waits for it, or the source is partitioned
    /// (each sub-stream is bounded by its pending list and a pause).
    fn has_room(&self) -> bool {
        match &self.output {
            Some(Output::Single(tx)) => {
                tx.capacity() > 0 && self.table.iter().all(|p| p.pending.is_empty())
            }
            Some(Output::Partitioned(_)) => true,
            None => false,
        }
    }

    /// Pauses and resumes partitions in librdkafka (see `deliver`).
    fn pause_resume(&self, pause: &[TopicPartition], resume: &[TopicPartition]) {
        let Some(consumer) = self.consumer.as_ref() else {
            return;
        };
        for (tps, pausing) in [(pause, true), (resume, false)] {
            if tps.is_empty() {
                continue;
            }
            let mut tpl = TopicPartitionList::with_capacity(tps.len());
            for tp in tps {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            let result = if pausing {
                consumer.pause(&tpl)
            } else {
                consumer.resume(&tpl)
            };
            let names: Vec<String> = tps.iter().map(ToString::to_string).collect();
            match result {
                Ok(()) => {
                    if pausing {
                        Counters::add(
                            &self.link.shared.counters.partition_pauses,
                            tps.len() as u64,
                        );
                    }
                    tracing::debug!(partitions = ?names, pausing, "partitions paused or resumed")
                }
                Err(e) => {
                    tracing::warn!(partitions = ?names, pausing, error = %e, "could not pause or resume partitions")
                }
            }
        }
    }

    /// Forgets the partitions that match, resuming those this driver paused
    /// first (librdkafka keeps a partition paused across assignments).
    fn forget(&mut self, matches: impl Fn(&TopicPartition) -> bool) {
        self.resume_paused(&matches);
        self.table.forget(matches);
    }

    fn resume_paused(&mut self, matches: &impl Fn(&TopicPartition) -> bool) {
        let paused: Vec<TopicPartition> = self
            .table
            .iter()
            .filter(|p| p.paused && matches(&p.handle.tp))
            .map(|p| p.handle.tp.clone())
            .collect();
        self.pause_resume(&[], &paused);
    }

    fn check_drain(&mut self) {
        let Some((deadline, _)) = &self.drain else {
            return;
        };
        let settled = !self.committable || (!self.pipeline.is_busy() && self.table.all_committed());
        if settled || Instant::now() >= *deadline {
            self.begin_close();
        }
    }

    /// Answers what is pending, leaves the group and destroys the consumer,
    /// all on this thread, then ends the source with the outcome.
    fn close(&mut self) {
        self.table.disconnect(|_| true);
        let report = self.table.drain_report();
        // librdkafka waits for held revocations even while closing.
        if self.consumer.is_some() {
            self.settle_revocations(true);
        }
        self.pipeline.fail_all(&Error::new(
            ErrorKind::Timeout,
            "the consumer closed before the commit was acknowledged",
        ));
        // Closing gives up every partition still assigned.
        let remaining = self.table.all();
        if !remaining.is_empty() && self.consumer.is_some() {
            self.notify_revoked(&remaining, false);
        }
        // The records queue and the commit queue reference the consumer:
        // release them before it.
        self.forget(|_| true);
        self.commit_queue = None;
        self.polled_queue = None;
        self.records = None;
        if let Some(consumer) = &self.consumer {
            consumer.context().close_records();
        }
        if let Some(consumer) = self.consumer.take() {
            drop(consumer.context().take_events());
            consumer.context().stop_holding_revocations();
            let listener = consumer.context().listener.clone();
            tracing::info!("closing the consumer");
            // rdkafka's drop leaves the group (serving the final revocation on
            // this thread) and destroys the handle. `Control::shutdown` bounds
            // how long a caller waits for it.
            drop(consumer);
            if let Some(listener) = listener {
                listener.on_stopped();
            }
        }
        let result = match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        tracing::info!(ok = result.is_ok(), "consumer closed");
        // The state is set before the source's channel closes, so the source
        // sees the failure that ended it.
        let _ = self.link.shared.final_report.set(report.clone());
        self.link.shared.set_state(DriverState::Closed(result));
        self.output = None;
        for reply in self.drain.take().into_iter().flat_map(|(_, r)| r) {
            let _ = reply.send(report.clone());
        }
    }
}
