//! librdkafka's prefetch limits bound the whole consumer, not each
//! partition: what the consumer fetched and did not hand on stays near
//! `queued.min.messages` however many partitions it reads.

mod support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use reactive_kafka::consumer::{self, Control};
use reactive_kafka::{ProducerRecord, Subscription};
use support::*;

/// Records fetched and not yet read off librdkafka's queues, summed over
/// the partitions (librdkafka's statistics: next offset to fetch minus the
/// offset after the last record the driver read).
fn prefetched(control: &Control, topic: &str) -> Option<i64> {
    let stats = control.statistics().borrow().clone()?;
    let partitions = &stats.topics.get(topic)?.partitions;
    let mut total = 0;
    let mut seen = 0;
    for (id, p) in partitions {
        if *id < 0 || p.next_offset < 0 {
            continue;
        }
        seen += 1;
        total += p.next_offset - p.app_offset.max(0);
    }
    (seen > 0).then_some(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_bounded_for_the_whole_consumer_not_per_partition() {
    let partitions = 8;
    let per_partition = 2_000;
    let (broker, topic) = broker_with_topic("prefetch", partitions).await;
    // Small producer batches, so that one fetch brings few records of a
    // partition and librdkafka's limits decide how far it reads ahead.
    let mut sink = reactive_kafka::producer::plain_sink(
        broker
            .producer_settings()
            .property("batch.num.messages", "20")
            .property("linger.ms", "0"),
    )
    .unwrap();
    let payload = vec![b'x'; 100];
    for i in 0..partitions * per_partition {
        sink.feed(
            ProducerRecord::new(topic.as_str())
                .partition(i % partitions)
                .payload(payload.clone()),
        )
        .await
        .unwrap();
    }
    sink.close().await.unwrap();

    let queued_min = 300;
    let settings = broker
        .consumer_settings(&unique("g-prefetch"))
        .property("queued.min.messages", queued_min.to_string())
        .property("max.partition.fetch.bytes", "2048")
        .property("statistics.interval.ms", "100")
        .max_batch_records(10)
        .buffer_batches(1);
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    // One record, then the stream is not pulled: the driver stops reading
    // and librdkafka fetches until its limit.
    take_n(&mut source, 1, Duration::from_secs(30)).await;

    // Wait until the prefetch has not grown for a second.
    let started = Instant::now();
    let (mut last, mut still_since) = (None, Instant::now());
    let settled = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = prefetched(&control, &topic);
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if now.is_some() && still_since.elapsed() >= Duration::from_secs(1) {
            break now.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the prefetch did not settle: {last:?}"
        );
    };
    println!(
        "prefetched {settled} records over {partitions} partitions (queued.min.messages={queued_min})"
    );
    // Per partition, the limit would let every partition read ahead
    // `queued.min.messages` records: 8 x 300 = 2400. For the whole
    // consumer: 300, plus what the last fetch brought (about a producer
    // batch of 20 records per partition).
    assert!(
        settled < 3 * queued_min as i64,
        "prefetched {settled} records: the limit held per partition, not for the consumer"
    );
    assert!(
        settled >= queued_min as i64 / 2,
        "prefetched only {settled} records"
    );
    control.shutdown().await.unwrap();
}

/// Sends `n` records of 8 KiB to partition 0 of `topic` and waits for them.
async fn send_8kib(sink: &mut reactive_kafka::producer::ProducerSink, topic: &str, n: usize) {
    let payload = vec![b'x'; 8 << 10];
    for _ in 0..n {
        sink.feed(
            ProducerRecord::new(topic)
                .partition(0)
                .payload(payload.clone()),
        )
        .await
        .unwrap();
    }
    sink.flush().await.unwrap();
}

/// A one-partition topic holding one record of 8 KiB, a sink to send more,
/// and consumer settings whose batches hold four such records
/// (`max_batch_bytes` 32 KiB, one batch buffered).
async fn large_records(
    name: &str,
) -> (
    reactive_kafka::testkit::TestBroker,
    String,
    reactive_kafka::producer::ProducerSink,
    reactive_kafka::ConsumerSettings,
) {
    let (broker, topic) = broker_with_topic(name, 1).await;
    let mut sink = reactive_kafka::producer::plain_sink(broker.producer_settings()).unwrap();
    send_8kib(&mut sink, &topic, 1).await;
    let settings = broker
        .consumer_settings(&unique(&format!("g-{name}")))
        .max_batch_records(1000)
        .max_batch_bytes(32 << 10)
        .buffer_batches(1);
    (broker, topic, sink, settings)
}

/// Large records come in batches of about `max_batch_bytes`, not
/// `max_batch_records`: what this crate buffers stays small whatever the
/// record size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_large_records_are_cut_at_max_batch_bytes() {
    let (_broker, topic, mut sink, settings) = large_records("batch-bytes").await;
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    // The first record tells the consumer how large records are. Then the
    // stream is not pulled: the driver fills its one-batch buffer and the
    // rest waits in librdkafka's queue, to be read in as few reads as the
    // batch size allows.
    take_n(&mut source, 1, Duration::from_secs(30)).await;
    let more = 200;
    send_8kib(&mut sink, &topic, more).await;
    sink.close().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = control.metrics().batches;
    take_n(&mut source, more, Duration::from_secs(30)).await;
    let batches = control.metrics().batches - before;
    println!("{more} records of 8 KiB came in {batches} batches (max_batch_bytes 32 KiB)");
    // 32 KiB / 8 KiB = 4 records a batch: about 50 batches. Cut at
    // max_batch_records, the records waiting in the queue would come in
    // one or two.
    assert!(
        batches >= 40,
        "{more} records of 8 KiB came in {batches} batches: not cut at max_batch_bytes"
    );
    // A single stream's backpressure leaves records in librdkafka's queue:
    // nothing prefetched is dropped by a pause.
    assert_eq!(control.metrics().partition_pauses, 0);
    control.shutdown().await.unwrap();
}

