//! Figures through the `metrics` facade (feature `metrics`), named after
//! the OpenTelemetry messaging conventions and labelled with the client id
//! (and the group): a consumer's published by its thread once a second,
//! from the counters `Control::metrics` reads and, with
//! `statistics.interval.ms`, the lag per partition; a producer's from its
//! delivery callback every 1024 deliveries and on each failure. Without the
//! feature this is empty and costs nothing.

#[cfg(feature = "metrics")]
mod enabled {
    use std::collections::BTreeSet;

    pub(crate) use super::producer::produced;

    use crate::outcome::ConsumerMetrics;
    use crate::record::TopicPartition;

    /// Publishes one consumer's figures; remembers which partitions had a
    /// lag series, so that a revoked partition's series is set to 0 once
    /// (the facade cannot remove a series: let your exporter's idle timeout
    /// drop it).
    #[derive(Debug)]
    pub(crate) struct Exporter {
        labels: Vec<(&'static str, String)>,
        partitions: BTreeSet<(String, i32)>,
    }

    impl Exporter {
        pub(crate) fn new(client_id: &str, group: Option<&str>) -> Self {
            let mut labels = vec![
                ("messaging.system", "kafka".to_owned()),
                ("messaging.client.id", client_id.to_owned()),
            ];
            if let Some(g) = group {
                labels.push(("messaging.consumer.group.name", g.to_owned()));
            }
            Exporter {
                labels,
                partitions: BTreeSet::new(),
            }
        }

        pub(crate) fn publish(&mut self, m: &ConsumerMetrics, lag: &[(TopicPartition, i64)]) {
            let l = &self.labels;
            let counter = |name: &'static str, v: u64| metrics::counter!(name, l).absolute(v);
            let gauge = |name: &'static str, v: f64| metrics::gauge!(name, l).set(v);
            counter("messaging.client.consumed.messages", m.records_handed_out);
            counter("messaging.kafka.consumer.buffered.messages", m.records);
            counter("messaging.kafka.consumer.batches", m.batches);
            counter("messaging.kafka.consumer.commits", m.commits);
            counter(
                "messaging.kafka.consumer.commit.failures",
                m.commit_failures,
            );
            counter("messaging.kafka.consumer.commit.retries", m.commit_retries);
            counter(
                "messaging.kafka.consumer.offsets.committed",
                m.offsets_committed,
            );
            counter("messaging.kafka.consumer.offsets.stale", m.offsets_stale);
            counter("messaging.kafka.consumer.assignments", m.assignments);
            counter("messaging.kafka.consumer.revocations", m.revocations);
            counter("messaging.kafka.consumer.retried.errors", m.retried_errors);
            gauge(
                "messaging.kafka.consumer.assigned.partitions",
                m.assigned_partitions as f64,
            );
            gauge(
                "messaging.kafka.consumer.commits.in_flight",
                m.commits_in_flight as f64,
            );
            let mut now = BTreeSet::new();
            for (tp, lag) in lag {
                now.insert((tp.topic.to_string(), tp.partition));
                self.lag(&tp.topic, tp.partition, *lag as f64);
            }
            for (topic, partition) in self
                .partitions
                .difference(&now)
                .cloned()
                .collect::<Vec<_>>()
            {
                self.lag(&topic, partition, 0.0);
            }
            self.partitions = now;
        }

        fn lag(&self, topic: &str, partition: i32, lag: f64) {
            let mut labels = self.labels.clone();
            labels.push(("messaging.destination.name", topic.to_owned()));
            labels.push(("messaging.destination.partition.id", partition.to_string()));
            metrics::gauge!("messaging.kafka.consumer.lag", &labels).set(lag);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{produced, Exporter};

#[cfg(feature = "metrics")]
mod producer {
    /// A producer's figures: records delivered, delivery failures, records
    /// in flight, labelled with its client id. Called on every 1024th
    /// delivery and on each failure, from librdkafka's delivery callback.
    pub(crate) fn produced(client_id: &str, delivered: u64, failures: u64, in_flight: u64) {
        let labels = [
            ("messaging.system", "kafka".to_owned()),
            ("messaging.client.id", client_id.to_owned()),
        ];
        metrics::counter!("messaging.client.sent.messages", &labels).absolute(delivered);
        metrics::counter!("messaging.kafka.producer.delivery.failures", &labels).absolute(failures);
        metrics::gauge!("messaging.kafka.producer.in_flight", &labels).set(in_flight as f64);
    }
}

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Exporter;

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
pub(crate) fn produced(_client_id: &str, _delivered: u64, _failures: u64, _in_flight: u64) {}

#[cfg(not(feature = "metrics"))]
impl Exporter {
    pub(crate) fn new(_client_id: &str, _group: Option<&str>) -> Self {
        Exporter
    }

    pub(crate) fn publish(
        &mut self,
        _: &crate::outcome::ConsumerMetrics,
        _: &[(crate::record::TopicPartition, i64)],
    ) {
    }
}
