//! Throughput of reactive-kafka's sources and sinks beside raw rdkafka loops
//! with the same librdkafka settings, in one run.
//!
//! ```text
//! cargo bench --bench throughput -- --quick      # about a minute on 2 cores
//! cargo bench --bench throughput                  # 100 B and 1 KiB records, more repetitions
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo bench --bench throughput -- --quick
//! cargo bench --bench throughput -- --quick --only producer_flow   # cases whose name contains it
//! cargo bench --bench throughput -- --quick --only plain_source,producer_flow   # either
//! ```
//!
//! Built with the `metrics` feature, `--instrument` installs a no-op
//! `metrics` recorder first, so the crate's figures are gathered and
//! handed to it (`scripts/bench-overhead` compares such a build with a
//! plain one).
//!
//! Consumer cases read the same pre-produced topic from the beginning with a
//! new consumer group each; the clock starts at the first record, so group
//! joins are not measured. Producer cases write `records` records and stop the
//! clock when the last one is acknowledged. Every case runs several times,
//! interleaved with its baseline, and the median is reported, one line per case:
//!
//! `case=plain_source size=100 records=200000 records_per_s=... mb_per_s=... ratio_vs_raw=... baseline=raw_base_consumer baseline_records_per_s=... rss_growth_mb=...`
//!
//! followed by a Markdown table. The same figures go to
//! `target/bench-results/throughput.csv` and a bar chart,
//! `target/bench-results/throughput.svg`. RSS growth is how far the
//! process's peak RSS rose above its RSS at the start of the case; with the
//! embedded broker it includes what the broker itself allocates.
//!
//! The raw baselines vary a lot from run to run on a small machine, so each
//! ratio divides by the baseline's median over the runs interleaved with that
//! case (printed as `baseline_records_per_s`), not by the first baseline row.

#[path = "throughput/cases.rs"]
mod cases;
#[path = "throughput/report.rs"]
mod report;

use std::time::Duration;

use reactive_kafka::testkit::TestBroker;

use cases::{Case, Plan};
use report::Row;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only A,B`: just the cases whose name contains A or B (for profiling).
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    let wanted = |case: Case| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|o| case.name().contains(o)))
    };
    if args.iter().any(|a| a == "--instrument") {
        instrument();
    }
    let broker = TestBroker::start().await.expect("broker");
    let embedded = broker.is_embedded();
    let (sizes, runs, records, partitions) = if quick {
        (vec![100], 3, 200_000, 8)
    } else {
        (vec![100, 1024], 5, 400_000, 16)
    };
    println!(
        "# broker={} partitions={partitions} runs={runs} mode={} cores={} metrics={} opentelemetry={}",
        if embedded { "embedded" } else { "external" },
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg!(feature = "metrics"),
        cfg!(feature = "opentelemetry"),
    );

    let mut rows: Vec<Row> = Vec::new();
    for size in sizes {
        // The embedded broker keeps 5 MiB per partition: stay under 4 MiB.
        let fit = |parts: i32| {
            if embedded {
                records.min(parts as usize * (4 << 20) / (size + 64))
            } else {
                records
            }
        };
        let plan = Plan::prepare(&broker, partitions, fit(partitions), size).await;
        for (case, baseline) in Case::PAIRS.into_iter().filter(|(c, _)| wanted(*c)) {
            measure(&plan, case, baseline, &mut rows, runs).await;
        }
        for (case, baseline, parts) in Case::PARTITIONED.into_iter().filter(|(c, _, _)| wanted(*c))
        {
            let plan = Plan::prepare(&broker, parts, fit(parts), size).await;
            measure(&plan, case, baseline, &mut rows, runs).await;
        }
        if only.is_some() {
            continue;
        }
        // Memory under a slow downstream: the source must stay within its buffers.
        let slow =
            cases::slow_downstream(&plan, Duration::from_secs(if quick { 3 } else { 6 })).await;
        println!("{}", slow.line());
        rows.push(slow);
    }
    println!();
    print!("{}", report::markdown(&rows));
    match report::write_files(&rows) {
        Ok(dir) => println!("\nwrote {dir}/throughput.csv and {dir}/throughput.svg"),
        Err(e) => eprintln!("could not write the report files: {e}"),
    }
}

/// Installs a no-op `metrics` recorder: the crate gathers and hands over
/// its figures, the recorder drops them.
#[cfg(feature = "metrics")]
fn instrument() {
    metrics::set_global_recorder(metrics::NoopRecorder).expect("the only recorder");
    println!("# instrumented: metrics feature on, a no-op recorder installed");
}

#[cfg(not(feature = "metrics"))]
fn instrument() {
    println!("# --instrument ignored: built without the metrics feature");
}

/// Runs `case` and its `baseline` `runs` times, interleaved, and adds the
/// medians to `rows` (a baseline once per size).
async fn measure(plan: &Plan<'_>, case: Case, baseline: Case, rows: &mut Vec<Row>, runs: usize) {
    let (size, records) = (plan.size(), plan.records());
    let mut measured = Vec::new();
    let mut base = Vec::new();
    let mut rss = Vec::new();
    let mut base_rss = Vec::new();
    for _ in 0..runs {
        let b = baseline.run(plan).await;
        base.push(b.rate);
        base_rss.push(b.rss_growth_mb);
        let m = case.run(plan).await;
        measured.push(m.rate);
        rss.push(m.rss_growth_mb);
    }
    let base_rate = report::median(base);
    let rate = report::median(measured);
    let base_rss = Some(report::median(base_rss));
    for row in [
        Row::new(
            baseline.name(),
            baseline.name(),
            size,
            records,
            base_rate,
            base_rate,
            base_rss,
        ),
        Row::new(
            case.name(),
            baseline.name(),
            size,
            records,
            rate,
            base_rate,
            Some(report::median(rss)),
        ),
    ] {
        if !rows
            .iter()
            .any(|r| r.case == row.case && r.size == row.size)
        {
            println!("{}", row.line());
            rows.push(row);
        }
    }
}
