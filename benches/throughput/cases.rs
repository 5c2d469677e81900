//! The benchmark cases: each reactive-kafka path and the raw rdkafka loop it
//! is compared with, on the same librdkafka settings.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, SinkExt, Stream, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use reactive_kafka::consumer::DeserializeExt;
use reactive_kafka::testkit::{unique_name, TestBroker};
use reactive_kafka::transactional::{self, TransactionalSettings};
use reactive_kafka::{
    committer, consumer, producer, CommitterSettings, ConsumerSettings, ProducerRecord,
    Subscription, Topic,
};

use crate::report::{Row, Stats, THREAD_GROUPS};

/// Consumer settings every consumer case shares.
const CONSUMER: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("fetch.queue.backoff.ms", "10"),
    ("fetch.wait.max.ms", "50"),
    ("enable.partition.eof", "false"),
];

/// Producer settings every producer case shares.
const PRODUCER: &[(&str, &str)] = &[("enable.idempotence", "true"), ("linger.ms", "5")];

/// What one measurement reads or writes: a topic filled with `records`
/// records of `size` bytes over `partitions` partitions, and, for the cases
/// that produce, one fresh output topic per pass.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) servers: String,
    pub(crate) topic: String,
    pub(crate) partitions: i32,
    pub(crate) records: usize,
    pub(crate) size: usize,
    pub(crate) outputs: Vec<String>,
}

/// What one child process measured: each pass's rate, the process's
/// peak RSS (`VmHWM`), and the heap in use before the first pass and at
/// its peak (0 when the process did not say: the Java tools).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measurement {
    pub(crate) first: f64,
    pub(crate) second: f64,
    pub(crate) peak_rss_mb: f64,
    pub(crate) idle_heap_mb: f64,
    pub(crate) peak_heap_mb: f64,
    /// The process's CPU time (user and system, all its threads) per
    /// record in each pass, in ns; `None` for the Java tools.
    pub(crate) cpu_ns: Option<(f64, f64)>,
    /// The whole machine's busy CPU time per record in each pass, in ns
    /// (every process: on one machine, the broker's too); `None` where
    /// `/proc/stat` cannot be read, and for the Java tools.
    pub(crate) machine_ns: Option<(f64, f64)>,
    /// The second pass's CPU time per record of each group of threads
    /// ([`THREAD_GROUPS`]), in ns; `None` for the Java tools and where the
    /// threads' run times cannot be read.
    pub(crate) threads_ns: Option<[f64; THREAD_GROUPS.len()]>,
    /// The second pass's minor page faults per 1,000 records of each group
    /// of threads; `None` where `threads_ns` is.
    pub(crate) threads_faults: Option<[f64; THREAD_GROUPS.len()]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Case {
    RawBaseConsumer,
    RawStreamConsumer,
    RawPartitionQueues,
    PlainSource,
    PlainSourceSlowBackoff,
    RawCommitLoop,
    CommittableCommitter,
    TypedCommittableCommitter,
    Partitioned,
    OutOfOrderCommitter,
    RawBaseProducer,
    PlainSink,
    ProducerFlow,
    RawTransactionalLoop,
    TransactionalPipeline,
    JavaConsumer,
    JavaProducer,
    /// The same code as `raw_base_consumer`, `plain_source` and
    /// `committable_source+committer_sink`, in a process whose `malloc` is
    /// mimalloc's (`LD_PRELOAD`), librdkafka's allocations included.
    RawBaseConsumerMimalloc,
    PlainSourceMimalloc,
    CommittableCommitterMimalloc,
}

impl Case {
    /// The consumer cases, measured in one interleaved group on the
    /// 8-partition topic.
    pub(crate) const CONSUMERS: [Case; 14] = [
        Case::RawBaseConsumer,
        Case::PlainSource,
        Case::CommittableCommitter,
        Case::RawBaseConsumerMimalloc,
        Case::PlainSourceMimalloc,
        Case::CommittableCommitterMimalloc,
        Case::RawCommitLoop,
        Case::OutOfOrderCommitter,
        Case::TypedCommittableCommitter,
        Case::Partitioned,
        Case::RawStreamConsumer,
        Case::RawPartitionQueues,
        Case::PlainSourceSlowBackoff,
        Case::JavaConsumer,
    ];

    /// The exactly-once cases: a group of their own on a sixth of the
    /// records (they run at a fraction of the others' speed).
    pub(crate) const TRANSACTIONAL: [Case; 2] =
        [Case::RawTransactionalLoop, Case::TransactionalPipeline];

    /// The consumer cases measured again on the 64-partition topic (memory
    /// must not grow with the partitions).
    pub(crate) const MANY_PARTITIONS: [Case; 4] = [
        Case::RawBaseConsumer,
        Case::PlainSource,
        Case::CommittableCommitter,
        Case::Partitioned,
    ];

    /// The producer cases, one interleaved group.
    pub(crate) const PRODUCERS: [Case; 4] = [
        Case::RawBaseProducer,
        Case::PlainSink,
        Case::ProducerFlow,
        Case::JavaProducer,
    ];

