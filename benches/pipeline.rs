//! What the committable pipeline adds to reading a record, without a broker:
//! the stream combinators, the committer's sink and its fold, measured in
//! nanoseconds per record against a plain read loop over the same messages.
//!
//! The throughput benchmark measures these paths on a broker, where a
//! process's CPU time per record moves by 10 to 30 % between runs on a
//! shared machine: more than the whole committable pipeline adds (about a
//! tenth of `plain_source`'s cost). Here the messages are built in memory
//! beforehand (`testkit::CommitRecorder::batch`: batches of 1,000 records
//! of 100 B, each batch's offsets sharing one handle as a source's do, the
//! partitions of 8 in turn), so what is timed is the pipeline alone, and a
//! change of a few nanoseconds shows.
//!
//! Cases, each a process's pass over the same messages, in rounds with the
//! order rotating:
//! - `read_loop`: the baseline, `stream.next().await` and the payload's
//!   length, each message dropped (its offset too).
//! - `committer_sink`: the README's pipeline, `.map(|m| Ok(m?.offset))
//!   .forward(committer::sink(..))`, default settings.
//! - `committer_flow`: `committer::flow` over the offsets, its outcomes
//!   drained.
//!
//! `cargo bench --bench pipeline [-- --rounds N --records N --only NAME]`
//! (`--only`: the read loop and the cases whose name contains `NAME`). Output: one
//! line per case with the median nanoseconds per record over the rounds,
//! the fastest and slowest round, and the difference from the read loop.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use reactive_kafka::testkit::CommitRecorder;
use reactive_kafka::{committer, CommittableMessage, CommitterSettings};

const CASES: [&str; 3] = ["read_loop", "committer_sink", "committer_flow"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let rounds = value("--rounds", 7).max(1);
    let records = value("--records", 1_000_000).max(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `--only NAME`: the read loop and the cases whose name contains NAME.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let measured = |case: &str| case == CASES[0] || only.is_none_or(|o| case.contains(o.as_str()));
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for round in 0..rounds {
        for i in 0..CASES.len() {
            let case = (round + i) % CASES.len();
            if !measured(CASES[case]) {
                continue;
            }
            let elapsed = runtime.block_on(run(CASES[case], records));
            times[case].push(elapsed.as_nanos() as f64 / records as f64);
        }
    }
    println!("# {records} records of 100 B per pass, {rounds} rounds, ns per record");
    let base = median(&times[0]);
    for (case, t) in CASES.iter().zip(&times).filter(|(_, t)| !t.is_empty()) {
        let m = median(t);
        let (min, max) = t
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "case={case} ns_per_record={m:.1} fastest={min:.1} slowest={max:.1} added_ns={:.1} ratio={:.2}",
            m - base,
            m / base
        );
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Messages as a committable source hands them out: batches of 1,000
/// records of one partition, the partitions of 8 in turn.
fn messages(recorder: &CommitRecorder, n: usize) -> Vec<CommittableMessage> {
    let payload = [7u8; 100];
    let mut out = Vec::with_capacity(n);
    let mut next = [0i64; 8];
    while out.len() < n {
        let partition = (out.len() / 1000) % 8;
        let count = (n - out.len()).min(1000) as i64;
        let start = next[partition];
        next[partition] += count;
        out.extend(recorder.batch("t", partition as i32, start..start + count, &payload));
    }
    out
}

/// One pass of `case` over `n` fresh messages; the messages are built
/// before the clock starts.
async fn run(case: &str, n: usize) -> Duration {
    let recorder = CommitRecorder::new();
    let (source, _control) = recorder.source(messages(&recorder, n));
    let started = Instant::now();
    match case {
        "read_loop" => {
            let mut source = source;
            let (mut count, mut bytes) = (0, 0);
            while count < n {
                let m = source.next().await.expect("a message").expect("ok");
                bytes += m.record.payload().map_or(0, <[u8]>::len);
                count += 1;
            }
            assert_eq!(bytes, n * 100);
        }
        "committer_sink" => {
            let sink = committer::sink(CommitterSettings::default()).expect("committer");
            source
                .map(|m| Ok(m?.offset))
                .forward(sink)
                .await
                .expect("pipeline");
        }
        "committer_flow" => {
            let offsets = source.map_ok(|m| m.offset).map(|o| o.expect("ok"));
            let outcomes = committer::flow(CommitterSettings::default(), offsets)
                .expect("committer")
                .try_fold(0, |n, o| async move { Ok(n + o.committed.len()) })
                .await
                .expect("pipeline");
            assert!(outcomes > 0);
        }
        _ => unreachable!(),
    }
    let elapsed = started.elapsed();
    if case != "read_loop" {
        // Every partition's last offset was committed.
        let committed = recorder.committed();
        assert_eq!(committed.len(), 8.min(n.div_ceil(1000)), "{case}");
    }
    elapsed
}
