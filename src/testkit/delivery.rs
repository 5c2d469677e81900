//! The delivery checker: numbered records in, the user's pipeline run under
//! faults, the output read back, lost and duplicated records reported with
//! their coordinates.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::helpers::{produce_n_with, unique_name, wait_until};
use super::TestBroker;
use crate::consumer::{self, DrainingControl};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{ConsumerRecord, TopicPartition};
use crate::settings::ConsumerSettings;
use crate::subscription::Subscription;

/// An action of a [`Fault::Custom`]: a future made anew each time the fault
/// is injected.
pub type FaultAction = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A fault the [`DeliveryChecker`] injects while the pipeline runs.
#[derive(Clone)]
#[non_exhaustive]
pub enum Fault {
    /// The oldest running member is killed: its pipeline task is aborted
    /// and its consumer closed without a drain, so nothing it processed
    /// since its last commit is committed (as when a process crashes; the
    /// consumer still leaves its group). A new member replaces it.
    KillMember,
    /// A second member joins, runs for this long and is drained: two
    /// rebalances.
    Rebalance(Duration),
    /// Every broker of the embedded cluster is down for this long (an
    /// external broker needs a [`Fault::Custom`] action that stops it).
    BrokerOutage(Duration),
    /// Anything else, by name: for example freezing or restarting an
    /// external broker.
    Custom {
        /// What the report calls it.
        name: String,
        /// Runs the fault and returns when it is over.
        action: FaultAction,
    },
}

impl Fault {
    /// A [`Fault::Custom`] running `action`.
    pub fn custom<F, Fut>(name: impl Into<String>, action: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Fault::Custom {
            name: name.into(),
            action: Arc::new(move || Box::pin(action())),
        }
    }

    fn name(&self) -> String {
        match self {
            Fault::KillMember => "member killed".into(),
            Fault::Rebalance(d) => format!("rebalance ({d:?} with a second member)"),
            Fault::BrokerOutage(d) => format!("broker outage of {d:?}"),
            Fault::Custom { name, .. } => name.clone(),
        }
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where a record was seen: in the output topic, or reported processed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sighting {
    /// Read back from the output topic at this partition and offset.
    Output {
        /// The output partition.
        tp: TopicPartition,
        /// The output offset.
        offset: i64,
    },
    /// Reported through [`Processed::record`]: the input record's coordinates.
    Processed {
        /// The input partition.
        tp: TopicPartition,
        /// The input offset.
        offset: i64,
    },
}

/// A numbered record and its input coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Numbered {
    /// The record's number (its key is `key-<number>`).
    pub number: u64,
    /// The input partition.
    pub tp: TopicPartition,
    /// The input offset.
    pub offset: i64,
}

/// One injected fault: how long it took and how soon records flowed again.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FaultOutcome {
    /// The fault's name.
    pub name: String,
    /// From its start to its end (for an outage: until the broker was back).
    pub took: Duration,
    /// From its end to the next record seen; `None` if none came after it.
    pub resumed_after: Option<Duration>,
    /// From its end to the next advance of the group's committed offsets
    /// (polled every 250 ms); `None` if none came after it.
    pub commits_resumed_after: Option<Duration>,
    /// How many records had been seen when it began.
    pub seen_before: usize,
}

/// What a [`DeliveryChecker::run`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// How many numbered records were produced.
    pub records: usize,
    /// Records never seen, with their input coordinates.
    pub lost: Vec<Numbered>,
    /// Records seen more than once, with every sighting.
    pub duplicated: Vec<(Numbered, Vec<Sighting>)>,
    /// The errors the pipelines returned (a killed member's is not one).
    pub pipeline_errors: Vec<Error>,
    /// The faults, in the order they were injected.
    pub faults: Vec<FaultOutcome>,
    /// From the first member's start to the last record seen.
    pub elapsed: Duration,
    /// Output records that the live reader did not see and the final
    /// re-read of the output topic found (see [`DeliveryChecker::run`]).
    /// Not a failure of the pipeline: they are counted as seen.
    pub found_on_reread: usize,
}

