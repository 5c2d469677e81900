//! Throughput and memory of reactive-kafka's sources and sinks beside raw
//! rdkafka loops with the same librdkafka settings and, on Apache Kafka,
//! beside Kafka's own Java tools, in one run.
//!
//! ```text
//! cargo bench --bench throughput -- --quick      # a few minutes on 2 cores
//! cargo bench --bench throughput                  # 100 B and 1 KiB records, 5 rounds
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo bench --bench throughput
//! cargo bench --bench throughput -- --quick --only producer_flow   # cases whose name contains it
//! cargo bench --bench throughput -- --quick --only plain_source,producer_flow   # either
//! cargo bench --bench throughput -- --quick --sizes 1024 --rounds 5   # other sizes and rounds
//! ```
//!
//! Built with the `metrics` feature, `--instrument` installs a no-op
//! `metrics` recorder first, so the crate's figures are gathered and
//! handed to it (`scripts/bench-overhead` compares such a build with a
//! plain one).
//!
//! **Method.** Every measurement is a process of its own (this benchmark
//! started again with `--child CASE`): it runs its case twice, a first
//! pass in a cold process and a second pass in the same process, then
//! reports its own peak RSS (`VmHWM`) and its peak heap in use (glibc's
//! `mallinfo2`, sampled every 5 ms), so memory figures are the case's own
//! and no case inherits another's allocator state. The heap in use is what
//! the README's memory bound is about, and the goals check each consumer
//! case's peak against it; the RSS also counts what the allocator keeps
//! after it was freed. Each pass also reports the process's CPU time
//! (user and system, all its threads, `getrusage`) per record: on 2 cores
//! shared with the broker a rate moves with what the broker does, the CPU a
//! case spends per record less (it moves too, with the speed the host
//! lends the machine), so paired comparisons read both.
//! Beside it, the whole machine's busy CPU time per record (`/proc/stat`,
//! steal time left out):
//! with the broker on the same machine, that counts the broker's work for
//! the case too (a committer's commits, for one). And the second pass's
//! CPU time per record of each group of the process's threads (the
//! scheduler's run time of each, `/proc/self/task/*/schedstat`, read at the
//! pass's ends and every 50 ms between, so a thread that ends during the
//! pass counts up to its last reading): the thread that runs the case, the
//! consumer's own thread, librdkafka's threads, tokio's, and the rest. A
//! process's CPU moves with the host from run to run, but its threads move
//! together: where a case spends more than its baseline, and on which
//! thread, holds better than either figure alone. Beside it, each group's
//! minor page faults per 1,000 records (`/proc/self/task/*/stat`): pages
//! the kernel mapped in, zeroed, on a thread's first touch, which is where
//! memory an allocator gave back to the kernel costs again.
//! Consumer
//! cases read the whole pre-produced topic with a new consumer group per
//! pass; the clock starts at the first record, so group joins are not
//! measured. Producer cases write the same number of records to a fresh
//! topic per pass and stop the clock when the last one is acknowledged.
//! The cases of a group (the consumers on 8 partitions, the consumers on
//! 64 partitions, the producers) run in rounds, each round every case once
//! in a rotated order, and each figure is the median over the rounds, with
//! the spread (fastest over slowest run) beside it. A ratio divides a
//! case's median by its baseline's median over the same rounds.
//!
//! On Apache Kafka (`KAFKA_BOOTSTRAP_SERVERS` set) the data sets are sized
//! for at least 2 s of reading per pass by the fastest case (12M records of
//! 100 B, 3.5M of 1 KiB: about 1.3 GB and 3.8 GB of the broker's log,
//! freed as each group's topic is deleted), and
//! `java_kafka_consumer` / `java_kafka_producer` run Kafka's own
//! `ConsumerPerformance` / `ProducerPerformance` (from `kafka-tools`,
//! through `scripts/kafka-local java`), twice in one JVM: their second pass
//! is JIT-warmed. On a small machine, pin the broker and the benchmark to
//! different cores to keep them from trading places: start the broker with
//! `KAFKA_LOCAL_CPUS=0 scripts/kafka-local start` and run the benchmark under
//! `taskset -c 1`. Keep the broker's data in memory
//! (`KAFKA_LOCAL_DATA=/dev/shm/kafka-data`): on disk, the producer cases'
//! output is written back under the cases that follow.
//!
//! The allocator: `raw_base_consumer[mimalloc]`, `plain_source[mimalloc]`
//! and `committable_source+committer_sink[mimalloc]` run the same code as
//! the cases without the suffix, in a process whose `malloc` is mimalloc's
//! (`LD_PRELOAD` of the shared library: `BENCH_MIMALLOC`, or where Debian's
//! `libmimalloc2.0` puts it; skipped with the reason printed when there is
//! none). librdkafka allocates an operation per fetched record on its
//! broker thread, and the thread that reads the queue frees it: under
//! glibc's `malloc` both take the same arena lock. Their heap is not
//! reported (glibc's `mallinfo2` does not see it); their RSS is compared
//! with the raw loop's under mimalloc.
//!
//! Settings other than the defaults, for measuring them against the same
//! baselines: `BENCH_CONSUMER_PROPS=key=value,...` sets librdkafka
//! consumer properties for the raw loops and the crate alike, and
//! `BENCH_SETTINGS=name=value,...` this crate's own settings, which no
//! raw loop has: `max_batch_records`, `max_batch_bytes`, `buffer_batches`,
//! `max_in_flight`, `committer_max_batch` and `min_commit_interval_ms`.
//!
//! Output: one line per case, `case=... first_pass=... second_pass=...
//! peak_rss_mb=... peak_heap_mb=... cpu_ns_per_record=FIRST/SECOND
//! machine_cpu_ns_per_record=SECOND baseline=... ratio_first=... ratio_second=...
//! cpu_ratio_second=... machine_cpu_ratio_second=...
//! threads_ns_per_record=main:N,consumer:N,librdkafka:N,tokio:N,other:N
//! threads_faults_per_krecord=main:N,...`, a
//! Markdown table, the performance goals with their ratios, and the same
//! figures in `target/bench-results/throughput.csv` with a bar chart,
//! `target/bench-results/throughput.svg`.

