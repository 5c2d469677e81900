//! The engine loop. Runs on a thread of its own and is the only code that
//! calls librdkafka's consumer API.
//!
//! Each pass: take commands, serve the main queue (rebalances, commit results,
//! errors), then, while the source has room, drain per-partition queues into
//! batches. When the source is not pulled the partition queues are simply not
//! drained (librdkafka stops fetching once its prefetch limits are reached),
//! while the main queue keeps being served, so the consumer stays in its
//! group however long the stall lasts. Nothing is paused, so nothing
//! prefetched is thrown away.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{oneshot, watch};

mod commit;

use super::batch::BatchBuilder;
use super::commit_queue::ConsumerQueueRef;
use super::context::{ContextEvent, EngineConsumer, EngineContext};
use super::partition_queue::{MessageBuf, PartitionQueue};
use super::{
    next_engine_id, Assignment, Batch, Command, EngineConfig, EngineHandle, EngineLink,
    EngineState, Output, PartitionHandle, Shared, SourceScope, SubSource,
};
use crate::committer::tracker::{Outstanding, PartitionTracker};
use crate::consumer::{
    CommitOutcome, DrainReport, PartitionOffset, StartOffset, Subscription, Uncommitted,
};
use crate::error::{Error, ErrorKind, Result};
use crate::record::TopicPartition;

/// Starts an engine thread and its consumer. Configuration and client
/// creation errors are returned here, synchronously.
pub(crate) fn spawn(config: EngineConfig) -> Result<(Arc<EngineHandle>, Outlet)> {
    let client_config = config.settings.to_client_config(config.committable)?;
    let revoke_timeout = config.settings.effective_revoke_timeout()?;
    config.subscription.validate()?;
    let id = next_engine_id();
    let (boot_tx, boot_rx) = mpsc::sync_channel::<Engine>(1);
    let join = std::thread::Builder::new()
        .name(format!("reactive-kafka-consumer-{id}"))
        .spawn(move || {
            // The constructor sends the engine once the consumer exists; if
            // creation fails the sender is dropped and the thread ends.
            if let Ok(engine) = boot_rx.recv() {
                engine.run();
            }
        })
        .map_err(|e| Error::closed(format!("could not start the consumer thread: {e}")))?;
    let thread = join.thread().clone();
    drop(join); // detached: the engine ends by itself when released or shut down

    let hold_revocations = config.committable && config.settings.rebalance_safe_commits;
    let listener = config.settings.listener.as_ref().map(|l| l.0.clone());
    let context = EngineContext::new(thread.clone(), hold_revocations, listener);
    let mut consumer =
        EngineConsumer::from_config_and_context(&client_config, context).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("could not create the consumer: {e}"),
                e,
            )
        })?;
    let wake = thread.clone();
    consumer.set_nonempty_callback(move || wake.unpark());
    let consumer = Arc::new(consumer);

    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (output, outlet) = if config.partitioned {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Output::Partitioned(tx), Outlet::Partitioned(rx))
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel(config.settings.buffer_batches);
        (Output::Single(tx), Outlet::Single(rx))
    };
    let (state_tx, _) = watch::channel(EngineState::Running);
    let link = Arc::new(EngineLink {
        id,
        commands: cmd_tx,
        thread,
        shared: Arc::new(Shared {
            state: state_tx,
            counters: Default::default(),
            outstanding: config
                .settings
                .max_outstanding
                .filter(|_| config.committable)
                .map(Outstanding::new),
            revoking: watch::channel(0).0,
        }),
    });
    let settings = &config.settings;
    let engine = Engine {
        commit_queue: ConsumerQueueRef::new(&consumer),
        consumer: Some(consumer),
        link: link.clone(),
        commands: cmd_rx,
        output: Some(output),
        partitions: Vec::new(),
        revocations: Vec::new(),
        revoke_timeout,
        buffer_batches: settings.buffer_batches,
        rr: 0,
        generation: 0,
        builder: BatchBuilder::default(),
        scratch: MessageBuf::default(),
        inflight: VecDeque::new(),
        queued: Vec::new(),
        retries: Vec::new(),
        phase: Phase::Running,
        drain: None,
        failure: None,
        max_batch: settings.max_batch_records,
        wake_interval: settings.wake_interval,
        close_timeout: settings.close_timeout,
        connect_timeout: settings.connect_timeout,
        bootstrap: settings.bootstrap_servers.clone(),
        committable: config.committable,
        subscription: config.subscription,
    };
    if boot_tx.send(engine).is_err() {
        return Err(Error::closed("the consumer thread ended before it started"));
    }
    let handle = Arc::new(EngineHandle {
        link,
        close_timeout: settings.close_timeout,
    });
    Ok((handle, outlet))
}