    pub(crate) const ALL: [Case; 20] = [
        Case::RawBaseConsumer,
        Case::RawStreamConsumer,
        Case::RawPartitionQueues,
        Case::PlainSource,
        Case::PlainSourceSlowBackoff,
        Case::RawCommitLoop,
        Case::CommittableCommitter,
        Case::TypedCommittableCommitter,
        Case::Partitioned,
        Case::OutOfOrderCommitter,
        Case::RawBaseProducer,
        Case::PlainSink,
        Case::ProducerFlow,
        Case::RawTransactionalLoop,
        Case::TransactionalPipeline,
        Case::JavaConsumer,
        Case::JavaProducer,
        Case::RawBaseConsumerMimalloc,
        Case::PlainSourceMimalloc,
        Case::CommittableCommitterMimalloc,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Case::RawBaseConsumer => "raw_base_consumer",
            Case::RawStreamConsumer => "raw_stream_consumer",
            Case::RawPartitionQueues => "raw_partition_queues",
            Case::PlainSource => "plain_source",
            Case::PlainSourceSlowBackoff => "plain_source_fetch_backoff_1000ms",
            Case::RawCommitLoop => "raw_store_offset_async_commit",
            Case::Partitioned => "committable_partitioned_source+committer_sink",
            Case::CommittableCommitter => "committable_source+committer_sink",
            Case::TypedCommittableCommitter => {
                "committable_source.deserialize(trivial)+committer_sink"
            }
            Case::OutOfOrderCommitter => {
                "committable_source+buffer_unordered(16)+out_of_order_commits"
            }
            Case::RawBaseProducer => "raw_base_producer",
            Case::PlainSink => "producer_plain_sink",
            Case::ProducerFlow => "producer_flow",
            Case::RawTransactionalLoop => "raw_transactional_loop",
            Case::TransactionalPipeline => "transactional_source+sink",
            Case::JavaConsumer => "java_kafka_consumer",
            Case::JavaProducer => "java_kafka_producer",
            Case::RawBaseConsumerMimalloc => "raw_base_consumer[mimalloc]",
            Case::PlainSourceMimalloc => "plain_source[mimalloc]",
            Case::CommittableCommitterMimalloc => "committable_source+committer_sink[mimalloc]",
        }
    }

    /// The case whose code this one runs: itself, or for a case measured
    /// under mimalloc the same case under the system allocator.
    pub(crate) fn code(self) -> Case {
        match self {
            Case::RawBaseConsumerMimalloc => Case::RawBaseConsumer,
            Case::PlainSourceMimalloc => Case::PlainSource,
            Case::CommittableCommitterMimalloc => Case::CommittableCommitter,
            other => other,
        }
    }

    /// Measured in a process whose `malloc` is mimalloc's.
    pub(crate) fn under_mimalloc(self) -> bool {
        self.code() != self
    }

    pub(crate) fn named(name: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What this case's ratio is measured against.
    pub(crate) fn baseline(self) -> Case {
        match self {
            Case::RawBaseConsumer
            | Case::PlainSource
            | Case::PlainSourceSlowBackoff
            | Case::RawStreamConsumer
            | Case::RawPartitionQueues
            | Case::RawCommitLoop
            | Case::JavaConsumer => Case::RawBaseConsumer,
            // The cost of committing, over the same source without it.
            Case::CommittableCommitter | Case::OutOfOrderCommitter | Case::Partitioned => {
                Case::PlainSource
            }
            // What the allocator alone changes, for the raw loop; the
            // crate's cases against the raw loop with the same allocator.
            Case::RawBaseConsumerMimalloc => Case::RawBaseConsumer,
            Case::PlainSourceMimalloc => Case::RawBaseConsumerMimalloc,
            Case::CommittableCommitterMimalloc => Case::PlainSourceMimalloc,
            // Typed records cost what deserializing costs, nothing more.
            Case::TypedCommittableCommitter => Case::CommittableCommitter,
            Case::RawBaseProducer | Case::PlainSink | Case::ProducerFlow | Case::JavaProducer => {
                Case::RawBaseProducer
            }
            Case::RawTransactionalLoop | Case::TransactionalPipeline => Case::RawTransactionalLoop,
        }
    }

    /// Cases that write: they get fresh output topics.
    pub(crate) fn writes(self) -> bool {
        matches!(
            self,
            Case::RawBaseProducer
                | Case::PlainSink
                | Case::ProducerFlow
                | Case::JavaProducer
                | Case::RawTransactionalLoop
                | Case::TransactionalPipeline
        )
    }

    /// Cases that only the real broker runs (the embedded broker has no
    /// `read_committed`; the Java tools are measured against Apache Kafka).
    pub(crate) fn needs_real_broker(self) -> bool {
        matches!(self, Case::JavaConsumer | Case::JavaProducer)
    }

    /// Measures this case in a process of its own: two passes, then the
    /// process's peak RSS.
    pub(crate) async fn measure(self, plan: &Plan, instrument: bool) -> Measurement {
        let mut command = if matches!(self, Case::JavaConsumer | Case::JavaProducer) {
            java_command(self, plan)
        } else {
            let mut c = std::process::Command::new(std::env::current_exe().expect("own path"));
            c.args(["--child", self.name()])
                .env("BENCH_PLAN", plan.encode());
            if self.under_mimalloc() {
                c.env("LD_PRELOAD", mimalloc_library().expect("mimalloc"));
            }
            if instrument {
                c.arg("--instrument");
            }
            c
        };
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let name = self.name();
        tokio::task::spawn_blocking(move || run_child(name, command))
            .await
            .expect("child")
    }

    /// How many records a pass of this case reads or writes: the plan's,
    /// but a tenth for the raw loop that commits every 1,000 records
    /// (about 0.2M records/s, a minute a pass at the full data set's size;
    /// a tenth still takes it over 2 s).
    pub(crate) fn records(self, plan: &Plan) -> usize {
        match self.code() {
            Case::RawCommitLoop => (plan.records / 10).max(1),
            _ => plan.records,
        }
    }

    /// One pass of this case, in this process (the child's side).
    pub(crate) async fn pass(self, plan: &Plan, pass: usize) -> Duration {
        let n = plan.records;
        let output = plan.outputs.get(pass).cloned().unwrap_or_default();
        match self.code() {
            Case::RawBaseConsumer => blocking(plan, raw_base_consumer).await,
            Case::RawStreamConsumer => raw_stream_consumer(plan).await,
            Case::RawPartitionQueues => blocking(plan, raw_partition_queues).await,
            Case::PlainSource => {
                plain_source(
                    plan,
                    consumer_settings(&plan.servers, &unique_name("plain")),
                )
                .await
            }
            // librdkafka's own fetch.queue.backoff.ms, which this crate overrides.
            Case::PlainSourceSlowBackoff => {
                let settings = consumer_settings(&plan.servers, &unique_name("plain-1000"))
                    .property("fetch.queue.backoff.ms", "1000");
                plain_source(plan, settings).await
            }
            Case::RawCommitLoop => {
                let plan = Plan {
                    records: self.records(plan),
                    ..plan.clone()
                };
                blocking(&plan, raw_commit_loop).await
            }
            Case::Partitioned => partitioned_committer(plan).await,
            Case::CommittableCommitter => committable_committer(plan, false).await,
            Case::TypedCommittableCommitter => typed_committable_committer(plan).await,
            Case::OutOfOrderCommitter => committable_committer(plan, true).await,
            Case::RawBaseProducer => {
                let (servers, partitions, size) =
                    (plan.servers.clone(), plan.partitions, plan.size);
                tokio::task::spawn_blocking(move || {
                    raw_base_producer(&servers, &output, partitions, n, size)
                })
                .await
                .expect("raw producer")
            }
            Case::PlainSink => plain_sink(plan, &output).await,
            Case::ProducerFlow => producer_flow(plan, &output).await,
            Case::RawTransactionalLoop => {
                let (servers, input) = (plan.servers.clone(), plan.topic.clone());
                tokio::task::spawn_blocking(move || {
                    raw_transactional_loop(&servers, &input, &output, n)
                })
                .await
                .expect("raw transactional loop")
            }
            Case::TransactionalPipeline => transactional_pipeline(plan, &output).await,
            Case::JavaConsumer | Case::JavaProducer => unreachable!("a JVM measures these"),
            Case::RawBaseConsumerMimalloc
            | Case::PlainSourceMimalloc
            | Case::CommittableCommitterMimalloc => unreachable!("run as their code()"),
        }
    }
}