#[path = "throughput/cases.rs"]
mod cases;
#[path = "throughput/report.rs"]
mod report;

use std::time::Duration;

use reactive_kafka::testkit::TestBroker;

use cases::{Case, Plan};
use report::{Base, Row, Stats};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let instrument = args.iter().any(|a| a == "--instrument");
    if instrument {
        self::instrument(args.iter().all(|a| a != "--child"));
    }
    if let Some(w) = args.windows(2).find(|w| w[0] == "--child") {
        let case = Case::named(&w[1]).expect("a case name");
        cases::child(case).await;
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only A,B`: just the cases whose name contains A or B (for profiling).
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    let broker = TestBroker::start().await.expect("broker");
    let embedded = broker.is_embedded();
    let java = if embedded {
        Err("the Java tools are measured against Apache Kafka only".to_owned())
    } else {
        cases::java_launcher().map(|_| ())
    };
    let mimalloc = cases::mimalloc_library();
    let wanted = |case: &Case| {
        let named = only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|o| case.name().contains(o)));
        named
            && (!case.needs_real_broker() || java.is_ok())
            && (!case.under_mimalloc() || mimalloc.is_ok())
    };
    let (mut sizes, mut runs) = if quick {
        (vec![100], 3)
    } else {
        (vec![100, 1024], 5)
    };
    // `--sizes A,B`: other record sizes, in bytes.
    if let Some(w) = args.windows(2).find(|w| w[0] == "--sizes") {
        sizes = w[1]
            .split(',')
            .map(|s| s.parse().expect("--sizes A,B: record sizes in bytes"))
            .collect();
    }
    // `--rounds N`: another number of rounds.
    if let Some(w) = args.windows(2).find(|w| w[0] == "--rounds") {
        runs = w[1].parse().expect("--rounds N");
    }
    // Records per topic: on Apache Kafka, at least 2 s of reading per pass
    // for the fastest case (up to 5.8M records/s at 100 B, under mimalloc
    // with both cores, and 1.7M at 1 KiB), so that what a pass pays once
    // (a committer's last commit, joining the group) is a small part of it;
    // the embedded broker keeps 5 MiB per partition, so stay under 4 MiB.
    let records = |size: usize, partitions: i32| -> usize {
        if embedded {
            let cap = if quick { 200_000 } else { 400_000 };
            cap.min(partitions as usize * (4 << 20) / (size + 64))
        } else if quick {
            if size <= 100 {
                2_000_000
            } else {
                600_000
            }
        } else if size <= 100 {
            12_000_000
        } else {
            3_500_000
        }
    };
    println!(
        "# broker={} runs={runs} mode={} cores={} metrics={} opentelemetry={} java={} mimalloc={}",
        if embedded { "embedded" } else { "external" },
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg!(feature = "metrics"),
        cfg!(feature = "opentelemetry"),
        match &java {
            Ok(()) => "yes".to_owned(),
            Err(why) => format!("skipped ({why})"),
        },
        match &mimalloc {
            Ok(path) => path.display().to_string(),
            Err(why) => format!("skipped ({why})"),
        },
    );
    // What a run measured besides the defaults, so its figures say so.
    for knob in ["BENCH_CONSUMER_PROPS", "BENCH_SETTINGS"] {
        if let Ok(v) = std::env::var(knob) {
            println!("# {knob}={v}");
        }
    }

    let mut rows: Vec<Row> = Vec::new();
    for size in sizes {
        let consumers: Vec<Case> = Case::CONSUMERS.into_iter().filter(wanted).collect();
        let needs_topic = !consumers.is_empty() || Case::TRANSACTIONAL.iter().any(wanted);
        if needs_topic {
            let plan = Plan::prepare(&broker, 8, records(size, 8), size).await;
            rows.extend(measure_group(&broker, &plan, &consumers, runs, instrument).await);
            if only.is_none() {
                // Memory under a slow downstream: the source must stay within its buffers.
                let slow =
                    cases::slow_downstream(&plan, Duration::from_secs(if quick { 3 } else { 6 }))
                        .await;
                println!("{}", slow.line());
                rows.push(slow);
            }
            let transactional: Vec<Case> = Case::TRANSACTIONAL.into_iter().filter(wanted).collect();
            if !transactional.is_empty() {
                let plan = Plan {
                    records: plan.records / 6,
                    ..plan.clone()
                };
                rows.extend(measure_group(&broker, &plan, &transactional, runs, instrument).await);
            }
            delete_topics(&broker, [plan.topic.as_str()]).await;
        }
        let many: Vec<Case> = Case::MANY_PARTITIONS.into_iter().filter(wanted).collect();
        if !many.is_empty() {
            let plan = Plan::prepare(&broker, 64, records(size, 64), size).await;
            rows.extend(measure_group(&broker, &plan, &many, runs, instrument).await);
            delete_topics(&broker, [plan.topic.as_str()]).await;
        }
        let producers: Vec<Case> = Case::PRODUCERS.into_iter().filter(wanted).collect();
        if !producers.is_empty() {
            // Producers write half as many records as the consumers read.
            let plan = Plan {
                servers: broker.bootstrap_servers().to_owned(),
                topic: String::new(),
                partitions: 8,
                records: records(size, 8) / 2,
                size,
                outputs: Vec::new(),
            };
            rows.extend(measure_group(&broker, &plan, &producers, runs, instrument).await);
        }
    }
    println!();
    print!("{}", report::markdown(&rows));
    println!();
    print_goals(&rows);
    match report::write_files(&rows) {
        Ok(dir) => println!("\nwrote {dir}/throughput.csv and {dir}/throughput.svg"),
        Err(e) => eprintln!("could not write the report files: {e}"),
    }
}

/// Installs a no-op `metrics` recorder: the crate gathers and hands over
/// its figures, the recorder drops them.
#[cfg(feature = "metrics")]
fn instrument(announce: bool) {
    metrics::set_global_recorder(metrics::NoopRecorder).expect("the only recorder");
    if announce {
        println!("# instrumented: metrics feature on, a no-op recorder installed");
    }
}

#[cfg(not(feature = "metrics"))]
fn instrument(announce: bool) {
    if announce {
        println!("# --instrument ignored: built without the metrics feature");
    }
}

/// Runs every case of a group `runs` times, in rounds (each round every
/// case once, the order rotated), and returns a row per case with its
/// baseline's figures over the same rounds.
async fn measure_group(
    broker: &TestBroker,
    plan: &Plan,
    cases: &[Case],
    runs: usize,
    instrument: bool,
) -> Vec<Row> {
    if cases.is_empty() {
        return Vec::new();
    }
    let mut measured: Vec<Vec<cases::Measurement>> = vec![Vec::new(); cases.len()];
    for round in 0..runs {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let case = cases[i];
            let plan = if case.writes() {
                plan.with_outputs(broker).await
            } else {
                plan.clone()
            };
            let m = case.measure(&plan, instrument).await;
            measured[i].push(m);
            delete_topics(broker, plan.outputs.iter().map(String::as_str)).await;
        }
    }
    let cpus: Vec<_> = measured
        .iter()
        .map(|ms| pass_stats(ms, |m| m.cpu_ns))
        .collect();
    let machines: Vec<_> = measured
        .iter()
        .map(|ms| pass_stats(ms, |m| m.machine_ns))
        .collect();
    let stats: Vec<(Stats, Stats, f64, (f64, f64))> = measured
        .iter()
        .map(|ms| {
            (
                Stats::of(ms.iter().map(|m| m.first).collect()),
                Stats::of(ms.iter().map(|m| m.second).collect()),
                Stats::of(ms.iter().map(|m| m.peak_rss_mb).collect()).median,
                (
                    Stats::of(ms.iter().map(|m| m.idle_heap_mb).collect()).median,
                    Stats::of(ms.iter().map(|m| m.peak_heap_mb).collect()).median,
                ),
            )
        })
        .collect();
    let threads: Vec<_> = measured
        .iter()
        .map(|ms| thread_medians(ms, |m| m.threads_ns))
        .collect();
    let faults: Vec<_> = measured
        .iter()
        .map(|ms| thread_medians(ms, |m| m.threads_faults))
        .collect();
    let rows: Vec<Row> = cases
        .iter()
        .enumerate()
        .zip(stats.iter().zip(cpus.iter().zip(&machines)))
        .map(
            |((i, case), ((first, second, rss, (idle_heap, peak_heap)), (cpu, machine)))| {
                let base = cases
                    .iter()
                    .position(|c| *c == case.baseline())
                    .map(|b| Base {
                        case: cases[b].name(),
                        first: stats[b].0,
                        second: stats[b].1,
                        rss_mb: stats[b].2,
                        cpu_ns: cpus[b].map(|c| c.1),
                        machine_ns: machines[b].map(|m| m.1),
                    });
                Row {
                    case: case.name(),
                    size: plan.size,
                    partitions: plan.partitions,
                    records: case.records(plan),
                    first: *first,
                    second: *second,
                    rss_mb: Some(*rss),
                    heap_mb: (*peak_heap > 0.0).then_some((*idle_heap, *peak_heap)),
                    cpu_ns: *cpu,
                    machine_ns: *machine,
                    threads_ns: threads[i],
                    threads_faults: faults[i],
                    base,
                }
            },
        )
        .collect();
    for row in &rows {
        println!("{}", row.line());
    }
    rows
}

/// The median over the runs of each thread group's `figure`, or `None` if
/// some run did not report it.
fn thread_medians(
    runs: &[cases::Measurement],
    figure: impl Fn(&cases::Measurement) -> Option<[f64; report::THREAD_GROUPS.len()]>,
) -> Option<[f64; report::THREAD_GROUPS.len()]> {
    let runs: Option<Vec<[f64; report::THREAD_GROUPS.len()]>> = runs.iter().map(figure).collect();
    let runs = runs.filter(|r| !r.is_empty())?;
    Some(std::array::from_fn(|g| {
        Stats::of(runs.iter().map(|r| r[g]).collect()).median
    }))
}

/// The stats of both passes of a figure every run reported, or `None` if
/// some run did not report it.
fn pass_stats(
    runs: &[cases::Measurement],
    figure: impl Fn(&cases::Measurement) -> Option<(f64, f64)>,
) -> Option<(Stats, Stats)> {
    let v: Option<Vec<(f64, f64)>> = runs.iter().map(figure).collect();
    v.map(|v| {
        (
            Stats::of(v.iter().map(|x| x.0).collect()),
            Stats::of(v.iter().map(|x| x.1).collect()),
        )
    })
}

/// Deletes topics on Apache Kafka, so that a full run fits on a small disk
/// (the embedded broker's topics go with it).
async fn delete_topics<'a>(broker: &TestBroker, topics: impl IntoIterator<Item = &'a str>) {
    if broker.is_embedded() {
        return;
    }
    let client = reactive_kafka::metadata::MetadataClient::new(
        reactive_kafka::ConsumerSettings::new(broker.bootstrap_servers()),
    )
    .expect("metadata client");
    for topic in topics {
        if let Err(e) = client.delete_topic(topic).await {
            eprintln!("# could not delete topic {topic}: {e}");
        }
    }
}

/// The performance goals, each with its ratio in this run.
fn print_goals(rows: &[Row]) {
    let find = |case: &str, size: usize, partitions: i32| {
        rows.iter()
            .find(|r| r.case == case && r.size == size && r.partitions == partitions)
    };
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.dedup();
    println!("Goals (median ratios of this run; first pass / second pass where both apply):");
    type Cpu = Option<((f64, f64), Option<(f64, f64)>)>;
    let show = |what: String, ratio: Option<f64>, goal: f64, cpu: Cpu| {
        if let Some(r) = ratio {
            let verdict = if r >= goal { "met" } else { "NOT met" };
            // CPU per record beside it (the process's, then the whole
            // machine's): it holds stiller than a rate here.
            let cpu = cpu.map_or(String::new(), |((a, b), machine)| {
                let machine = machine.map_or(String::new(), |(a, b)| {
                    format!("; machine {a:.0} vs {b:.0} ns, {:.2}x", a / b)
                });
                format!(
                    "; CPU per record {a:.0} vs {b:.0} ns, {:.2}x{machine}",
                    a / b
                )
            });
            println!("- {what}: {r:.2} (goal >= {goal:.2}, {verdict}{cpu})");
        }
    };
    for size in sizes {
        let ratio = |a: &str, b: &str, p: i32, first: bool| {
            let (a, b) = (find(a, size, p)?, find(b, size, p)?);
            Some(if first {
                a.first.median / b.first.median
            } else {
                a.second.median / b.second.median
            })
        };
        // Second-pass CPU ns per record of `a` and of `b`: the process's,
        // and the whole machine's where measured.
        let cpu = |a: &str, b: &str, p: i32| {
            let (a, b) = (find(a, size, p)?, find(b, size, p)?);
            let machine = a
                .machine_ns
                .zip(b.machine_ns)
                .map(|(x, y)| (x.1.median, y.1.median));
            Some(((a.cpu_ns?.1.median, b.cpu_ns?.1.median), machine))
        };
        for first in [true, false] {
            let pass = if first { "first pass" } else { "second pass" };
            show(
                format!("{size} B, {pass}: plain_source / raw_base_consumer"),
                ratio("plain_source", "raw_base_consumer", 8, first),
                1.0,
                cpu("plain_source", "raw_base_consumer", 8).filter(|_| !first),
            );
        }
        show(
            format!("{size} B: plain_source / java_kafka_consumer (warmed, second passes)"),
            ratio("plain_source", "java_kafka_consumer", 8, false),
            1.0,
            None,
        );
        // The same code with mimalloc as the process's malloc (a choice of
        // the application, not of this crate): reported beside the goal.
        show(
            format!(
                "{size} B: plain_source[mimalloc] / java_kafka_consumer (warmed, second passes)"
            ),
            ratio("plain_source[mimalloc]", "java_kafka_consumer", 8, false),
            1.0,
            None,
        );
        for first in [true, false] {
            let pass = if first { "first pass" } else { "second pass" };
            show(
                format!("{size} B, {pass}: committable_source+committer_sink / plain_source"),
                ratio(
                    "committable_source+committer_sink",
                    "plain_source",
                    8,
                    first,
                ),
                0.95,
                cpu("committable_source+committer_sink", "plain_source", 8).filter(|_| !first),
            );
        }
        show(
            format!(
                "{size} B, second pass: committable_source+committer_sink[mimalloc] / plain_source[mimalloc]"
            ),
            ratio(
                "committable_source+committer_sink[mimalloc]",
                "plain_source[mimalloc]",
                8,
                false,
            ),
            0.95,
            cpu(
                "committable_source+committer_sink[mimalloc]",
                "plain_source[mimalloc]",
                8,
            ),
        );
        for case in ["producer_plain_sink", "producer_flow"] {
            show(
                format!("{size} B: {case} / raw_base_producer (second passes)"),
                ratio(case, "raw_base_producer", 8, false),
                0.95,
                cpu(case, "raw_base_producer", 8),
            );
        }
        for p in [8, 64] {
            let Some(raw_glibc) = find("raw_base_consumer", size, p).and_then(|r| r.rss_mb) else {
                continue;
            };
            for r in rows.iter().filter(|r| {
                r.size == size
                    && r.partitions == p
                    && !r.case.starts_with("raw_base_consumer")
                    && !r.case.starts_with("java_")
                    && Case::named(r.case)
                        .is_some_and(|c| !c.writes() && c != Case::RawPartitionQueues)
            }) {
                // A case under mimalloc against the raw loop under mimalloc.
                let under_mimalloc = Case::named(r.case).is_some_and(Case::under_mimalloc);
                let (raw_case, raw) = if under_mimalloc {
                    let raw = find("raw_base_consumer[mimalloc]", size, p).and_then(|r| r.rss_mb);
                    let Some(raw) = raw else { continue };
                    ("raw_base_consumer[mimalloc]", raw)
                } else {
                    ("raw_base_consumer", raw_glibc)
                };
                // The goal is about memory, so lower is better: show raw / case.
                // The bound is this crate's; the raw loops are measured, not bounded.
                let ours = !r.case.starts_with("raw_");
                if let (Some((idle, heap)), Some(c), true) = (r.heap_mb, Case::named(r.case), ours)
                {
                    if let Some(bound) = cases::memory_bound_mb(c, size, p).map(|b| b + idle) {
                        let verdict = if heap <= bound { "met" } else { "NOT met" };
                        println!(
                            "- {size} B, {p} partitions: peak heap in use of {} {heap:.0} MB within the README's bound {bound:.0} MB: {verdict}",
                            r.case
                        );
                    }
                }
                if let Some(m) = r.rss_mb {
                    let verdict = if m <= raw * 1.1 { "met" } else { "NOT met" };
                    println!(
                        "- {size} B, {p} partitions: peak RSS of {} {m:.0} MB vs {raw_case} {raw:.0} MB: {:.2}x (goal <= 1.10, {verdict})",
                        r.case,
                        m / raw
                    );
                }
            }
        }
    }
}