/// The receiving end of an engine's output.
#[derive(Debug)]
pub(crate) enum Outlet {
    Single(tokio::sync::mpsc::Receiver<Batch>),
    Partitioned(tokio::sync::mpsc::UnboundedReceiver<SubSource>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopped,
    Closing { deadline: Instant },
}

struct Partition {
    handle: Arc<PartitionHandle>,
    queue: Option<PartitionQueue>,
    /// Where this partition's batches go; `None` once its stream is gone.
    out: Option<tokio::sync::mpsc::Sender<Batch>>,
    /// Batches read but not yet accepted by `out`.
    pending: VecDeque<Batch>,
    /// Revoked, waiting for its in-flight records to be committed.
    revoking: bool,
    /// Next offset after the last committed record (as acknowledged).
    committed_next: Option<i64>,
}

impl Partition {
    /// True when every record up to `handed_next` is committed.
    fn committed_up_to(&self, handed_next: Option<i64>) -> bool {
        handed_next.is_none_or(|h| self.committed_next.is_some_and(|c| c >= h))
    }

    /// Records handed out of this assignment and not yet committed.
    fn uncommitted(&self) -> Option<Uncommitted> {
        let handed = self.handle.assignment.handed_next();
        match handed {
            Some(h) if !self.committed_up_to(handed) => Some(Uncommitted {
                tp: self.handle.tp.clone(),
                committed_next: self.committed_next,
                emitted_next: h,
            }),
            _ => None,
        }
    }
}

/// What one partition's delivery did.
enum Delivered {
    Nothing,
    Some,
    /// Its stream was dropped.
    Closed,
}

/// A revocation held until the records handed out of its partitions are
/// committed, or its deadline passes.
pub(super) struct PendingRevoke {
    partitions: Vec<TopicPartition>,
    started: Instant,
    deadline: Instant,
}

/// One commit sent to the broker: the merged offsets of the requests it
/// answers.
pub(super) struct Flight {
    offsets: Vec<(PartitionOffset, u64)>,
    commits: Vec<InflightCommit>,
    started: Instant,
}

struct InflightCommit {
    reply: Option<oneshot::Sender<Result<CommitOutcome>>>,
    /// Offsets to commit, each with the assignment generation it came from.
    committed: Vec<(PartitionOffset, u64)>,
    stale: Vec<PartitionOffset>,
    started: Instant,
    attempt: u32,
    /// Retriable failures are retried until then; `None`: never.
    retry_until: Option<Instant>,
}

struct Engine {
    /// Where commit results arrive; released before the consumer.
    commit_queue: Option<ConsumerQueueRef>,
    consumer: Option<Arc<EngineConsumer>>,
    link: Arc<EngineLink>,
    commands: mpsc::Receiver<Command>,
    /// `None` once the source stopped or was dropped: nothing is delivered
    /// to partitions assigned after that.
    output: Option<Output>,
    partitions: Vec<Partition>,
    revocations: Vec<PendingRevoke>,
    revoke_timeout: Duration,
    buffer_batches: usize,
    rr: usize,
    generation: u64,
    builder: BatchBuilder,
    /// Message pointers of one batch read; kept to reuse its allocation.
    scratch: MessageBuf,
    /// Commits sent; one at a time (see `send_queued`).
    inflight: VecDeque<Flight>,
    /// Commits waiting for the one in flight, merged into the next.
    queued: Vec<InflightCommit>,
    retries: Vec<commit::Retry>,
    phase: Phase,
    drain: Option<(Instant, oneshot::Sender<DrainReport>)>,
    failure: Option<Error>,
    max_batch: usize,
    wake_interval: Duration,
    close_timeout: Duration,
    connect_timeout: Duration,
    bootstrap: String,
    committable: bool,
    subscription: Subscription,
}

impl Engine {
    fn consumer(&self) -> &Arc<EngineConsumer> {
        self.consumer
            .as_ref()
            .expect("consumer is present until close")
    }