impl Plan {
    /// Creates and fills the topic the consumer cases read, and checks the
    /// broker kept every record.
    pub(crate) async fn prepare(
        broker: &TestBroker,
        partitions: i32,
        records: usize,
        size: usize,
    ) -> Plan {
        let plan = Plan {
            servers: broker.bootstrap_servers().to_owned(),
            topic: unique_name(&format!("bench-{size}-{partitions}p")),
            partitions,
            records,
            size,
            outputs: Vec::new(),
        };
        broker
            .create_topic(&plan.topic, partitions)
            .await
            .expect("topic");
        let mut sink = producer::plain_sink(producer_settings(&plan.servers)).expect("producer");
        let payload = bytes::Bytes::from(vec![b'x'; size]);
        for i in 0..records {
            sink.feed(
                ProducerRecord::new(plan.topic.as_str())
                    .partition((i % partitions as usize) as i32)
                    .payload(payload.clone()),
            )
            .await
            .expect("produce");
        }
        sink.close().await.expect("flush");
        let (servers, topic) = (plan.servers.clone(), plan.topic.clone());
        tokio::task::spawn_blocking(move || {
            check_watermarks(&servers, &topic, partitions, records)
        })
        .await
        .expect("watermarks");
        plan
    }

    /// This plan with two fresh output topics (one per pass) of its
    /// partition count.
    pub(crate) async fn with_outputs(&self, broker: &TestBroker) -> Plan {
        let mut plan = self.clone();
        plan.outputs.clear();
        for _ in 0..2 {
            let topic = unique_name(&format!("bench-out-{}", self.size));
            broker
                .create_topic(&topic, self.partitions)
                .await
                .expect("topic");
            plan.outputs.push(topic);
        }
        plan
    }

    /// The plan as one line for a child process's environment.
    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.servers,
            self.topic,
            self.partitions,
            self.records,
            self.size,
            self.outputs.join(",")
        )
    }

    /// The plan a parent handed to this child process.
    pub(crate) fn from_env() -> Plan {
        let line = std::env::var("BENCH_PLAN").expect("BENCH_PLAN");
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 6, "BENCH_PLAN: {line}");
        Plan {
            servers: f[0].to_owned(),
            topic: f[1].to_owned(),
            partitions: f[2].parse().expect("partitions"),
            records: f[3].parse().expect("records"),
            size: f[4].parse().expect("size"),
            outputs: f[5]
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// Runs a measuring child process: its one line of output,
/// `pass1=RATE pass2=RATE`, and its peak RSS as the kernel counted it.
// The child is reaped by `wait4`, which reports its resource usage.
#[allow(clippy::zombie_processes)]
fn run_child(name: &str, mut command: std::process::Command) -> Measurement {
    use std::io::Read as _;
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("child output");
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid; `wait4` fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's, not waited for yet.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{name}: the measuring process failed (status {status}): {out}"
    );
    let field = |key: &str| -> f64 {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no {key} in {out:?}"))
    };
    let optional = |key: &str| if out.contains(key) { field(key) } else { 0.0 };
    // A figure of both passes (`{key}1_ns=` and `{key}2_ns=`), if reported.
    let per_pass = |key: &str| {
        let (first, second) = (format!("{key}1_ns="), format!("{key}2_ns="));
        out.contains(&first)
            .then(|| (field(&first), field(&second)))
    };
    // A figure of each thread group, if reported.
    let groups = |key: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| {
                let groups: Option<Vec<f64>> = v.split(',').map(|x| x.parse().ok()).collect();
                groups
                    .and_then(|g| g.try_into().ok())
                    .unwrap_or_else(|| panic!("{name}: {key}{v}"))
            })
    };
    Measurement {
        first: field("pass1="),
        second: field("pass2="),
        peak_rss_mb: field("peak_rss_mb="),
        // The Java tools do not report their heap.
        idle_heap_mb: optional("idle_heap_mb="),
        peak_heap_mb: optional("peak_heap_mb="),
        cpu_ns: per_pass("cpu"),
        machine_ns: per_pass("machine"),
        threads_ns: groups("threads2_ns="),
        threads_faults: groups("threads2_faults="),
    }
}

/// The child's side: two passes of `case`, each reading the whole topic
/// (with a new group) or writing `records` records to its own topic.
pub(crate) async fn child(case: Case) {
    let plan = Plan::from_env();
    let sampler = Sampler::start();
    let mut rates = [0.0; 2];
    let mut cpu = [0.0; 2];
    let mut machine = [None; 2];
    let mut per_thread = None;
    let records = case.records(&plan) as f64;
    for pass in 0..2 {
        let before = cpu_time();
        let machine_before = machine_busy();
        // Reported for the second pass only.
        let threads_before = (pass == 1).then(|| sampler.threads());
        let elapsed = case.pass(&plan, pass).await;
        rates[pass] = records / elapsed.as_secs_f64();
        cpu[pass] = (cpu_time() - before).as_nanos() as f64 / records;
        machine[pass] = machine_before
            .zip(machine_busy())
            .map(|(a, b)| (b - a).as_nanos() as f64 / records);
        if let Some(threads_before) = threads_before {
            per_thread = per_group(&threads_before, &sampler.threads());
        }
    }
    let (idle_heap, peak_heap) = sampler.stop();
    // glibc's figures say nothing of another allocator's heap.
    let heap = if case.under_mimalloc() {
        String::new()
    } else {
        format!(" idle_heap_mb={idle_heap:.1} peak_heap_mb={peak_heap:.1}")
    };
    // The process's own peak (the kernel's `ru_maxrss` of a child also
    // counts the parent's memory it was started from).
    println!(
        "pass1={:.0} pass2={:.0} cpu1_ns={:.0} cpu2_ns={:.0} peak_rss_mb={:.1}{heap}",
        rates[0],
        rates[1],
        cpu[0],
        cpu[1],
        rss_mb("VmHWM:")
    );
    if let [Some(a), Some(b)] = machine {
        println!("machine1_ns={a:.0} machine2_ns={b:.0}");
    }
    if let Some(groups) = per_thread {
        let list = |figures: [f64; THREAD_GROUPS.len()], per: f64| {
            let figures: Vec<String> = figures.iter().map(|f| format!("{:.2}", f / per)).collect();
            figures.join(",")
        };
        println!("threads2_ns={}", list(groups.ns, records));
        println!("threads2_faults={}", list(groups.faults, records / 1000.0));
    }
}

