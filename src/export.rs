//! Figures through the `metrics` facade (feature `metrics`), named after
//! the OpenTelemetry messaging conventions and labelled with the client id
//! (and the group).
//!
//! - A consumer's counters and gauges are published by its thread once a
//!   second, from the counters `Control::metrics` reads and, with
//!   `statistics.interval.ms`, the lag per partition; its commit durations
//!   and revocation hold times as each happens.
//! - A producer's as each delivery report arrives, through handles
//!   registered once (no key is built per record).
//!
//! Without the feature this is empty and costs nothing.

#[cfg(feature = "metrics")]
mod enabled {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use crate::outcome::ConsumerMetrics;
    use crate::record::TopicPartition;

    type Labels = Vec<(&'static str, String)>;

    fn labels(client_id: &str, group: Option<&str>) -> Labels {
        let mut labels = vec![
            ("messaging.system", "kafka".to_owned()),
            ("messaging.client.id", client_id.to_owned()),
        ];
        if let Some(g) = group {
            labels.push(("messaging.consumer.group.name", g.to_owned()));
        }
        labels
    }

    /// Publishes one consumer's figures; remembers which partitions had a
    /// lag series, so that a revoked partition's series is set to 0 once
    /// (the facade cannot remove a series: let your exporter's idle timeout
    /// drop it).
    #[derive(Debug)]
    pub(crate) struct Exporter {
        labels: Labels,
        partitions: BTreeSet<(String, i32)>,
    }

    impl Exporter {
        pub(crate) fn new(client_id: &str, group: Option<&str>) -> Self {
            Exporter {
                labels: labels(client_id, group),
                partitions: BTreeSet::new(),
            }
        }

        pub(crate) fn publish(&mut self, m: &ConsumerMetrics, lag: &[(TopicPartition, i64)]) {
            let l = &self.labels;
            let counter = |name: &'static str, v: u64| metrics::counter!(name, l).absolute(v);
            let gauge = |name: &'static str, v: f64| metrics::gauge!(name, l).set(v);
            counter("messaging.client.consumed.messages", m.records_handed_out);
            counter("messaging.kafka.consumer.read.messages", m.records);
            counter("messaging.kafka.consumer.read.bytes", m.bytes);
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
            counter(
                "messaging.kafka.consumer.partition.pauses",
                m.partition_pauses,
            );
            gauge(
                "messaging.kafka.consumer.buffered.messages",
                m.records.saturating_sub(m.records_handed_out) as f64,
            );
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

    /// A consumer's durations, recorded as each happens: commits (from
    /// sending to the broker's answer) and revocation holds (from the
    /// revocation to the partitions' release).
    #[derive(Debug, Clone)]
    pub(crate) struct Timings {
        commit: metrics::Histogram,
        revocation_hold: metrics::Histogram,
    }

    impl Timings {
        pub(crate) fn new(client_id: &str, group: Option<&str>) -> Self {
            let mut commit = labels(client_id, group);
            commit.push(("messaging.operation.name", "commit".to_owned()));
            Timings {
                commit: metrics::histogram!("messaging.client.operation.duration", &commit),
                revocation_hold: metrics::histogram!(
                    "messaging.kafka.consumer.revocation.hold.duration",
                    &labels(client_id, group)
                ),
            }
        }

        pub(crate) fn commit(&self, d: Duration) {
            self.commit.record(d.as_secs_f64());
        }

        pub(crate) fn revocation_hold(&self, d: Duration) {
            self.revocation_hold.record(d.as_secs_f64());
        }
    }

    /// A producer's figures, labelled with its client id: records and
    /// bytes delivered, delivery failures, records in flight, and the
    /// delivery duration (librdkafka's latency from handing the record
    /// over to its delivery report).
    #[derive(Debug)]
    pub(crate) struct Producer {
        sent: metrics::Counter,
        bytes: metrics::Counter,
        failures: metrics::Counter,
        in_flight: metrics::Gauge,
        duration: metrics::Histogram,
    }

    impl Producer {
        pub(crate) fn new(client_id: &str) -> Self {
            let labels = labels(client_id, None);
            let mut send = labels.clone();
            send.push(("messaging.operation.name", "send".to_owned()));
            Producer {
                sent: metrics::counter!("messaging.client.sent.messages", &labels),
                bytes: metrics::counter!("messaging.kafka.producer.sent.bytes", &labels),
                failures: metrics::counter!("messaging.kafka.producer.delivery.failures", &labels),
                in_flight: metrics::gauge!("messaging.kafka.producer.in_flight", &labels),
                duration: metrics::histogram!("messaging.client.operation.duration", &send),
            }
        }

        /// One record delivered: its key and payload bytes, and its
        /// latency from `send` to the delivery report in microseconds
        /// (negative if librdkafka does not know it).
        pub(crate) fn delivered(&self, bytes: usize, latency_us: i64, in_flight: usize) {
            self.sent.increment(1);
            self.bytes.increment(bytes as u64);
            self.in_flight.set(in_flight as f64);
            if latency_us >= 0 {
                self.duration.record(latency_us as f64 / 1e6);
            }
        }

        pub(crate) fn failed(&self, in_flight: usize) {
            self.failures.increment(1);
            self.in_flight.set(in_flight as f64);
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::Exporter;
    use crate::outcome::ConsumerMetrics;
    use crate::record::TopicPartition;

    /// What `exporter` publishes of `m` and `lag`, into a recorder of its
    /// own (a snapshot takes the values): the lag gauges by partition and
    /// the buffered-records gauge.
    fn publish(
        exporter: &mut Exporter,
        m: &ConsumerMetrics,
        lag: &[(TopicPartition, i64)],
    ) -> (Vec<(String, f64)>, Option<f64>) {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || exporter.publish(m, lag));
        let (mut lags, mut buffered) = (Vec::new(), None);
        for (k, _, _, v) in recorder.snapshotter().snapshot().into_vec() {
            let DebugValue::Gauge(g) = v else { continue };
            match k.key().name() {
                "messaging.kafka.consumer.lag" => lags.push((
                    k.key()
                        .labels()
                        .find(|l| l.key() == "messaging.destination.partition.id")
                        .map(|l| l.value().to_owned())
                        .unwrap(),
                    g.into_inner(),
                )),
                "messaging.kafka.consumer.buffered.messages" => buffered = Some(g.into_inner()),
                _ => {}
            }
        }
        lags.sort_by(|a, b| a.0.cmp(&b.0));
        (lags, buffered)
    }

    #[test]
    fn a_revoked_partitions_lag_series_is_zeroed_once_then_left_alone() {
        let mut exporter = Exporter::new("c", Some("g"));
        let tp = |p| TopicPartition::new("t", p);
        let m = ConsumerMetrics {
            records: 10,
            records_handed_out: 4,
            ..ConsumerMetrics::default()
        };
        let (lags, buffered) = publish(&mut exporter, &m, &[(tp(0), 5), (tp(1), 7)]);
        assert_eq!(lags, [("0".into(), 5.0), ("1".into(), 7.0)]);
        assert_eq!(buffered, Some(6.0), "read but not handed out");
        // Partition 1 revoked: its series is set to 0 (no lag is claimed for
        // a partition this consumer no longer reads)...
        let (lags, _) = publish(&mut exporter, &m, &[(tp(0), 3)]);
        assert_eq!(lags, [("0".into(), 3.0), ("1".into(), 0.0)]);
        // ...and not touched again, so an exporter's idle timeout drops it.
        let (lags, _) = publish(&mut exporter, &m, &[(tp(0), 2)]);
        assert_eq!(lags, [("0".into(), 2.0)]);
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{Exporter, Producer, Timings};

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Exporter;

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

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone)]
pub(crate) struct Timings;

#[cfg(not(feature = "metrics"))]
impl Timings {
    pub(crate) fn new(_client_id: &str, _group: Option<&str>) -> Self {
        Timings
    }

    pub(crate) fn commit(&self, _: std::time::Duration) {}

    pub(crate) fn revocation_hold(&self, _: std::time::Duration) {}
}

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Producer;

#[cfg(not(feature = "metrics"))]
impl Producer {
    pub(crate) fn new(_client_id: &str) -> Self {
        Producer
    }

    pub(crate) fn failed(&self, _in_flight: usize) {}
}