    fn run(mut self) {
        let id = self.link.id;
        let span = tracing::info_span!("consumer", engine = id);
        let _guard = span.enter();
        match self.start() {
            Ok(()) => self.main_loop(),
            Err(e) => {
                tracing::error!(error = %e, "consumer failed to start");
                self.failure = Some(e);
            }
        }
        self.close();
    }

    /// Checks that the cluster answers, then subscribes or assigns.
    fn start(&mut self) -> Result<()> {
        let started = Instant::now();
        if let Err(e) = self.consumer().fetch_metadata(None, self.connect_timeout) {
            return Err(Error::with_source(
                ErrorKind::BrokerUnreachable,
                format!(
                    "no broker at `{}` answered within {:?} (connect_timeout)",
                    self.bootstrap, self.connect_timeout
                ),
                e,
            ));
        }
        tracing::debug!(elapsed = ?started.elapsed(), "cluster answered");
        match self.subscription.clone() {
            Subscription::Topics(topics) => {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.consumer().subscribe(&topics).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Config,
                        format!("could not subscribe to {topics:?}"),
                        e,
                    )
                })?;
                tracing::info!(?topics, "subscribed");
            }
            Subscription::Pattern(pattern) => {
                self.consumer()
                    .subscribe(&[pattern.as_str()])
                    .map_err(|e| {
                        Error::with_source(
                            ErrorKind::Config,
                            format!("could not subscribe to pattern `{pattern}`"),
                            e,
                        )
                    })?;
                tracing::info!(%pattern, "subscribed to pattern");
            }
            Subscription::Assignment(assignment) => {
                let consumer = self.consumer().clone();
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
                    split.push((tp.clone(), consumer.context().split(&consumer, tp)));
                }
                consumer.assign(&tpl).map_err(|e| {
                    Error::with_source(ErrorKind::Config, "could not assign partitions", e)
                })?;
                drop(tpl);
                self.on_assigned(split);
            }
        }
        Ok(())
    }

    fn main_loop(&mut self) {
        loop {
            self.handle_commands();
            if self.failure.is_some() || self.close_due() {
                return;
            }
            let mut progressed = self.poll_main();
            progressed |= self.handle_context_events();
            if self.failure.is_some() {
                return;
            }
            progressed |= self.deliver();
            if !self.revocations.is_empty() {
                progressed |= self.progress_revocations(false);
            }
            let next_retry = self.resend_due();
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

    fn close_due(&self) -> bool {
        match self.phase {
            Phase::Closing { deadline } => !self.commits_pending() || Instant::now() >= deadline,
            _ => false,
        }
    }

    fn set_state(&self, state: EngineState) {
        self.link.shared.state.send_replace(state);
    }

    fn stop(&mut self) {
        if self.phase == Phase::Running {
            tracing::info!("stopping: no new records");
            self.phase = Phase::Stopped;
            self.disconnect(|_| true);
            self.output = None;
            self.set_state(EngineState::Stopped);
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
                } => self.commit(offsets, reply, retry_until),
                Command::Stop => self.stop(),
                Command::Drain { deadline, reply } => {
                    self.stop();
                    self.drain = Some((deadline, reply));
                }
                Command::Shutdown => self.begin_close(),
                Command::SourceDropped { scope } => match scope {
                    SourceScope::All => {
                        self.output = None;
                        self.disconnect(|_| true);
                    }
                    SourceScope::Assignments => self.output = None,
                    SourceScope::Partition(a) => {
                        self.disconnect(|p| Arc::ptr_eq(&p.handle.assignment, &a))
                    }
                },
                Command::Released => {
                    // Commits already in flight still get their answer.
                    tracing::debug!("all handles dropped: closing");
                    self.begin_close();
                }
            }
        }
    }

    /// Serves the main queue: rebalances, commit results, errors, and any
    /// record that reached it before its partition was split.
    fn poll_main(&mut self) -> bool {
        let mut progressed = false;
        let consumer = self.consumer().clone();
        for _ in 0..64 {
            let Some(result) = consumer.poll(Duration::ZERO) else {
                break;
            };
            progressed = true;
            match result {
                Ok(msg) => {
                    let tp_topic = msg.topic();
                    let partition = msg.partition();
                    let Some(p) = self.partitions.iter_mut().find(|p| {
                        &*p.handle.tp.topic == tp_topic && p.handle.tp.partition == partition
                    }) else {
                        continue;
                    };
                    if self.phase != Phase::Running || p.out.is_none() || p.revoking {
                        continue;
                    }
                    // SAFETY: `msg` is a valid message without error, alive here.
                    unsafe { self.builder.push_raw(&*msg.ptr()) };
                    let records = self.builder.finish(&p.handle.tp.topic, partition);
                    p.pending.push_back(Batch {
                        partition: Arc::new(PartitionHandle::clone(&p.handle)),
                        records,
                    });
                }
                Err(e) => self.on_consumer_error(e, None),
            }
            if self.failure.is_some() {
                break;
            }
        }
        progressed
    }

    fn on_consumer_error(&mut self, e: KafkaError, tp: Option<&TopicPartition>) {
        let fatal = match &e {
            KafkaError::MessageConsumptionFatal(_) => true,
            KafkaError::MessageConsumption(code) => matches!(
                code,
                RDKafkaErrorCode::AutoOffsetReset
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::Fatal
            ),
            _ => false,
        };
        if fatal {
            let mut err =
                Error::with_source(ErrorKind::Consume, format!("consumer failed: {e}"), e);
            if let Some(tp) = tp {
                err = err.at(&tp.topic, Some(tp.partition), None);
            }
            tracing::error!(error = %err, "fatal consumer error");
            self.failure = Some(err);
        } else {
            tracing::warn!(error = %e, partition = ?tp, "consumer error (librdkafka retries)");
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
                    self.on_committed(result, partitions)
                }
                ContextEvent::RebalanceFailed(e) => tracing::warn!(error = %e, "rebalance error"),
            }
        }
        any
    }

    fn on_assigned(&mut self, split: Vec<(TopicPartition, Option<PartitionQueue>)>) {
        self.generation += 1;
        let counters = &self.link.shared.counters;
        counters.assignments.fetch_add(1, Ordering::Relaxed);
        let tps: Vec<String> = split.iter().map(|(tp, _)| tp.to_string()).collect();
        tracing::info!(partitions = ?tps, generation = self.generation, "partitions assigned");
        for (tp, queue) in split {
            if queue.is_none() {
                tracing::warn!(partition = %tp, "could not split the partition queue; its records arrive on the main queue");
            }
            self.forget_partitions(|t| *t == tp);
            let assignment = Arc::new(Assignment::new());
            let out = match &self.output {
                Some(Output::Single(tx)) => Some(tx.clone()),
                Some(Output::Partitioned(announce)) => {
                    let (tx, rx) = tokio::sync::mpsc::channel(self.buffer_batches);
                    let sub = SubSource {
                        tp: tp.clone(),
                        assignment: assignment.clone(),
                        rx,
                    };
                    announce.send(sub).is_ok().then_some(tx)
                }
                None => None,
            };
            self.partitions.push(Partition {
                handle: Arc::new(PartitionHandle {
                    tp,
                    generation: self.generation,
                    link: self.link.clone(),
                    tracker: self
                        .link
                        .shared
                        .outstanding
                        .as_ref()
                        .map(|_| Arc::new(PartitionTracker::default())),
                    assignment,
                }),
                queue,
                out,
                pending: VecDeque::new(),
                revoking: false,
                committed_next: None,
            });
        }
        self.update_assigned();
    }

    /// Drops the partitions that match: no record of them is handed out any
    /// more, and what their out-of-order trackers held is released so the
    /// source is not kept waiting for them.
    fn forget_partitions(&mut self, matches: impl Fn(&TopicPartition) -> bool) {
        let outstanding = self.link.shared.outstanding.as_ref();
        self.partitions.retain(|p| {
            if !matches(&p.handle.tp) {
                return true;
            }
            p.handle.assignment.release();
            if let (Some(t), Some(o)) = (&p.handle.tracker, outstanding) {
                t.close(o);
            }
            false
        });
    }

    /// Stops delivering to the partitions that match: their streams end
    /// once what they already received is pulled.
    fn disconnect(&mut self, matches: impl Fn(&Partition) -> bool) {
        for p in self.partitions.iter_mut().filter(|p| matches(p)) {
            p.out = None;
            p.pending.clear();
        }
    }

    fn on_revoked(&mut self, revoked: Vec<TopicPartition>, lost: bool, released: bool) {
        let counters = &self.link.shared.counters;
        counters.revocations.fetch_add(1, Ordering::Relaxed);
        let tps: Vec<String> = revoked.iter().map(|tp| tp.to_string()).collect();
        if released {
            tracing::info!(partitions = ?tps, lost, "partitions revoked");
            self.notify_revoked(&revoked, lost);
            self.forget_partitions(|tp| revoked.contains(tp));
            self.update_assigned();
            return;
        }
        // Rebalance-safe: nothing more of these partitions is handed out;
        // librdkafka keeps them until the records already handed out are
        // committed (see `progress_revocations`).
        tracing::info!(partitions = ?tps, timeout = ?self.revoke_timeout, "partitions revoked: waiting for in-flight records to be committed");
        for p in self
            .partitions
            .iter_mut()
            .filter(|p| revoked.contains(&p.handle.tp))
        {
            p.revoking = true;
            p.out = None;
            p.pending.clear();
        }
        let now = Instant::now();
        self.revocations.push(PendingRevoke {
            partitions: revoked,
            started: now,
            deadline: now + self.revoke_timeout,
        });
        self.link.shared.revoking.send_modify(|n| *n += 1);
        self.update_assigned();
        self.progress_revocations(false);
    }

    fn update_assigned(&self) {
        let live = self.partitions.iter().filter(|p| !p.revoking).count();
        self.link
            .shared
            .counters
            .assigned_partitions
            .store(live as u64, Ordering::Relaxed);
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

    /// Completes each held revocation whose partitions have every record
    /// handed out committed, or whose deadline passed (all of them when
    /// `now_all`, as on close).
    fn progress_revocations(&mut self, now_all: bool) -> bool {
        let mut progressed = false;
        let mut i = 0;
        while i < self.revocations.len() {
            let expired = now_all || Instant::now() >= self.revocations[i].deadline;
            let revoke = &self.revocations[i];
            let mut settled = true;
            for p in self
                .partitions
                .iter()
                .filter(|p| p.revoking && revoke.partitions.contains(&p.handle.tp))
            {
                let a = &p.handle.assignment;
                if a.is_released() {
                    continue;
                }
                let handed = a.handed_next();
                if p.committed_up_to(handed) && a.release_if(handed) {
                    continue;
                }
                if expired {
                    let handed = a.release();
                    tracing::warn!(
                        partition = %p.handle.tp,
                        handed_next = ?handed,
                        committed_next = ?p.committed_next,
                        "partition released with records not committed (revoke timeout or failed commit); the next owner reads them again"
                    );
                    continue;
                }
                settled = false;
            }
            if !settled {
                i += 1;
                continue;
            }
            let revoke = self.revocations.remove(i);
            tracing::info!(partitions = ?revoke.partitions, waited = ?revoke.started.elapsed(), "revoked partitions released");
            self.notify_revoked(&revoke.partitions, false);
            self.forget_partitions(|tp| revoke.partitions.contains(tp));
            super::context::release(self.consumer(), &revoke.partitions);
            self.link
                .shared
                .revoking
                .send_modify(|n| *n = n.saturating_sub(1));
            self.update_assigned();
            progressed = true;
        }
        progressed
    }

    /// Moves records to the sources while they have room: per partition,
    /// what waits in its pending list, then at most one new batch per pass,
    /// so the main queue and commands are served between passes. A partition
    /// whose stream is full is skipped; the others go on.
    fn deliver(&mut self) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let n = self.partitions.len();
        let mut progressed = false;
        let mut errors = Vec::new();
        let mut closed = false;
        for k in 0..n {
            let i = (self.rr + k) % n;
            match self.deliver_partition(i, &mut errors) {
                Delivered::Some => progressed = true,
                Delivered::Nothing => {}
                Delivered::Closed => {
                    let p = &mut self.partitions[i];
                    p.out = None;
                    p.pending.clear();
                    closed = true;
                }
            }
        }
        self.rr = self.rr.wrapping_add(1);
        // The one stream of a non-partitioned source is gone: stop them all.
        if closed && matches!(self.output, Some(Output::Single(_))) {
            tracing::debug!("the source was dropped; no more records are fetched");
            self.output = None;
            self.disconnect(|_| true);
        }
        for (tp, e) in errors {
            self.on_consumer_error(e, Some(&tp));
        }
        progressed
    }

    fn deliver_partition(
        &mut self,
        i: usize,
        errors: &mut Vec<(TopicPartition, KafkaError)>,
    ) -> Delivered {
        let Engine {
            partitions,
            builder,
            scratch,
            link,
            max_batch,
            ..
        } = self;
        let p = &mut partitions[i];
        let Some(out) = p.out.as_ref().filter(|_| !p.revoking) else {
            return Delivered::Nothing;
        };
        let mut delivered = Delivered::Nothing;
        let mut filled = false;
        loop {
            let batch = match p.pending.pop_front() {
                Some(batch) => batch,
                None => {
                    if filled || out.capacity() == 0 {
                        return delivered;
                    }
                    filled = true;
                    let Some(queue) = p.queue.as_ref() else {
                        return delivered;
                    };
                    if let Some(e) = queue.drain_into(builder, *max_batch, scratch) {
                        errors.push((p.handle.tp.clone(), e));
                    }
                    if builder.is_empty() {
                        return delivered;
                    }
                    Batch {
                        partition: Arc::new(PartitionHandle::clone(&p.handle)),
                        records: builder.finish(&p.handle.tp.topic, p.handle.tp.partition),
                    }
                }
            };
            let len = batch.records.len() as u64;
            match out.try_send(batch) {
                Ok(()) => {
                    delivered = Delivered::Some;
                    let counters = &link.shared.counters;
                    counters.records.fetch_add(len, Ordering::Relaxed);
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(batch)) => {
                    p.pending.push_front(batch);
                    return delivered;
                }
                Err(TrySendError::Closed(_)) => return Delivered::Closed,
            }
        }
    }

    /// Answers what is pending, leaves the group and destroys the consumer,
    /// all on this thread, then ends the source with the outcome.
    fn close(&mut self) {
        self.disconnect(|_| true);
        let report = self.drain_report();
        // librdkafka waits for held revocations even while closing.
        if self.consumer.is_some() {
            self.progress_revocations(true);
        }
        let retries = std::mem::take(&mut self.retries);
        let queued = std::mem::take(&mut self.queued);
        for commit in self
            .inflight
            .drain(..)
            .flat_map(|f| f.commits)
            .chain(queued)
            .chain(retries.into_iter().map(|r| r.commit))
        {
            if let Some(reply) = commit.reply {
                let _ = reply.send(Err(Error::new(
                    ErrorKind::Timeout,
                    "the consumer closed before the commit was acknowledged",
                )));
            }
        }
        // Closing gives up every partition still assigned.
        let remaining: Vec<TopicPartition> = self
            .partitions
            .iter()
            .map(|p| p.handle.tp.clone())
            .collect();
        if !remaining.is_empty() && self.consumer.is_some() {
            self.notify_revoked(&remaining, false);
        }
        // Partition queues and the commit queue reference the consumer:
        // release them before it.
        self.forget_partitions(|_| true);
        self.commit_queue = None;
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
        self.set_state(EngineState::Closed(result));
        self.output = None;
        if let Some((_, reply)) = self.drain.take() {
            let _ = reply.send(report);
        }
    }
}