/// The whole machine's busy CPU time so far (every CPU, every process:
/// `/proc/stat` without idle, I/O wait and steal, the time the host ran
/// something else while this machine waited), or `None` where it cannot be
/// read.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: a plain libc query without arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| Duration::from_nanos(busy * 1_000_000_000 / ticks as u64))
}

/// The CPU time this process has used so far, user and system, all threads.
/// On a small machine it holds stiller than a rate: a pass that waits for
/// the broker (or for the other core) takes longer but not more CPU.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is valid; `getrusage` fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Where `scripts/kafka-local` is, if this checkout has it and Java runs.
pub(crate) fn java_launcher() -> Result<std::path::PathBuf, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local");
    if !script.exists() {
        return Err("scripts/kafka-local is not in this checkout".to_owned());
    }
    match std::process::Command::new("java").arg("-version").output() {
        Ok(o) if o.status.success() => Ok(script),
        _ => Err("no Java runtime on the PATH".to_owned()),
    }
}

/// mimalloc's shared library, for the cases measured under it:
/// `BENCH_MIMALLOC` if set, else where Debian's `libmimalloc2.0` and
/// common builds put it.
pub(crate) fn mimalloc_library() -> Result<std::path::PathBuf, String> {
    if let Ok(path) = std::env::var("BENCH_MIMALLOC") {
        let path = std::path::PathBuf::from(path);
        return if path.exists() {
            Ok(path)
        } else {
            Err(format!("BENCH_MIMALLOC={} does not exist", path.display()))
        };
    }
    [
        "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
        "/usr/lib/aarch64-linux-gnu/libmimalloc.so.2",
        "/usr/lib64/libmimalloc.so.2",
        "/usr/local/lib/libmimalloc.so",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| {
        "no libmimalloc found (install libmimalloc2.0, or set BENCH_MIMALLOC to its path)"
            .to_owned()
    })
}

/// Kafka's ConsumerPerformance or ProducerPerformance, twice in one JVM.
fn java_command(case: Case, plan: &Plan) -> std::process::Command {
    let script = java_launcher().expect("java");
    let program =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/java/JavaPerf.java");
    let mut c = std::process::Command::new(script);
    c.arg("java").arg(program);
    match case {
        Case::JavaConsumer => c.args([
            "consumer",
            &plan.servers,
            &plan.topic,
            &plan.records.to_string(),
        ]),
        _ => c.args([
            "producer",
            &plan.servers,
            &plan.outputs.join(","),
            &plan.records.to_string(),
            &plan.size.to_string(),
        ]),
    };
    c
}

/// The consumer settings of every consumer case, raw or not: `CONSUMER`,
/// then any `key=value` of `BENCH_CONSUMER_PROPS` (comma-separated), for
/// measuring other settings against the same baseline.
fn consumer_properties() -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = CONSUMER
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(extra) = std::env::var("BENCH_CONSUMER_PROPS") {
        for kv in extra.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .expect("BENCH_CONSUMER_PROPS: key=value,...");
            props.push((k.to_owned(), v.to_owned()));
        }
    }
    props
}

/// The librdkafka configuration of the raw consumer loops: the crate's
/// memory settings (its prefetch budget and fetch response size, so both
/// hold the same bound) and every consumer case's `consumer_properties`;
/// the rest is librdkafka's default (`plain_source_fetch_backoff_1000ms`
/// measures the crate with librdkafka's fetch back-off).
fn consumer_config(servers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("group.id", group);
    let crate_defaults = ConsumerSettings::new(servers);
    for key in ["queued.max.messages.kbytes", "fetch.max.bytes"] {
        if let Some(value) = crate_defaults.get(key) {
            config.set(key, value);
        }
    }
    for (k, v) in consumer_properties() {
        config.set(k, v);
    }
    config
}

/// This crate's own settings from `BENCH_SETTINGS` (`name=value`,
/// comma-separated; the names below), for measuring them against the same
/// baselines; each unset one keeps the crate's default.
fn crate_setting(name: &str) -> Option<usize> {
    const NAMES: [&str; 6] = [
        "max_batch_records",
        "max_batch_bytes",
        "buffer_batches",
        "max_in_flight",
        "committer_max_batch",
        "min_commit_interval_ms",
    ];
    let all = std::env::var("BENCH_SETTINGS").ok()?;
    all.split(',').filter(|kv| !kv.is_empty()).find_map(|kv| {
        let (k, v) = kv.split_once('=').expect("BENCH_SETTINGS: name=value,...");
        assert!(
            NAMES.contains(&k),
            "BENCH_SETTINGS: {k} is not one of {NAMES:?}"
        );
        (k == name).then(|| v.parse().expect("BENCH_SETTINGS: a number"))
    })
}

fn consumer_settings(servers: &str, group: &str) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(servers).group_id(group);
    if let Some(n) = crate_setting("max_batch_records") {
        settings = settings.max_batch_records(n);
    }
    if let Some(n) = crate_setting("max_batch_bytes") {
        settings = settings.max_batch_bytes(n);
    }
    if let Some(n) = crate_setting("buffer_batches") {
        settings = settings.buffer_batches(n);
    }
    if let Some(ms) = crate_setting("min_commit_interval_ms") {
        settings = settings.min_commit_interval(Duration::from_millis(ms as u64));
    }
    consumer_properties()
        .into_iter()
        .fold(settings, |s, (k, v)| s.property(k, v))
}

fn producer_settings(servers: &str) -> reactive_kafka::ProducerSettings {
    let mut settings = reactive_kafka::ProducerSettings::new(servers);
    if let Some(n) = crate_setting("max_in_flight") {
        settings = settings.max_in_flight(n);
    }
    PRODUCER
        .iter()
        .fold(settings, |s, (k, v)| s.property(*k, *v))
}

/// The committers' settings: the defaults, or `committer_max_batch`.
fn committer_settings() -> CommitterSettings {
    match crate_setting("committer_max_batch") {
        Some(n) => CommitterSettings::default().max_batch(n),
        None => CommitterSettings::default(),
    }
}

async fn blocking(plan: &Plan, f: fn(&str, &str, usize) -> Duration) -> Duration {
    let (servers, topic, n) = (plan.servers.clone(), plan.topic.clone(), plan.records);
    tokio::task::spawn_blocking(move || f(&servers, &topic, n))
        .await
        .expect("raw loop")
}