impl DeliveryReport {
    /// Nothing lost and no pipeline error: at-least-once held.
    pub fn at_least_once(&self) -> bool {
        self.lost.is_empty() && self.pipeline_errors.is_empty()
    }

    /// Nothing lost, nothing duplicated, no pipeline error.
    pub fn exactly_once(&self) -> bool {
        self.at_least_once() && self.duplicated.is_empty()
    }
}

impl fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records: {} lost, {} duplicated, {} pipeline errors, in {:?}",
            self.records,
            self.lost.len(),
            self.duplicated.len(),
            self.pipeline_errors.len(),
            self.elapsed
        )?;
        for fault in &self.faults {
            write!(
                f,
                "; {} (after {} records): took {:?}",
                fault.name, fault.seen_before, fault.took
            )?;
            match fault.resumed_after {
                Some(d) => write!(f, ", records flowed again after {d:?}")?,
                None => write!(f, ", no record after it")?,
            }
            match fault.commits_resumed_after {
                Some(d) => write!(f, ", commits after {d:?}")?,
                None => write!(f, ", no commit after it")?,
            }
        }
        if self.found_on_reread > 0 {
            write!(
                f,
                "; {} records found only by the final re-read of the output",
                self.found_on_reread
            )?;
        }
        for lost in self.lost.iter().take(5) {
            write!(
                f,
                "; lost #{} ({} offset {})",
                lost.number, lost.tp, lost.offset
            )?;
        }
        for (dup, seen) in self.duplicated.iter().take(5) {
            write!(f, "; #{} seen {} times: {seen:?}", dup.number, seen.len())?;
        }
        for e in &self.pipeline_errors {
            write!(f, "; pipeline error: {}", e.report())?;
        }
        Ok(())
    }
}

/// Where sightings are gathered, shared with the output reader and with
/// [`Processed`] handles.
#[derive(Debug, Default)]
struct Sightings {
    seen: BTreeMap<u64, Vec<Sighting>>,
    /// When each sighting was made, in order.
    times: Vec<Instant>,
    last: Option<Instant>,
    /// Output records that only the final re-read found, and when each was
    /// produced (from its timestamp), in no particular order.
    late: Vec<Instant>,
}

impl Sightings {
    /// Notes a sighting; the same output record read twice (the reader
    /// re-reads after a rebalance of its own) is one sighting.
    fn add(&mut self, n: u64, sighting: Sighting) {
        let now = Instant::now();
        let seen = self.seen.entry(n).or_default();
        if matches!(sighting, Sighting::Output { .. }) && seen.contains(&sighting) {
            return;
        }
        seen.push(sighting);
        self.times.push(now);
        self.last = Some(now);
    }

    /// Notes an output record that the final re-read found and the live
    /// reader did not see; `produced` is when it was produced.
    fn add_late(&mut self, n: u64, sighting: Sighting, produced: Instant) {
        let seen = self.seen.entry(n).or_default();
        if seen.contains(&sighting) {
            return;
        }
        seen.push(sighting);
        self.late.push(produced);
    }

    /// The first record seen, or found late and produced, after `t`.
    fn first_after(&self, t: Instant) -> Option<Instant> {
        let live = self.times.get(self.times.partition_point(|s| *s <= t));
        let late = self.late.iter().filter(|s| **s > t).min();
        live.into_iter().chain(late).min().copied()
    }
}

/// A handle your pipeline reports processed records to, for pipelines
/// without an output topic (consume, process, commit). Cloneable.
#[derive(Debug, Clone)]
pub struct Processed {
    sightings: Arc<Mutex<Sightings>>,
}

impl Processed {
    /// Reports `record` (an input record of the checker) as processed.
    /// Records with no number (keys other than `key-<n>`) are ignored.
    pub fn record(&self, record: &ConsumerRecord) {
        if let Some(n) = number_of(record) {
            let mut s = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
            s.add(
                n,
                Sighting::Processed {
                    tp: TopicPartition::new(record.topic(), record.partition()),
                    offset: record.offset(),
                },
            );
        }
    }
}