/// A partitioned source whose sub-stream is not pulled stops reading that
/// partition once more than a batch of its records waits, counted in the
/// batch size of the read: with large records that is `max_batch_bytes`,
/// not `max_batch_records`, so what it holds stays within
/// `buffer_batches + 3` batches of bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sub_stream_of_large_records_holds_a_few_batches() {
    let (_broker, topic, mut sink, settings) = large_records("batch-bytes-partitioned").await;
    let settings = settings.property("statistics.interval.ms", "100");
    let (mut source, control) =
        consumer::plain_partitioned_source(settings, Subscription::topics([topic.as_str()]))
            .unwrap();
    let mut sub = take_partitions(&mut source, 1)
        .await
        .remove(&0)
        .expect("partition 0");
    // The first record tells the consumer how large records are; then the
    // sub-stream is not pulled.
    take_n(&mut sub, 1, Duration::from_secs(30)).await;
    let more = 200;
    send_8kib(&mut sink, &topic, more).await;
    sink.close().await.unwrap();
    // What the consumer took off librdkafka: the first record, then at most
    // the sub-stream's batch, a batch pending and the read that paused it
    // (4 records a batch).
    let read = || {
        let stats = control.statistics().borrow().clone()?;
        let p = stats.topics.get(&topic)?.partitions.get(&0)?.clone();
        (p.app_offset >= 0).then_some(p.app_offset)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let taken = read().expect("statistics of the partition");
    println!("the consumer took {taken} of {} records of 8 KiB", more + 1);
    assert!(
        taken <= 1 + 4 * 4 + 4,
        "took {taken} records of a partition whose sub-stream is full: not bounded by the batch size"
    );
    let pauses = control.metrics().partition_pauses;
    assert!(
        pauses >= 1,
        "the full sub-stream's partition was not counted as paused"
    );
    // Pulled again, the partition is resumed and every record arrives.
    let rest = take_n(&mut sub, more, Duration::from_secs(30)).await;
    let offsets: Vec<i64> = rest.iter().map(|r| r.offset()).collect();
    assert_eq!(offsets, (1..=more as i64).collect::<Vec<_>>());
    control.shutdown().await.unwrap();
}