/// Checks that the broker kept every record (the embedded broker drops data
/// beyond 5 MiB per partition).
fn check_watermarks(servers: &str, topic: &str, partitions: i32, records: usize) {
    let total: usize = partition_counts(servers, topic, partitions).iter().sum();
    assert_eq!(total, records, "records on the broker");
}

/// How many records each partition of `topic` holds, all of them from
/// offset 0.
fn partition_counts(servers: &str, topic: &str, partitions: i32) -> Vec<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "partition {p} lost data (low watermark {low}): shrink the data set"
            );
            high as usize
        })
        .collect()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(300)
}

/// The raw loop users write first: poll, touch the payload, count.
fn raw_base_consumer(servers: &str, topic: &str, n: usize) -> Duration {
    let consumer: BaseConsumer = consumer_config(servers, &unique_name("raw"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let (mut count, mut bytes, mut started) = (0, 0, None);
    let limit = deadline();
    while count < n {
        assert!(Instant::now() < limit, "raw loop stalled at {count} of {n}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                bytes += m.payload().map_or(0, <[u8]>::len);
                count += 1;
            }
            Some(Err(e)) => panic!("raw consumer error: {e}"),
            None => {}
        }
    }
    let elapsed = started.expect("records").elapsed();
    assert!(bytes > 0);
    elapsed
}

/// Reads `n` items, touching each payload; the clock starts at the first item.
async fn read_timed<S, T, E>(mut stream: S, n: usize, payload_len: impl Fn(&T) -> usize) -> Duration
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    let (mut count, mut bytes, mut started) = (0, 0, None);
    let read = async {
        while count < n {
            let item = stream.next().await.expect("stream ended").expect("record");
            started.get_or_insert_with(Instant::now);
            bytes += payload_len(&item);
            count += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("stream stalled");
    assert!(bytes > 0);
    started.expect("records").elapsed()
}

/// rdkafka's own async stream.
async fn raw_stream_consumer(plan: &Plan) -> Duration {
    let consumer: StreamConsumer = consumer_config(&plan.servers, &unique_name("raw-stream"))
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[plan.topic.as_str()])
        .expect("subscribe");
    let elapsed = read_timed(consumer.stream(), plan.records, |m| {
        m.payload().map_or(0, <[u8]>::len)
    })
    .await;
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .expect("drop");
    elapsed
}

/// The fastest raw path: every partition split into its own queue, one
/// thread per partition, the main queue polled by this thread.
fn raw_partition_queues(servers: &str, topic: &str, n: usize) -> Duration {
    let consumer: Arc<BaseConsumer> = Arc::new(
        consumer_config(servers, &unique_name("raw-pq"))
            .create()
            .expect("consumer"),
    );
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    drop(metadata);
    let queues: Vec<_> = (0..partitions)
        .map(|p| consumer.split_partition_queue(topic, p).expect("split"))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    drop(tpl);
    let count = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(std::sync::OnceLock::new());
    let threads: Vec<_> = queues
        .into_iter()
        .map(|q| {
            let (count, started) = (count.clone(), started.clone());
            std::thread::spawn(move || {
                let limit = deadline();
                while count.load(Ordering::Relaxed) < n {
                    assert!(Instant::now() < limit, "partition queue stalled");
                    if let Some(m) = q.poll(Duration::from_millis(50)) {
                        let m = m.expect("record");
                        started.get_or_init(Instant::now);
                        assert!(m.payload().is_some());
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while count.load(Ordering::Relaxed) < n {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(10)) {
            panic!("consumer error: {e}");
        }
    }
    let elapsed = started.get().expect("records").elapsed();
    for t in threads {
        t.join().expect("queue thread");
    }
    elapsed
}

async fn plain_source(plan: &Plan, settings: ConsumerSettings) -> Duration {
    let (source, control) =
        consumer::plain_source(settings, Subscription::topics([plan.topic.as_str()]))
            .expect("source");
    let elapsed = read_timed(source, plan.records, |r| r.payload().map_or(0, <[u8]>::len)).await;
    control.shutdown().await.expect("shutdown");
    elapsed
}

/// At-least-once by hand: store each offset, commit asynchronously every
/// 1000 records, commit synchronously at the end.
fn raw_commit_loop(servers: &str, topic: &str, n: usize) -> Duration {
    let consumer: BaseConsumer = consumer_config(servers, &unique_name("raw-commit"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let (mut count, mut started) = (0, None);
    let limit = deadline();
    while count < n {
        assert!(
            Instant::now() < limit,
            "raw commit loop stalled at {count} of {n}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                consumer
                    .store_offset_from_message(&m)
                    .expect("store offset");
                count += 1;
                if count % 1000 == 0 {
                    consumer
                        .commit_consumer_state(CommitMode::Async)
                        .expect("commit");
                }
            }
            Some(Err(e)) => panic!("raw consumer error: {e}"),
            None => {}
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // NoOffset: the last asynchronous commit already covered everything.
        Ok(()) => {}
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
        Err(e) => panic!("final commit: {e}"),
    }
    started.expect("records").elapsed()
}

/// Committable source into the batched committer; with `out_of_order`, a
/// trivial async step runs 16 at a time (every 7th record yields once, so
/// completions interleave) and the contiguous watermark is committed.
async fn committable_committer(plan: &Plan, out_of_order: bool) -> Duration {
    let mut settings = consumer_settings(&plan.servers, &unique_name("committable"));
    if out_of_order {
        settings = settings.out_of_order_commits(10_000);
    }
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([plan.topic.as_str()]))
            .expect("source");
    let started = std::sync::OnceLock::new();
    let messages = source.take(plan.records);
    let sink = committer::sink(committer_settings()).expect("committer");
    // In order, the README's pipeline: one step from a message to its offset.
    let pipeline = if out_of_order {
        messages
            .map(|m| {
                started.get_or_init(Instant::now);
                let m = m.expect("record");
                async move {
                    if m.record.offset() % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    Ok(m.offset)
                }
            })
            .buffer_unordered(16)
            .forward(sink)
            .left_future()
    } else {
        messages
            .map(|m| {
                started.get_or_init(Instant::now);
                Ok(m.expect("record").offset)
            })
            .forward(sink)
            .right_future()
    };
    tokio::time::timeout(Duration::from_secs(300), pipeline)
        .await
        .expect("committable pipeline stalled")
        .expect("pipeline");
    let elapsed = started.get().expect("records").elapsed();
    // How often the broker was asked to commit (the driver merges what
    // arrives while one commit is in flight).
    let metrics = control.metrics();
    eprintln!(
        "# committable pass: {} commits, {} offsets committed",
        metrics.commits, metrics.offsets_committed
    );
    control.shutdown().await.expect("shutdown");
    elapsed
}

/// The committable case on typed records: key and payload through a
/// trivial deserializer (their length), so what is measured is the typed
/// path itself.
async fn typed_committable_committer(plan: &Plan) -> Duration {
    struct Len;
    impl reactive_kafka::serde::Deserializer<usize> for Len {
        fn deserialize(
            &self,
            _: &str,
            bytes: &[u8],
        ) -> Result<usize, reactive_kafka::serde::BoxError> {
            Ok(bytes.len())
        }
    }
    let settings = consumer_settings(&plan.servers, &unique_name("typed"));
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([plan.topic.as_str()]))
            .expect("source");
    let started = std::sync::OnceLock::new();
    let offsets = source
        .deserialize(reactive_kafka::serde::Nullable(Len), Len)
        .take(plan.records)
        .map(|m| {
            started.get_or_init(Instant::now);
            let m = m.expect("record");
            let typed = m.record.expect("trivially deserialized");
            std::hint::black_box((typed.key, typed.payload));
            Ok(m.offset)
        });
    let sink = committer::sink(committer_settings()).expect("committer");
    tokio::time::timeout(Duration::from_secs(300), offsets.forward(sink))
        .await
        .expect("typed committable pipeline stalled")
        .expect("pipeline");
    let elapsed = started.get().expect("records").elapsed();
    control.shutdown().await.expect("shutdown");
    elapsed
}

/// A committable partitioned source, each partition's sub-stream committing
/// through a committer sink of its own, as a task; timed from the first
/// record to the last partition's final commit.
async fn partitioned_committer(plan: &Plan) -> Duration {
    let settings = consumer_settings(&plan.servers, &unique_name("partitioned"));
    let (mut source, control) = consumer::committable_partitioned_source(
        settings,
        Subscription::topics([plan.topic.as_str()]),
    )
    .expect("source");
    let started: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let parts = plan.partitions as usize;
    // Each sub-stream reads its partition to the end: as many records as
    // the partition holds (the topic need not be filled round-robin).
    let (servers, topic, partitions) = (plan.servers.clone(), plan.topic.clone(), plan.partitions);
    let counts =
        tokio::task::spawn_blocking(move || partition_counts(&servers, &topic, partitions))
            .await
            .expect("watermarks");
    let total: usize = counts.iter().sum();
    assert_eq!(
        total, plan.records,
        "the partitioned case reads every partition to its end: topic {} holds {total} records, the plan {}",
        plan.topic, plan.records
    );
    let mut tasks = Vec::with_capacity(parts);
    while tasks.len() < parts {
        let (tp, sub) = tokio::time::timeout(Duration::from_secs(60), source.next())
            .await
            .expect("partitions assigned")
            .expect("sub-stream")
            .expect("sub-stream");
        let count = counts[tp.partition as usize];
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            sub.take(count)
                .map(move |m| {
                    started.get_or_init(Instant::now);
                    m.map(|m| m.offset)
                })
                .forward(committer::sink(committer_settings()).expect("committer"))
                .await
        }));
    }
    tokio::time::timeout(Duration::from_secs(300), async {
        for t in tasks {
            t.await.expect("task").expect("pipeline");
        }
    })
    .await
    .expect("partitioned pipeline stalled");
    let elapsed = started.get().expect("records").elapsed();
    // How often a partition was paused because its sub-stream was full,
    // and, with `BENCH_CONSUMER_PROPS=statistics.interval.ms=N`, the records
    // librdkafka fetched and then dropped as outdated (what the pauses
    // threw away), as of the last statistics.
    let metrics = control.metrics();
    let dropped = control.statistics().borrow().as_ref().map(|s| {
        s.topics
            .values()
            .flat_map(|t| t.partitions.values())
            .map(|p| p.rx_ver_drops)
            .sum::<u64>()
    });
    eprintln!(
        "# partitioned pass: {} partition pauses, {} batches, {} commits, {} fetched records dropped",
        metrics.partition_pauses,
        metrics.batches,
        metrics.commits,
        dropped.map_or("unknown".to_owned(), |d| d.to_string())
    );
    control.shutdown().await.expect("shutdown");
    elapsed
}

/// The raw producer loop: send, serve delivery reports, wait on a full queue.
fn raw_base_producer(
    servers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    size: usize,
) -> Duration {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", servers);
    for (k, v) in PRODUCER {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().expect("producer");
    let payload = vec![b'x'; size];
    let started = Instant::now();
    for i in 0..n {
        let record = BaseRecord::<(), [u8]>::to(topic)
            .partition((i % partitions as usize) as i32)
            .payload(&payload[..]);
        send_retrying(&producer, record);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let elapsed = started.elapsed();
    drop(producer);
    elapsed
}

async fn plain_sink(plan: &Plan, topic: &str) -> Duration {
    let mut sink = producer::plain_sink(producer_settings(&plan.servers)).expect("sink");
    let payload = bytes::Bytes::from(vec![b'x'; plan.size]);
    let topic = Topic::from(topic);
    let started = Instant::now();
    for i in 0..plan.records {
        sink.feed(
            ProducerRecord::new(&topic)
                .partition((i % plan.partitions as usize) as i32)
                .payload(payload.clone()),
        )
        .await
        .expect("send");
    }
    sink.close().await.expect("close");
    started.elapsed()
}

/// Envelopes with a pass-through value each, results read in order.
async fn producer_flow(plan: &Plan, topic: &str) -> Duration {
    let payload = bytes::Bytes::from(vec![b'x'; plan.size]);
    let partitions = plan.partitions as usize;
    // One shared name, as the raw loop borrows one.
    let topic = Topic::from(topic);
    let envelopes = futures::stream::iter((0..plan.records).map(move |i| {
        let record = ProducerRecord::new(&topic)
            .partition((i % partitions) as i32)
            .payload(payload.clone());
        producer::Envelope::message(record, i)
    }));
    let started = Instant::now();
    let mut flow = producer::flow(producer_settings(&plan.servers), envelopes).expect("flow");
    let mut expected = 0;
    while let Some(result) = flow.next().await {
        let result = result.expect("delivered");
        assert_eq!(*result.pass_through(), expected, "results out of order");
        expected += 1;
    }
    assert_eq!(expected, plan.records);
    started.elapsed()
}

/// A consumer that processes 100 records per millisecond at most: memory
/// must stay bounded by librdkafka's prefetch limit plus the source's buffers.
pub(crate) async fn slow_downstream(plan: &Plan, duration: Duration) -> Row {
    let start_rss = reset_peak_rss();
    let settings = consumer_settings(&plan.servers, &unique_name("slow"))
        .property("queued.max.messages.kbytes", "8192");
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([plan.topic.as_str()]))
            .expect("source");
    let started = Instant::now();
    let mut count = 0;
    let mut half_rss = None;
    while started.elapsed() < duration && count < plan.records {
        if half_rss.is_none() && started.elapsed() >= duration / 2 {
            half_rss = Some(rss_mb("VmRSS:"));
        }
        match tokio::time::timeout(Duration::from_secs(30), source.next()).await {
            Ok(Some(Ok(_))) => count += 1,
            other => panic!("slow source: {other:?}"),
        }
        if count % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let end_rss = rss_mb("VmRSS:");
    println!(
        "# slow downstream: RSS {:.0} MB at the start, {:.0} MB half-way, {:.0} MB at the end ({count} records)",
        start_rss,
        half_rss.unwrap_or(end_rss),
        end_rss
    );
    control.shutdown().await.expect("shutdown");
    let stats = Stats {
        median: rate,
        min: rate,
        max: rate,
    };
    Row {
        case: "plain_source_slow_downstream",
        size: plan.size,
        partitions: plan.partitions,
        records: count,
        first: stats,
        second: stats,
        // This case runs in the benchmark's own process: its RSS growth.
        rss_mb: Some((rss_mb("VmHWM:") - start_rss).max(0.0)),
        heap_mb: None,
        cpu_ns: None,
        machine_ns: None,
        threads_ns: None,
        threads_faults: None,
        base: None,
    }
}

/// Resets the process's peak RSS to its current RSS (Linux:
/// `/proc/self/clear_refs`) and returns the current RSS in MB.
fn reset_peak_rss() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    rss_mb("VmRSS:")
}

/// The heap in use (glibc's `mallinfo2`: bytes allocated in its arenas and
/// in blocks of their own). Its peak is what the README's memory bound is
/// about; the peak RSS also counts memory the allocator keeps after it was
/// freed. Each reading takes every arena's lock for a moment.
fn heap_in_use() -> usize {
    // SAFETY: a plain glibc call without arguments.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks + m.hblkhd
}

/// The group ([`THREAD_GROUPS`]) of thread `tid` of process `pid`, by its
/// name.
fn thread_group(tid: u32, pid: u32, name: &str) -> usize {
    if tid == pid {
        0
    } else if name.starts_with("reactive-kafka") {
        1
    } else if name.starts_with("rdk:") {
        2
    } else if name.starts_with("tokio") {
        3
    } else {
        OTHER
    }
}

/// The group of threads named like none of the others: the last.
const OTHER: usize = THREAD_GROUPS.len() - 1;

/// One thread's figures so far: its group, its run time (the scheduler's,
/// `/proc/self/task/*/schedstat`, in ns) and the minor page faults it took
/// (`/proc/self/task/*/stat`, field 10: pages the kernel had to map in,
/// zeroed, when the thread first touched them).
#[derive(Clone, Copy)]
struct ThreadReading {
    group: usize,
    ns: u64,
    faults: u64,
}

/// Every thread's last reading, by thread id.
type Readings = std::collections::HashMap<u32, ThreadReading>;

/// A thread's minor page faults, from its `stat` line (the fields after the
/// name in parentheses, which may itself hold spaces).
fn minor_faults(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 10 of the line; the part after the name starts at field 3.
    rest.split_whitespace().nth(10 - 3)?.parse().ok()
}

/// Reads every live thread's figures into `seen`; a thread that ended
/// keeps its last reading.
fn read_threads(seen: &mut Readings) {
    let pid = std::process::id();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
        else {
            continue;
        };
        let Some(faults) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|s| minor_faults(&s))
        else {
            continue;
        };
        // A new thread has its creator's name until it names itself: its
        // group is read again until it is not "other".
        let group = match seen.get(&tid) {
            Some(r) if r.group != OTHER => r.group,
            _ => {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                thread_group(tid, pid, name.trim())
            }
        };
        seen.insert(tid, ThreadReading { group, ns, faults });
    }
}

/// Each group's figures from `before` to `after`.
struct PerGroup {
    /// CPU time, in ns.
    ns: [f64; THREAD_GROUPS.len()],
    /// Minor page faults.
    faults: [f64; THREAD_GROUPS.len()],
}

/// What each group of threads spent from `before` to `after`; `None` when
/// no thread could be read.
fn per_group(before: &Readings, after: &Readings) -> Option<PerGroup> {
    if after.is_empty() {
        return None;
    }
    let mut groups = PerGroup {
        ns: [0.0; THREAD_GROUPS.len()],
        faults: [0.0; THREAD_GROUPS.len()],
    };
    for (tid, r) in after {
        let start = before.get(tid);
        groups.ns[r.group] += r.ns.saturating_sub(start.map_or(0, |s| s.ns)) as f64;
        groups.faults[r.group] += r.faults.saturating_sub(start.map_or(0, |s| s.faults)) as f64;
    }
    Some(groups)
}

/// A measured process's one extra thread: it reads the heap in use every
/// 5 ms (for its peak) and the threads' run times and page faults every 50 ms, so that a
/// thread that ends during a pass (a consumer's, when it closes) still
/// counts, up to its last reading: at most 50 ms short, of what it spent
/// closing. It is the process's only extra work (the heap readings took
/// under 0.5 % of its CPU samples in a profile).
struct Sampler {
    idle_heap: f64,
    readings: Arc<std::sync::Mutex<Readings>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Sampler {
    fn start() -> Sampler {
        let idle_heap = heap_in_use() as f64 / (1024.0 * 1024.0);
        let readings = Arc::new(std::sync::Mutex::new(Readings::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (readings, stop) = (readings.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bench-sampler".to_owned())
                .spawn(move || {
                    let mut peak = 0;
                    for tick in 0u64.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        peak = peak.max(heap_in_use());
                        if tick % 10 == 0 {
                            read_threads(&mut readings.lock().expect("sampler"));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    peak
                })
                .expect("sampler")
        };
        Sampler {
            idle_heap,
            readings,
            stop,
            thread,
        }
    }

    /// Every thread's figures so far; a thread that ended, as last read.
    fn threads(&self) -> Readings {
        let mut seen = self.readings.lock().expect("sampler");
        read_threads(&mut seen);
        seen.clone()
    }

    /// The heap in use at the start and at its peak, in MB.
    fn stop(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = self.thread.join().expect("sampler");
        (self.idle_heap, peak as f64 / (1024.0 * 1024.0))
    }
}

/// A memory figure of `/proc/self/status` (`VmHWM:` peak, `VmRSS:` current), in MB.
fn rss_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How often both transactional cases commit (Alpakka's default).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The raw exactly-once loop: a `read_committed` consumer and a
/// transactional producer; each record copied to `output` inside a
/// transaction that also carries the consumed offsets, committed every
/// `COMMIT_INTERVAL`.
fn raw_transactional_loop(servers: &str, input: &str, output: &str, n: usize) -> Duration {
    let group = unique_name("raw-txn");
    let mut config = consumer_config(servers, &group);
    config.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("transactional.id", unique_name("raw-txn"));
    for (k, v) in PRODUCER {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().expect("producer");
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).expect("init");
    let mut next: std::collections::BTreeMap<i32, i64> = Default::default();
    let commit = |next: &mut std::collections::BTreeMap<i32, i64>| {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next.iter() {
            tpl.add_partition_offset(input, *p, Offset::Offset(*o))
                .expect("offset");
        }
        let metadata = consumer.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&tpl, &metadata, timeout)
            .expect("offsets");
        producer.commit_transaction(timeout).expect("commit");
        next.clear();
    };
    let (mut count, mut started, mut open_since) = (0, None, None);
    let limit = deadline();
    while count < n {
        assert!(
            Instant::now() < limit,
            "raw transactional loop stalled at {count} of {n}"
        );
        if open_since.is_some_and(|t: Instant| t.elapsed() >= COMMIT_INTERVAL) {
            commit(&mut next);
            open_since = None;
        }
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                if open_since.is_none() {
                    producer.begin_transaction().expect("begin");
                    open_since = Some(Instant::now());
                }
                let mut record = BaseRecord::<[u8], [u8]>::to(output);
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(p) = m.payload() {
                    record = record.payload(p);
                }
                send_retrying(&producer, record);
                next.insert(m.partition(), m.offset() + 1);
                count += 1;
            }
            Some(Err(e)) => panic!("raw consumer error: {e}"),
            None => {}
        }
    }
    if open_since.is_some() {
        commit(&mut next);
    }
    started.expect("records").elapsed()
}

/// `transactional::source` into `transactional::sink`: each record copied
/// to `output`, committed every `COMMIT_INTERVAL`.
async fn transactional_pipeline(plan: &Plan, output: &str) -> Duration {
    let (source, control) = transactional::source(
        consumer_settings(&plan.servers, &unique_name("txn")),
        Subscription::topics([plan.topic.as_str()]),
    )
    .expect("source");
    let sink = transactional::sink(
        producer_settings(&plan.servers),
        TransactionalSettings::new(unique_name("txn"))
            .commit_interval(COMMIT_INTERVAL)
            .max_records(usize::MAX),
    )
    .expect("sink");
    let started = std::sync::OnceLock::new();
    let output = Topic::from(output);
    let first = &started;
    let envelopes = source.take(plan.records).map(move |m| {
        first.get_or_init(Instant::now);
        let m = m?;
        let mut record = ProducerRecord::new(&output);
        if let Some(k) = m.record.key_bytes() {
            record = record.key(k);
        }
        if let Some(p) = m.record.payload_bytes() {
            record = record.payload(p);
        }
        Ok(producer::Envelope::message(record, m.offset))
    });
    tokio::time::timeout(Duration::from_secs(300), envelopes.forward(sink))
        .await
        .expect("transactional pipeline stalled")
        .expect("pipeline");
    let elapsed = started.get().expect("records").elapsed();
    control.shutdown().await.expect("shutdown");
    elapsed
}

/// Hands `record` to a raw producer, serving delivery reports while its
/// queue is full, as raw loops do.
fn send_retrying<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, K, P>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(1));
                record = r;
            }
            Err((e, _)) => panic!("send failed: {e}"),
        }
    }
    producer.poll(Duration::ZERO);
}