/// The number of a checker's record: its key `key-<n>` (keep the key when
/// you write an output record).
pub fn number_of(record: &ConsumerRecord) -> Option<u64> {
    number_in(record.key())
}

fn number_in(key: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(key?)
        .ok()?
        .strip_prefix("key-")?
        .parse()
        .ok()
}

/// The size of the producer batches the checker writes its input in: about
/// 130 of its records.
const INPUT_BATCH_BYTES: usize = 4096;

/// Runs a pipeline under faults and reports what it lost and duplicated.
///
/// The checker produces `records` numbered records (key `key-<n>`, record
/// `n` to partition `n % partitions`) to a new input topic, in batches of
/// 4 KiB (about 130 records: a consumer with a small prefetch budget still
/// has records to fetch after a fault). Your pipeline
/// reads the [input topic](Self::input_topic) with the
/// [settings](Self::consumer_settings) it is given (a group of the
/// checker's) and either writes each record, key kept, to the
/// [output topic](Self::output_topic), or reports it to
/// [`processed`](Self::processed). [`run`](Self::run) starts members of
/// your pipeline, injects the faults one by one as the records flow,
/// waits until every record was seen and the group committed the end of
/// the input (or the time limit passed), drains every member, reads the
/// output back and reports. A pipeline that commits its last offsets only
/// when drained adds 30 s to a run.
///
/// ```no_run
/// use futures::StreamExt;
/// use reactive_kafka::consumer::{self, DrainingControl};
/// use reactive_kafka::producer::{self, Envelope};
/// use reactive_kafka::testkit::{DeliveryChecker, Fault, TestBroker};
/// use reactive_kafka::{CommitterSettings, ProducerRecord, Subscription};
///
/// # async fn run() -> reactive_kafka::Result<()> {
/// let broker = TestBroker::start().await?;
/// let checker = DeliveryChecker::new(&broker, 10_000, 4).await?;
/// let (input, output) = (checker.input_topic().to_owned(), checker.output_topic().to_owned());
/// let servers = broker.bootstrap_servers().to_owned();
/// let report = checker
///     .run(
///         move |settings| {
///             let (source, control) =
///                 consumer::committable_source(settings, Subscription::topics([input.as_str()]))?;
///             let sink = producer::committable_sink(
///                 reactive_kafka::ProducerSettings::new(&servers),
///                 CommitterSettings::default(),
///             )?;
///             let output = output.clone();
///             Ok(DrainingControl::spawn(control, async move {
///                 source
///                     .map(move |m| {
///                         let m = m?;
///                         let out = ProducerRecord::new(&output)
///                             .key(m.record.key().unwrap_or_default().to_vec());
///                         Ok(Envelope::message(out, m.offset))
///                     })
///                     .forward(sink)
///                     .await
///             }))
///         },
///         &[Fault::KillMember, Fault::Rebalance(std::time::Duration::from_secs(3))],
///     )
///     .await?;
/// assert!(report.at_least_once(), "{report}");
/// # Ok(())
/// # }
/// ```
pub struct DeliveryChecker<'a> {
    broker: &'a TestBroker,
    input: String,
    output: String,
    group: String,
    records: usize,
    partitions: i32,
    limit: Duration,
    settings: ConsumerSettings,
    sightings: Arc<Mutex<Sightings>>,
}

