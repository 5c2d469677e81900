//! The `metrics` feature: a consumer's figures reach the installed recorder
//! with their OpenTelemetry names and labels. Skipped (with a printed
//! reason) without the feature.

mod support;

use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::{committer, consumer, CommitterSettings, Subscription};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_figures_reach_the_recorder_with_their_labels() {
    if !cfg!(feature = "metrics") {
        println!("skipped: needs the `metrics` feature (cargo test --features metrics)");
        return;
    }
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let (broker, topic) = broker_with_topic("exported", 1).await;
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-exported");
    let settings = broker
        .consumer_settings(&group)
        .client_id("exporter-test")
        .property("statistics.interval.ms", "200");
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    source
        .take(40)
        .map(|m| m.map(|m| m.offset))
        .forward(committer::sink(CommitterSettings::default()).unwrap())
        .await
        .unwrap();

    // Published once a second by the consumer thread.
    let mut found = (None, None, None);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let ours = labels.contains(&("messaging.consumer.group.name".into(), group.clone()))
                && labels.contains(&("messaging.client.id".into(), "exporter-test".into()));
            if !ours {
                continue;
            }
            match (key.name(), value) {
                (
                    "messaging.kafka.consumer.commits",
                    metrics_util::debugging::DebugValue::Counter(n),
                ) => found.0 = Some(n),
                (
                    "messaging.kafka.consumer.assigned.partitions",
                    metrics_util::debugging::DebugValue::Gauge(g),
                ) => found.1 = Some(g.into_inner()),
                ("messaging.kafka.consumer.lag", metrics_util::debugging::DebugValue::Gauge(g)) => {
                    assert!(labels.contains(&("messaging.destination.name".into(), topic.clone())));
                    assert!(
                        labels.contains(&("messaging.destination.partition.id".into(), "0".into()))
                    );
                    found.2 = Some(g.into_inner())
                }
                _ => {}
            }
        }
        if found.0.is_some_and(|n| n > 0) && found.1 == Some(1.0) && found.2 == Some(60.0) {
            break;
        }
    }
    println!("commits, assigned partitions, lag: {found:?}");
    assert!(found.0.is_some_and(|n| n > 0), "{found:?}");
    assert_eq!(found.1, Some(1.0), "{found:?}");
    assert_eq!(found.2, Some(60.0), "100 produced, 40 committed: {found:?}");
    control.shutdown().await.unwrap();
}