/// librdkafka's bookkeeping per prefetched record: the fetch operation that
/// carries it (`rd_kafka_op_t` cut to its fetch member, 304 bytes in
/// librdkafka 2.12, and the allocator's header).
const LIBRDKAFKA_BYTES_PER_RECORD: f64 = 320.0;

/// This crate's own bytes per buffered record besides its key and payload
/// (the record's struct in its batch).
const CRATE_BYTES_PER_RECORD: f64 = 160.0;

/// The README's memory bound of a consumer case, in MB of heap in use
/// beyond what the process used before it started, for records of `size` bytes on one broker with the crate's
/// default settings: librdkafka's prefetch (up to `queued.max.messages.kbytes`
/// of records, or `queued.min.messages` records if fewer) and one fetch
/// response (`fetch.max.bytes`),
/// each record with its bookkeeping, plus one more response: records share
/// the buffer of the response they came in, freed with its last record, so
/// the oldest response is held whole while its last records wait. For this
/// crate's sources also their buffered batches and the chunks kept to copy
/// the next batches into.
/// `None` for cases that do not consume.
pub(crate) fn memory_bound_mb(case: Case, size: usize, partitions: i32) -> Option<f64> {
    let case = case.code();
    if case.writes() || matches!(case, Case::JavaConsumer | Case::JavaProducer) {
        return None;
    }
    let defaults = ConsumerSettings::new("");
    let setting = |key: &str, librdkafka: f64| {
        defaults
            .get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(librdkafka)
    };
    let budget = setting("queued.max.messages.kbytes", 65536.0) * 1024.0;
    let min_messages = setting("queued.min.messages", 100_000.0);
    let s = size as f64;
    let response = setting("fetch.max.bytes", budget);
    let prefetch = (budget / s).min(min_messages) + response / s;
    let mut bytes = prefetch * (s + LIBRDKAFKA_BYTES_PER_RECORD) + response;
    let crate_source = !matches!(
        case,
        Case::RawBaseConsumer
            | Case::RawStreamConsumer
            | Case::RawPartitionQueues
            | Case::RawCommitLoop
    );
    if crate_source {
        // Buffer sizes: the defaults of `ConsumerSettings` (8 batches of at
        // most 1000 records and about `max_batch_bytes`, 256 KiB unless
        // `BENCH_SETTINGS` sets it, each copied into chunks of that size).
        let max_batch_bytes = crate_setting("max_batch_bytes").unwrap_or(256 << 10) as f64;
        let (batches, batch) = (8.0, (max_batch_bytes / s).clamp(1.0, 1000.0));
        let buffered = if case == Case::Partitioned {
            (batches + 3.0) * batch * partitions as f64
        } else {
            (batches + 2.0) * batch
        };
        let chunks = (batches + 2.0) * (batch * s).max(max_batch_bytes.max(16.0 * 1024.0));
        bytes += buffered * (s + CRATE_BYTES_PER_RECORD) + chunks;
    }
    Some(bytes / (1024.0 * 1024.0))
}