impl fmt::Debug for DeliveryChecker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryChecker")
            .field("input", &self.input)
            .field("output", &self.output)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl<'a> DeliveryChecker<'a> {
    /// Creates the input and output topics (`partitions` each) on `broker`
    /// and produces `records` numbered records to the input.
    pub async fn new(broker: &'a TestBroker, records: usize, partitions: i32) -> Result<Self> {
        let input = broker.unique_topic("delivery-in", partitions).await?;
        let output = broker.unique_topic("delivery-out", partitions).await?;
        // Small batches: a consumer's fetch returns at least one whole
        // batch per partition, so with the producer's default (1 MB) the
        // whole input could sit in a consumer's prefetch before the first
        // fault, and nothing would be fetched after it.
        let batched = broker
            .producer_settings()
            .property("batch.size", INPUT_BATCH_BYTES.to_string());
        produce_n_with(batched, &input, records, partitions).await?;
        let group = unique_name("delivery-group");
        Ok(DeliveryChecker {
            broker,
            settings: broker.consumer_settings(&group),
            input,
            output,
            group,
            records,
            partitions,
            limit: Duration::from_secs(120),
            sightings: Arc::default(),
        })
    }

    /// The consumer settings each member gets (default: the broker's test
    /// settings, [`TestBroker::consumer_settings`], with the checker's group).
    /// The group id is always the checker's.
    pub fn with_consumer_settings(mut self, settings: ConsumerSettings) -> Self {
        self.settings = settings.group_id(&self.group);
        self
    }

    /// How long a run waits for every record to be seen, and for progress
    /// before each fault. Default 120 s.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The topic the numbered records are in.
    pub fn input_topic(&self) -> &str {
        &self.input
    }

    /// The topic a consume-transform-produce pipeline writes to.
    pub fn output_topic(&self) -> &str {
        &self.output
    }

    /// The group every member consumes in.
    pub fn group_id(&self) -> &str {
        &self.group
    }

    /// The settings a member gets (the checker's group).
    pub fn consumer_settings(&self) -> ConsumerSettings {
        self.settings.clone()
    }

    /// A handle to report processed records to (pipelines without output).
    pub fn processed(&self) -> Processed {
        Processed {
            sightings: self.sightings.clone(),
        }
    }

    fn seen_count(&self) -> usize {
        let s = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        s.seen.len()
    }

    fn last_seen(&self) -> Option<Instant> {
        self.sightings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
    }

    /// Starts a member with `start` (given the consumer settings), injects
    /// `faults` one after the other, each once a further share of the
    /// records was seen, waits until every record was seen and the group
    /// committed the end of every input partition (or, with records
    /// missing, until nothing new came for 2 s after that commit; or, with
    /// every record seen, for at most 30 s; or until the time limit),
    /// drains every member and reports.
    ///
    /// What was seen is what a live reader of the output read while the
    /// faults happened, and what a final re-read of the whole output topic,
    /// by a consumer that went through no fault, found besides: a record in
    /// the topic is never reported lost because the live reader stopped
    /// short ([`DeliveryReport::found_on_reread`] says how many only the
    /// re-read found). A fault's "records flowed again" is the first record
    /// the live reader saw after it, or the first record produced after it
    /// (by its timestamp) that only the re-read found, whichever came first.
    ///
    /// Fails only if a member cannot be started, no progress is made before
    /// a fault within the time limit, or the output cannot be read (the
    /// re-read is bounded by 60 s); lost records and pipeline errors are in
    /// the report.
    pub async fn run<F>(&self, start: F, faults: &[Fault]) -> Result<DeliveryReport>
    where
        F: Fn(ConsumerSettings) -> Result<DrainingControl<()>>,
    {
        let started = Instant::now();
        let done = std::sync::atomic::AtomicBool::new(false);
        let commits = Mutex::new(Commits::default());
        let main = async {
            let result = self.run_members(&start, faults, &commits).await;
            done.store(true, std::sync::atomic::Ordering::Release);
            result
        };
        let (result, ()) = tokio::join!(main, self.watch_commits(&done, &commits));
        let (outcomes, pipeline_errors) = result?;
        let commits = commits.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(self.report(started, outcomes, pipeline_errors, &commits.grew_at))
    }

    async fn run_members<F>(
        &self,
        start: &F,
        faults: &[Fault],
        commits: &Mutex<Commits>,
    ) -> Result<(Vec<Injected>, Vec<Error>)>
    where
        F: Fn(ConsumerSettings) -> Result<DrainingControl<()>>,
    {
        let reader = self.read_output()?;
        let mut members = vec![start(self.consumer_settings())?];
        let mut pipeline_errors = Vec::new();
        let mut outcomes = Vec::new();
        for (i, fault) in faults.iter().enumerate() {
            let target = self.records * (i + 1) / (faults.len() + 1);
            self.wait_for(target.max(1), &format!("progress before {fault:?}"))
                .await?;
            let began = Instant::now();
            let seen_before = self.seen_count();
            match fault {
                Fault::KillMember => {
                    members.remove(0).abort();
                    members.push(start(self.consumer_settings())?);
                }
                Fault::Rebalance(d) => {
                    let extra = start(self.consumer_settings())?;
                    tokio::time::sleep(*d).await;
                    if let Err(e) = extra.drain_and_shutdown(Duration::from_secs(30)).await {
                        pipeline_errors.push(e);
                    }
                }
                Fault::BrokerOutage(d) => self.broker.outage(*d).await?,
                Fault::Custom { action, .. } => action().await,
            }
            outcomes.push(Injected {
                name: fault.name(),
                seen_before,
                began,
                ended: Instant::now(),
            });
        }
        self.wait_for_the_end(commits).await;
        for member in members {
            if let Err(e) = member.drain_and_shutdown(Duration::from_secs(30)).await {
                pipeline_errors.push(e);
            }
        }
        // The output reader catches up: no new record for a second.
        let quiet = Duration::from_secs(1);
        let mut waited = Duration::ZERO;
        while waited < self.limit {
            let last = self.last_seen();
            tokio::time::sleep(quiet).await;
            waited += quiet;
            if self.last_seen() == last {
                break;
            }
        }
        reader.stop().await?;
        self.reread_output().await?;
        Ok((outcomes, pipeline_errors))
    }

    /// Reads the output topic once more, from its beginning to its end as it
    /// is now, with a plain librdkafka consumer of its own, and notes what
    /// the live reader did not see. The live reader is a consumer that
    /// went through every fault the pipeline did; this read went through
    /// none, so the report counts what the topic holds even if the live
    /// reader fell behind or stopped on a partition. Bounded: 60 s.
    async fn reread_output(&self) -> Result<()> {
        let servers = self.broker.bootstrap_servers().to_owned();
        let (topic, partitions) = (self.output.clone(), self.partitions.max(1));
        let read = move || reread(&servers, &topic, partitions, Duration::from_secs(60));
        let found = tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| Error::closed(format!("the output re-read failed: {e}")))?
            .map_err(|e| {
                Error::with_source(ErrorKind::Consume, "could not re-read the output", e).at(
                    &self.output,
                    None,
                    None,
                )
            })?;
        let now = (Instant::now(), std::time::SystemTime::now());
        let mut s = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        for (n, partition, offset, timestamp_ms) in found {
            // When it was produced, on this process's clock.
            let produced =
                std::time::UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
            let ago = now.1.duration_since(produced).unwrap_or_default();
            let produced = now.0.checked_sub(ago).unwrap_or(now.0);
            let tp = TopicPartition::new(self.output.as_str(), partition);
            s.add_late(n, Sighting::Output { tp, offset }, produced);
        }
        Ok(())
    }

    /// Polls the group's committed offsets every 250 ms (one read at a
    /// time) into `commits`, noting when their sum grew, until a read that
    /// started after `done`: the last commits are seen however long a read
    /// took (each is bounded by a 10 s timeout). A read that fails (the
    /// broker is down) is skipped.
    async fn watch_commits(&self, done: &std::sync::atomic::AtomicBool, commits: &Mutex<Commits>) {
        loop {
            let last_read = done.load(std::sync::atomic::Ordering::Acquire);
            let read = self
                .broker
                .committed_offsets(&self.group, &self.input, self.partitions)
                .await;
            if let Ok(committed) = read {
                let mut c = commits.lock().unwrap_or_else(|p| p.into_inner());
                let sum: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
                let before: i64 = c.latest.values().map(|o| o.unwrap_or(0)).sum();
                if sum > before {
                    c.grew_at.push(Instant::now());
                }
                // The highest seen: a read never moves them back.
                if sum >= before {
                    c.latest = committed;
                }
            }
            if last_read {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Until the group committed the end of every input partition and
    /// either every record was seen or nothing new was seen for two seconds
    /// (the records not seen by then never will be); or every record was
    /// seen 30 s ago and the end is still not committed (a pipeline that
    /// holds its last offsets until it is drained, as
    /// [`CommitWhen::NextOffsetObserved`](crate::CommitWhen::NextOffsetObserved)
    /// does); or the time limit.
    /// Waiting for the commits even once every record was seen lets the
    /// pipeline commit by itself (records fetched before a fault may all be
    /// processed during it), before draining commits for it. It reads the
    /// commit watcher's latest committed offsets (a read that failed, the
    /// broker still coming back, left them as they were).
    async fn wait_for_the_end(&self, commits: &Mutex<Commits>) {
        let deadline = Instant::now() + self.limit;
        let partitions = self.partitions.max(1) as usize;
        let end = |p: i32| {
            (self.records / partitions + usize::from((p as usize) < self.records % partitions))
                as i64
        };
        let quiet = Duration::from_secs(2);
        let commits_after_all_seen = Duration::from_secs(30);
        while Instant::now() < deadline {
            let all_committed = {
                let c = commits.lock().unwrap_or_else(|p| p.into_inner());
                !c.latest.is_empty() && c.latest.iter().all(|(p, o)| o.unwrap_or(0) >= end(*p))
            };
            let all_seen = self.seen_count() >= self.records;
            let since_last = self.last_seen().map(|t| t.elapsed());
            let idle = since_last.is_none_or(|d| d >= quiet);
            let seen_all_long_ago =
                all_seen && since_last.is_some_and(|d| d >= commits_after_all_seen);
            if (all_committed && (all_seen || idle)) || seen_all_long_ago {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_for(&self, seen: usize, what: &str) -> Result<()> {
        wait_until(what, self.limit, || self.seen_count() >= seen)
            .await
            .map_err(|e| {
                e.with_note(&format!(
                    "delivery check: {} of {seen} records seen",
                    self.seen_count()
                ))
            })
    }

    /// Reads the output topic into the sightings until stopped.
    fn read_output(&self) -> Result<OutputReader> {
        let settings = self
            .broker
            .consumer_settings(&unique_name("delivery-reader"));
        // Assigned, not subscribed: no group session to lose during an
        // injected outage, so the reader sees records as soon as they exist.
        let partitions = (0..self.partitions.max(1)).map(|p| {
            (
                TopicPartition::new(self.output.as_str(), p),
                crate::subscription::StartOffset::Beginning,
            )
        });
        let (source, control) =
            consumer::plain_source(settings, Subscription::assignment_with_offsets(partitions))?;
        let sightings = self.sightings.clone();
        let task = tokio::spawn(async move {
            let mut source = source;
            while let Some(record) = source.next().await {
                let record = record?;
                if let Some(n) = number_of(&record) {
                    let mut s = sightings.lock().unwrap_or_else(|p| p.into_inner());
                    s.add(
                        n,
                        Sighting::Output {
                            tp: TopicPartition::new(record.topic(), record.partition()),
                            offset: record.offset(),
                        },
                    );
                }
            }
            Ok(())
        });
        Ok(OutputReader { control, task })
    }

    fn report(
        &self,
        started: Instant,
        outcomes: Vec<Injected>,
        pipeline_errors: Vec<Error>,
        commit_times: &[Instant],
    ) -> DeliveryReport {
        let s = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        let partitions = self.partitions.max(1) as usize;
        let numbered = |n: u64| Numbered {
            number: n,
            tp: TopicPartition::new(self.input.as_str(), (n as usize % partitions) as i32),
            offset: (n as usize / partitions) as i64,
        };
        let lost = (0..self.records as u64)
            .filter(|n| !s.seen.contains_key(n))
            .map(numbered)
            .collect();
        let duplicated = s
            .seen
            .iter()
            .filter(|(_, seen)| seen.len() > 1)
            .map(|(n, seen)| (numbered(*n), seen.clone()))
            .collect();
        let faults = outcomes
            .into_iter()
            .map(
                |Injected {
                     name,
                     seen_before,
                     began,
                     ended,
                 }| {
                    FaultOutcome {
                        name,
                        took: ended - began,
                        resumed_after: s.first_after(ended).map(|t| t - ended),
                        commits_resumed_after: commit_times
                            .get(commit_times.partition_point(|t| *t <= ended))
                            .map(|t| *t - ended),
                        seen_before,
                    }
                },
            )
            .collect();
        DeliveryReport {
            records: self.records,
            lost,
            duplicated,
            pipeline_errors,
            faults,
            elapsed: s.last.map_or(started.elapsed(), |l| l - started),
            found_on_reread: s.late.len(),
        }
    }
}

/// Every numbered record of partitions `0..partitions` of `topic`, from
/// the beginning to the high watermarks read first: number, partition,
/// offset and timestamp (ms). Fails if the end is not reached within
/// `bound`.
fn reread(
    servers: &str,
    topic: &str,
    partitions: i32,
    bound: Duration,
) -> rdkafka::error::KafkaResult<Vec<(u64, i32, i64, i64)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::Message;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let deadline = Instant::now() + bound;
    let consumer: BaseConsumer<super::Quiet> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique_name("delivery-reread"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(super::Quiet)?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, high) = consumer.fetch_watermarks(topic, p, left)?;
        if high > 0 {
            ends.insert(p, high);
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    let mut found = Vec::new();
    if ends.is_empty() {
        return Ok(found);
    }
    consumer.assign(&assignment)?;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            // The end as it is now: at or past the watermark read first.
            // (A transactional output ends in a marker that is never
            // handed out.)
            Err(KafkaError::PartitionEOF(p)) => {
                ends.remove(&p);
                continue;
            }
            Err(e) => return Err(e),
        };
        let (p, offset) = (message.partition(), message.offset());
        if let Some(n) = number_in(message.key()) {
            let ts = message.timestamp().to_millis().unwrap_or(0);
            found.push((n, p, offset, ts));
        }
        if ends.get(&p).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&p);
        }
    }
    Ok(found)
}

/// What the commit watcher read: the group's highest committed offsets
/// (empty before the first read that succeeded), and when their sum grew.
#[derive(Default)]
struct Commits {
    latest: BTreeMap<i32, Option<i64>>,
    grew_at: Vec<Instant>,
}

/// A fault as it was injected: when, and after how many records.
struct Injected {
    name: String,
    seen_before: usize,
    began: Instant,
    ended: Instant,
}

/// The checker's reader of the output topic.
struct OutputReader {
    control: consumer::Control,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl OutputReader {
    async fn stop(self) -> Result<()> {
        self.control.shutdown().await?;
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::closed(format!("the output reader failed: {e}"))),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "the output reader did not end within 10 s of its shutdown",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(p: i32, offset: i64) -> Sighting {
        Sighting::Output {
            tp: TopicPartition::new("out", p),
            offset,
        }
    }

    #[test]
    fn the_re_read_adds_only_what_the_live_reader_missed() {
        let mut s = Sightings::default();
        s.add(1, output(0, 0));
        s.add_late(1, output(0, 0), Instant::now());
        s.add_late(2, output(1, 0), Instant::now());
        assert_eq!(s.seen[&1].len(), 1, "a record both saw is one sighting");
        assert_eq!(s.seen[&2].len(), 1);
        assert_eq!(s.late.len(), 1, "only record 2 was found late");
        // A record the live reader missed but written twice is a duplicate.
        s.add_late(2, output(1, 1), Instant::now());
        assert_eq!(s.seen[&2].len(), 2);
    }

    #[test]
    fn records_flow_again_at_the_first_record_seen_or_produced_after_a_fault() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Sightings {
            times: vec![at(10), at(500)],
            ..Sightings::default()
        };
        assert_eq!(s.first_after(at(100)), Some(at(500)));
        s.late = vec![at(50), at(300), at(900)];
        assert_eq!(
            s.first_after(at(100)),
            Some(at(300)),
            "a late record produced first"
        );
        assert_eq!(s.first_after(at(600)), Some(at(900)));
        assert_eq!(s.first_after(at(1000)), None);
    }
}
