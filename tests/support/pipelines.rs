//! The crate's own pipelines, as a user writes them, for the delivery checker.

use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer::{self, DrainingControl};
use reactive_kafka::producer::{self, Envelope};
use reactive_kafka::testkit::Processed;
use reactive_kafka::{
    committer, CommitterSettings, ConsumerSettings, ProducerRecord, ProducerSettings, Subscription,
};

/// Consume, process (`pace` per record, then report it), commit through
/// `committer::sink` with default settings.
pub fn consume_commit(
    settings: ConsumerSettings,
    input: &str,
    processed: Processed,
    pace: Duration,
) -> reactive_kafka::Result<DrainingControl<()>> {
    consume_commit_with(
        settings,
        input,
        processed,
        pace,
        CommitterSettings::default(),
    )
}

/// [`consume_commit`] through a committer with `committer_settings`.
pub fn consume_commit_with(
    settings: ConsumerSettings,
    input: &str,
    processed: Processed,
    pace: Duration,
    committer_settings: CommitterSettings,
) -> reactive_kafka::Result<DrainingControl<()>> {
    let (source, control) = consumer::committable_source(settings, Subscription::topics([input]))?;
    let committer = committer::sink(committer_settings)?;
    Ok(DrainingControl::spawn(control, async move {
        source
            .then(move |m| {
                let processed = processed.clone();
                async move {
                    let m = m?;
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                    processed.record(&m.record);
                    Ok(m.offset)
                }
            })
            .forward(committer)
            .await
    }))
}

/// Consume, copy each record (key kept) to `output` after `pace`, commit
/// through `producer::committable_sink` with default committer settings.
pub fn consume_produce_commit(
    settings: ConsumerSettings,
    producer_settings: ProducerSettings,
    input: &str,
    output: &str,
    pace: Duration,
) -> reactive_kafka::Result<DrainingControl<()>> {
    let (source, control) = consumer::committable_source(settings, Subscription::topics([input]))?;
    let sink = producer::committable_sink(producer_settings, CommitterSettings::default())?;
    let output = output.to_owned();
    Ok(DrainingControl::spawn(control, async move {
        source
            .then(move |m| copy_to(output.clone(), m, pace))
            .forward(sink)
            .await
    }))
}

/// A committable partitioned source, a task per partition, all sharing one
/// producer and committer: clones of one `producer::committable_sink`.
pub fn partitioned_consume_produce_commit(
    settings: ConsumerSettings,
    producer_settings: ProducerSettings,
    input: &str,
    output: &str,
    pace: Duration,
) -> reactive_kafka::Result<DrainingControl<()>> {
    partitioned_into_one_sink(settings, producer_settings, input, output, 1, move |_| pace)
}

/// [`partitioned_consume_produce_commit`] with each record processed
/// concurrently (`buffer_unordered(8)` per partition, at a pace that varies
/// with the offset, so records finish out of order) under out-of-order
/// commits of at most `max_outstanding` records.
pub fn partitioned_out_of_order_consume_produce_commit(
    settings: ConsumerSettings,
    producer_settings: ProducerSettings,
    input: &str,
    output: &str,
    max_outstanding: usize,
) -> reactive_kafka::Result<DrainingControl<()>> {
    partitioned_into_one_sink(
        settings.out_of_order_commits(max_outstanding),
        producer_settings,
        input,
        output,
        8,
        |offset| Duration::from_millis((offset * 7 % 5) as u64),
    )
}

/// A task per partition, each copying up to `concurrency` records at once
/// (`pace(offset)` each) into a clone of one committable sink.
fn partitioned_into_one_sink(
    settings: ConsumerSettings,
    producer_settings: ProducerSettings,
    input: &str,
    output: &str,
    concurrency: usize,
    pace: impl Fn(i64) -> Duration + Copy + Send + Sync + 'static,
) -> reactive_kafka::Result<DrainingControl<()>> {
    use futures::{SinkExt, TryStreamExt};
    let (partitions, control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([input]))?;
    let mut sink = producer::committable_sink(producer_settings, CommitterSettings::default())?;
    let output = output.to_owned();
    Ok(DrainingControl::spawn(control, async move {
        partitions
            .try_for_each_concurrent(None, |(_tp, source)| {
                let sink = sink.clone();
                let output = output.clone();
                async move {
                    source
                        .map(move |m| {
                            let pace = m
                                .as_ref()
                                .map_or(Duration::ZERO, |m| pace(m.record.offset()));
                            copy_to(output.clone(), m, pace)
                        })
                        .buffer_unordered(concurrency)
                        .forward(sink)
                        .await
                }
            })
            .await?;
        // The last clone: waits until everything is produced and committed.
        sink.close().await
    }))
}

/// The "processing" of the produce pipelines: after `pace`, a copy of the
/// record (key and payload kept) to `output`, with its offset to commit.
async fn copy_to(
    output: String,
    m: reactive_kafka::Result<reactive_kafka::CommittableMessage>,
    pace: Duration,
) -> reactive_kafka::Result<Envelope<reactive_kafka::CommittableOffset>> {
    let m = m?;
    if !pace.is_zero() {
        tokio::time::sleep(pace).await;
    }
    let out = ProducerRecord::new(&output)
        .key(m.record.key().unwrap_or_default().to_vec())
        .payload(m.record.payload().unwrap_or_default().to_vec());
    Ok(Envelope::message(out, m.offset))
}
