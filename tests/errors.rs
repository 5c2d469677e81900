//! Bad input fails early and clearly; an unreachable broker fails in bounded time.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reactive_kafka::{
    committer, consumer, producer, CommitterSettings, ConsumerSettings, ErrorKind,
    ProducerSettings, Subscription,
};
use support::*;

#[tokio::test]
async fn a_bad_consumer_key_fails_at_construction_naming_it() {
    let settings = ConsumerSettings::new("127.0.0.1:1")
        .group_id("g")
        .property("max.poll.interval.msec", "1000");
    let err = consumer::plain_source(settings, Subscription::topics(["t"])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("max.poll.interval.msec"), "{err}");
}

#[tokio::test]
async fn a_bad_consumer_value_fails_at_construction_naming_key_and_value() {
    let settings = ConsumerSettings::new("127.0.0.1:1")
        .group_id("g")
        .property("auto.offset.reset", "yesterday");
    let err = consumer::committable_source(settings, Subscription::topics(["t"])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let msg = err.to_string();
    assert!(
        msg.contains("auto.offset.reset") && msg.contains("yesterday"),
        "{msg}"
    );
}

#[tokio::test]
async fn invalid_combinations_fail_at_construction() {
    // Rejected by librdkafka only when the client is created.
    let settings = ConsumerSettings::new("127.0.0.1:1")
        .group_id("g")
        .property("group.protocol", "consumer")
        .property("session.timeout.ms", "6000");
    let err = consumer::plain_source(settings, Subscription::topics(["t"])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("session.timeout.ms"), "{err}");

    let err = consumer::plain_source(
        ConsumerSettings::new("127.0.0.1:1"),
        Subscription::pattern("orders.*"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("orders.*"), "{err}");

    let err = consumer::plain_source(
        ConsumerSettings::new("127.0.0.1:1"),
        Subscription::topics(Vec::<String>::new()),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// An illegal topic name would never be assigned: it fails at construction.
#[tokio::test]
async fn an_invalid_topic_name_fails_at_construction_naming_it() {
    let err = consumer::plain_source(
        ConsumerSettings::new("127.0.0.1:1").group_id("g"),
        Subscription::topics(["bad topic!"]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("bad topic!"), "{err}");
}

#[tokio::test]
async fn a_bad_producer_key_fails_at_construction_naming_it() {
    let err = producer::plain_sink(ProducerSettings::new("127.0.0.1:1").property("acks", "most"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("acks") && err.to_string().contains("most"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_committer_settings_fail_at_construction() {
    let err = committer::sink(CommitterSettings::default().max_batch(0)).unwrap_err();
    assert!(err.to_string().contains("max_batch"), "{err}");
    let err =
        committer::sink(CommitterSettings::default().max_interval(Duration::ZERO)).unwrap_err();
    assert!(err.to_string().contains("max_interval"), "{err}");
}

/// Nothing listens on the port: the source ends with a BrokerUnreachable
/// error within `connect_timeout` (plus a small margin), and `Control`
/// reports the same error.
#[tokio::test]
async fn an_unreachable_broker_fails_within_the_connect_timeout() {
    init_tracing();
    let port = unused_port();
    let settings = ConsumerSettings::new(format!("127.0.0.1:{port}"))
        .group_id("g")
        .connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let (mut source, control) =
        consumer::committable_source(settings, Subscription::topics(["t"])).unwrap();
    let item = tokio::time::timeout(Duration::from_secs(10), source.next())
        .await
        .expect("the source must not hang");
    let err = item.expect("an error item").unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::BrokerUnreachable, "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "failed too early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        source.next().await.is_none(),
        "the stream ends after its error"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), control.is_shutdown())
        .await
        .expect("is_shutdown resolves");
    assert_eq!(closed.unwrap_err().kind(), ErrorKind::BrokerUnreachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_a_producer_sink_within_message_timeout() {
    use futures::SinkExt;
    let port = unused_port();
    let settings =
        ProducerSettings::new(format!("127.0.0.1:{port}")).property("message.timeout.ms", "1500");
    let mut sink = producer::plain_sink(settings).unwrap();
    sink.feed(reactive_kafka::ProducerRecord::new("nowhere").payload("x"))
        .await
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), sink.close())
        .await
        .expect("close must not hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Delivery, "{err}");
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `auto.offset.reset=error` with no committed offset: librdkafka reports an
/// error for the partition, which ends the stream with an error naming the
/// topic and partition, and `is_shutdown` resolves with the same error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_consumer_error_ends_the_stream_and_resolves_is_shutdown() {
    let (broker, topic) = broker_with_topic("fatal", 1).await;
    produce_n(&broker, &topic, 10, 1).await;
    let settings = broker
        .consumer_settings(&unique("g-fatal"))
        .auto_offset_reset(reactive_kafka::AutoOffsetReset::Error);
    let (mut source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.clone()])).unwrap();
    let item = tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("the error arrives")
        .expect("an item");
    let err = item.expect_err("an error, not a record");
    assert_eq!(err.kind(), ErrorKind::Consume, "{err}");
    let c = err.coordinates().expect("coordinates");
    assert_eq!(c.topic, topic);
    assert_eq!(c.partition, Some(0));
    assert!(source.next().await.is_none());
    let closed = tokio::time::timeout(Duration::from_secs(30), control.is_shutdown())
        .await
        .expect("is_shutdown resolves");
    assert_eq!(closed.unwrap_err().kind(), ErrorKind::Consume);
}

/// A bootstrap name that does not resolve fails at once, naming DNS and the
/// name, not after `connect_timeout` as "no broker answered".
#[tokio::test]
async fn an_unresolvable_broker_name_fails_at_once_naming_dns() {
    init_tracing();
    let settings = ConsumerSettings::new("no-such-broker.invalid:9092")
        .group_id("g")
        .connect_timeout(Duration::from_secs(30));
    let (err, elapsed, control) = start_failure(settings).await;
    println!("unresolvable name: failed after {elapsed:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::BrokerUnreachable, "{err}");
    assert!(err.to_string().contains("DNS"), "{err}");
    assert!(err.to_string().contains("no-such-broker.invalid"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(
        control.is_shutdown().await.unwrap_err().kind(),
        ErrorKind::BrokerUnreachable
    );
}

/// SASL asked of a broker that does not speak it: an authentication failure,
/// known at once, reported at once and named.
#[tokio::test]
async fn a_failed_sasl_handshake_fails_at_once_naming_authentication() {
    init_tracing();
    let broker = reactive_kafka::testkit::EmbeddedKafka::start().unwrap();
    let settings = ConsumerSettings::new(broker.bootstrap_servers())
        .group_id("g")
        .property("security.protocol", "SASL_PLAINTEXT")
        .property("sasl.mechanisms", "PLAIN")
        .property("sasl.username", "alice")
        .property("sasl.password", "very-secret-password")
        .connect_timeout(Duration::from_secs(30));
    let (err, elapsed, _control) = start_failure(settings).await;
    println!("failed SASL: after {elapsed:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(!format!("{err:?}").contains("very-secret-password"));
}

/// A pattern librdkafka could not compile fails at construction.
#[tokio::test]
async fn an_invalid_pattern_fails_at_construction_naming_it() {
    let err = consumer::plain_source(
        ConsumerSettings::new("127.0.0.1:1").group_id("g"),
        Subscription::pattern("^orders-("),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("^orders-("), "{err}");
}

/// A topic subscribed to by name that does not exist ends the stream with a
/// named error once `missing_topic_timeout` passed, instead of leaving it
/// pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_the_source_naming_it() {
    let (broker, topic) = broker_with_topic("present", 1).await;
    let missing = unique("missing-topic");
    let settings = broker
        .consumer_settings(&unique("g-missing"))
        .missing_topic_timeout(Some(Duration::from_secs(3)));
    let started = Instant::now();
    let (mut source, control) = consumer::plain_source(
        settings,
        Subscription::topics([topic.as_str(), missing.as_str()]),
    )
    .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("the source must not stay pending");
    let err = item.expect("an error item").unwrap_err();
    println!("missing topic: failed after {:?}: {err}", started.elapsed());
    assert_eq!(err.kind(), ErrorKind::UnknownTopic, "{err}");
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(!err.to_string().contains(&format!("\"{topic}\"")), "{err}");
    assert_eq!(
        control.is_shutdown().await.unwrap_err().kind(),
        ErrorKind::UnknownTopic
    );
}

/// A producer whose brokers can never be reached (no bootstrap name
/// resolves; the broker refuses SASL) fails at once naming why, not after
/// `message.timeout.ms` (300 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_can_never_connect_fails_at_once_naming_why() {
    use futures::SinkExt;
    init_tracing();
    let embedded = reactive_kafka::testkit::EmbeddedKafka::start().unwrap();
    let cases = [
        (
            ProducerSettings::new("no-such-broker.invalid:9092"),
            ErrorKind::BrokerUnreachable,
        ),
        (
            ProducerSettings::new(embedded.bootstrap_servers())
                .property("security.protocol", "SASL_PLAINTEXT")
                .property("sasl.mechanisms", "PLAIN")
                .property("sasl.username", "alice")
                .property("sasl.password", "wrong"),
            ErrorKind::Authentication,
        ),
    ];
    for (settings, kind) in cases {
        // A sink: its close fails.
        let started = Instant::now();
        let mut sink = producer::plain_sink(settings.clone()).unwrap();
        let _ = sink
            .feed(reactive_kafka::ProducerRecord::new("t").payload("x"))
            .await;
        let err = tokio::time::timeout(Duration::from_secs(20), sink.close())
            .await
            .expect("the sink must not wait for message.timeout.ms")
            .unwrap_err();
        println!(
            "producer sink ({kind:?}): failed after {:?}: {err}",
            started.elapsed()
        );
        assert_eq!(err.kind(), kind, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // A flow: the envelope's result is the failure.
        let started = Instant::now();
        let envelopes = futures::stream::iter([producer::Envelope::message(
            reactive_kafka::ProducerRecord::new("t").payload("x"),
            7,
        )]);
        let mut flow = producer::flow(settings, envelopes).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(20), flow.next())
            .await
            .expect("the flow must not wait for message.timeout.ms")
            .expect("one result");
        let failure = result.expect_err("not delivered");
        println!(
            "producer flow ({kind:?}): failed after {:?}: {}",
            started.elapsed(),
            failure.error
        );
        assert_eq!(failure.error.kind(), kind);
        assert_eq!(failure.pass_through, 7);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

/// Security settings are checked at construction: a missing CA file is
/// named, SASL without a protocol that carries it is refused, and TLS on a
/// build without OpenSSL says which feature to enable.
#[tokio::test]
async fn security_settings_are_checked_at_construction() {
    use reactive_kafka::Security;
    let err = consumer::plain_source(
        ConsumerSettings::new("127.0.0.1:1")
            .group_id("g")
            .security(Security::tls().ca("/no/such/ca.pem")),
        Subscription::topics(["t"]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("ssl.ca.location") && err.to_string().contains("/no/such/ca.pem"),
        "{err}"
    );

    let err = producer::plain_sink(
        ProducerSettings::new("127.0.0.1:1").property("sasl.mechanisms", "PLAIN"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("security.protocol"), "{err}");

    let tls = producer::plain_sink(ProducerSettings::new("127.0.0.1:1").security(Security::tls()));
    if cfg!(feature = "tls") {
        assert!(tls.is_ok(), "{tls:?}");
    } else {
        let err = tls.unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }
}

/// An ACL refusal in the embedded broker's metadata (as Apache Kafka sends
/// it; `tests/security.rs` shows the real one): the stream ends at once with
/// the topic authorization kind, naming the topic, instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_topic_ends_the_stream_with_the_topic_authorization_kind() {
    let (broker, topic) = broker_with_topic("refused", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "injecting a topic error") else {
        return;
    };
    embedded.fail_topic(
        &topic,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    );
    let settings = broker.consumer_settings(&unique("g-refused"));
    let started = Instant::now();
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.clone()])).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("the refusal arrives")
        .expect("an item")
        .expect_err("an error, not a record");
    println!("refused topic: {:?}: {err}", started.elapsed());
    assert_eq!(err.kind(), ErrorKind::TopicAuthorization, "{err}");
    assert!(err.is_fatal());
    assert_eq!(
        err.coordinates().map(|c| c.topic.as_str()),
        Some(topic.as_str())
    );
    assert!(source.next().await.is_none());
    assert!(control.is_shutdown().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A broker outage is transient: librdkafka retries, the crate counts the
/// errors it reports (`retried_errors`) and logs them rate-limited, and the
/// stream goes on to read every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_counted_as_retried_and_the_stream_goes_on() {
    let (broker, topic) = broker_with_topic("outage", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "a broker outage") else {
        return;
    };
    produce_n(&broker, &topic, 10, 1).await;
    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-outage")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    let first = take_n(&mut source, 10, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 10);
    embedded.outage(Duration::from_secs(3)).await;
    produce_n(&broker, &topic, 10, 1).await;
    let rest = take_n(&mut source, 10, Duration::from_secs(30)).await;
    assert_eq!(rest.len(), 10, "the stream goes on after the outage");
    let retried = control.metrics().retried_errors;
    println!("errors librdkafka retried during the outage: {retried}");
    assert!(retried > 0, "the outage's errors are counted");
    control.shutdown().await.unwrap();
}

/// A fetch answered with a corrupt-record error (injected into the embedded
/// broker; a real broker sends it for a damaged log): no retry fixes it, so
/// the stream ends at once naming the topic, partition and offset, instead
/// of librdkafka fetching the same offset again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_ends_the_stream_with_its_coordinates() {
    let (broker, topic) = broker_with_topic("corrupt", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "injecting a fetch error") else {
        return;
    };
    produce_n(&broker, &topic, 10, 1).await;
    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-corrupt")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    assert_eq!(
        take_n(&mut source, 10, Duration::from_secs(30)).await.len(),
        10
    );
    // The next fetches (API key 1) fail; the next record's offset is 10.
    embedded.fail_requests(
        1,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_MSG,
        100,
    );
    produce_n(&broker, &topic, 10, 1).await;
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("the error arrives, the stream does not stall")
        .expect("an item")
        .expect_err("an error, not a record");
    println!("corrupt record: {:?}: {err}", started.elapsed());
    assert_eq!(err.kind(), ErrorKind::Consume, "{err}");
    assert!(err.is_fatal() || !err.is_retriable(), "{err}");
    let c = err.coordinates().expect("coordinates");
    assert_eq!(
        (c.topic.as_str(), c.partition, c.offset),
        (topic.as_str(), Some(0), Some(10))
    );
    assert!(source.next().await.is_none());
    assert!(control.is_shutdown().await.is_err());
}
