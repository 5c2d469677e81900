//! TLS and SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) against Apache
//! Kafka's listeners (`scripts/kafka-local` opens them with a test CA and
//! test users). Needs the `tls` feature and the addresses printed by
//! `scripts/kafka-local env`; skipped with a printed reason otherwise.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reactive_kafka::{
    committer, consumer, CommitterSettings, ConsumerSettings, ErrorKind, ProducerSettings,
    Security, Subscription,
};
use support::*;

/// The TLS listener and the CA that signed it, or `None` after printing why
/// the test cannot run here.
fn tls_broker(what: &str) -> Option<(String, String, String)> {
    if !cfg!(feature = "tls") {
        println!("skipped: {what} needs the `tls` feature (cargo test --features tls)");
        return None;
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("KAFKA_TLS_BOOTSTRAP_SERVERS"),
        var("KAFKA_TLS_CA"),
        var("KAFKA_TLS_OTHER_CA"),
    ) {
        (Some(servers), Some(ca), Some(other)) => Some((servers, ca, other)),
        _ => {
            println!("skipped: {what} needs a TLS listener: KAFKA_TLS_BOOTSTRAP_SERVERS, KAFKA_TLS_CA and KAFKA_TLS_OTHER_CA (see `scripts/kafka-local env`)");
            None
        }
    }
}

/// The test users of `scripts/kafka-local`'s SASL_SSL listener.
const PLAIN_USER: (&str, &str) = ("alice", "alice-secret");
const SCRAM_USER: (&str, &str) = ("carol", "carol-secret");
/// The OAUTHBEARER principal `scripts/kafka-local` makes a super user.
const OAUTH_PRINCIPAL: &str = "oscar";

/// An unsigned JWT (`alg: none`) for `principal`: what Apache Kafka's
/// default (development) OAUTHBEARER validator accepts. A real provider
/// fetches a signed one from the identity provider.
fn unsigned_token(principal: &str, valid_for: Duration) -> reactive_kafka::BearerToken {
    let now = std::time::SystemTime::now();
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires = now + valid_for;
    let header = base64url(br#"{"alg":"none"}"#);
    let claims = format!(
        r#"{{"sub":"{principal}","iat":{},"exp":{}}}"#,
        secs(now),
        secs(expires)
    );
    let token = format!("{header}.{}.", base64url(claims.as_bytes()));
    reactive_kafka::BearerToken::new(token, principal, expires)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// One way in, built with the crate's `Security` helpers.
fn security(protocol: &str, ca: &str, sasl: Option<(&str, &str, &str)>) -> Security {
    let security = match sasl {
        None => Security::tls(),
        Some(("PLAIN", user, password)) => Security::sasl_plain(user, password),
        Some(("SCRAM-SHA-256", user, password)) => Security::sasl_scram_sha256(user, password),
        Some((_, user, password)) => Security::sasl_scram_sha512(user, password),
    };
    assert!(protocol.ends_with("ssl"));
    security.ca(ca)
}

fn sasl_servers() -> String {
    std::env::var("KAFKA_SASL_SSL_BOOTSTRAP_SERVERS").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_and_commit_over_tls_and_sasl_ssl() {
    init_tracing();
    let Some((tls_servers, ca, _)) = tls_broker("producing and consuming over TLS and SASL_SSL")
    else {
        return;
    };
    let sasl = sasl_servers();
    assert!(
        !sasl.is_empty(),
        "KAFKA_SASL_SSL_BOOTSTRAP_SERVERS is set with the TLS listener"
    );
    let ways = [
        ("TLS", tls_servers.clone(), security("ssl", &ca, None)),
        (
            "SASL_SSL/PLAIN",
            sasl.clone(),
            security("sasl_ssl", &ca, Some(("PLAIN", PLAIN_USER.0, PLAIN_USER.1))),
        ),
        (
            "SASL_SSL/SCRAM-SHA-256",
            sasl.clone(),
            security(
                "sasl_ssl",
                &ca,
                Some(("SCRAM-SHA-256", SCRAM_USER.0, SCRAM_USER.1)),
            ),
        ),
        (
            "SASL_SSL/SCRAM-SHA-512",
            sasl.clone(),
            security(
                "sasl_ssl",
                &ca,
                Some(("SCRAM-SHA-512", SCRAM_USER.0, SCRAM_USER.1)),
            ),
        ),
        (
            "SASL_SSL/OAUTHBEARER (librdkafka's unsecured tokens)",
            sasl.clone(),
            Security::sasl_oauthbearer_unsecured(OAUTH_PRINCIPAL).ca(&ca),
        ),
        (
            "SASL_SSL/OAUTHBEARER (tokens from a provider)",
            sasl.clone(),
            Security::sasl_oauthbearer(|| {
                Ok::<_, String>(unsigned_token(OAUTH_PRINCIPAL, Duration::from_secs(3600)))
            })
            .ca(&ca),
        ),
    ];
    for (name, servers, security) in ways {
        round_trip(name, &servers, &security).await;
    }
}

/// Produces, consumes with a committable source and commits through the
/// committer, all over `props`, and checks the committed offsets.
async fn round_trip(name: &str, servers: &str, props: &Security) {
    let started = Instant::now();
    let (broker, topic) = broker_with_topic("secure", 2).await;
    let producer = ProducerSettings::new(servers).security(props.clone());
    let n = 1_000;
    let mut sink = reactive_kafka::producer::plain_sink(producer).unwrap();
    for i in 0..n {
        futures::SinkExt::feed(
            &mut sink,
            reactive_kafka::ProducerRecord::new(&topic)
                .partition(i % 2)
                .key(format!("key-{i}")),
        )
        .await
        .unwrap();
    }
    futures::SinkExt::close(&mut sink).await.unwrap();

    let group = unique("g-secure");
    let settings = ConsumerSettings::new(servers)
        .group_id(&group)
        .auto_offset_reset(reactive_kafka::AutoOffsetReset::Earliest)
        .security(props.clone());
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    let offsets = source
        .take(n as usize)
        .map(|m| m.map(|m| m.offset))
        .forward(committer::sink(CommitterSettings::default()).unwrap());
    tokio::time::timeout(Duration::from_secs(60), offsets)
        .await
        .expect("every record within 60 s")
        .unwrap();
    control.shutdown().await.unwrap();
    let committed = committed_offsets(&broker, &group, &topic, 2).await;
    assert_eq!(committed[&0], Some(500), "{name}");
    assert_eq!(committed[&1], Some(500), "{name}");
    println!(
        "{name}: {n} records produced, consumed and committed in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_with_the_authentication_kind() {
    init_tracing();
    let Some((_, ca, _)) = tls_broker("a SASL authentication that fails") else {
        return;
    };
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let user = if mechanism == "PLAIN" {
            PLAIN_USER.0
        } else {
            SCRAM_USER.0
        };
        let settings = ConsumerSettings::new(sasl_servers())
            .group_id("g-wrong-password")
            .security(security(
                "sasl_ssl",
                &ca,
                Some((mechanism, user, "not-the-password")),
            ));
        let (err, elapsed, _control) = start_failure(settings).await;
        println!(
            "wrong {mechanism} password: failed after {:?}: {err}",
            elapsed
        );
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert!(!err.to_string().contains("not-the-password"), "{err}");
        assert!(elapsed < Duration::from_secs(5), "{:?}", elapsed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_broker_fails_at_once_with_the_tls_kind() {
    init_tracing();
    let Some((servers, _, other_ca)) = tls_broker("a TLS handshake that fails") else {
        return;
    };
    let settings = ConsumerSettings::new(servers)
        .group_id("g-untrusted")
        .security(Security::tls().ca(&other_ca));
    let (err, elapsed, _control) = start_failure(settings).await;
    println!("untrusted broker: failed after {:?}: {err}", elapsed);
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(
        err.to_string().contains("certificate verify failed"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(5), "{:?}", elapsed);
}

/// `scripts/kafka-local`'s restricted user: ACLs allow it everything on
/// topics and groups named `dave-…`, and nothing else.
const RESTRICTED_USER: (&str, &str) = ("dave", "dave-secret");

/// A consumer of `topic` in `group` as the restricted user; the first item
/// its stream gives, and how long that took.
async fn restricted_consume(
    ca: &str,
    topic: &str,
    group: &str,
) -> (reactive_kafka::Error, Duration) {
    let settings = ConsumerSettings::new(sasl_servers())
        .group_id(group)
        .auto_offset_reset(reactive_kafka::AutoOffsetReset::Earliest)
        .security(Security::sasl_plain(RESTRICTED_USER.0, RESTRICTED_USER.1).ca(ca));
    let started = Instant::now();
    let (mut source, control) =
        consumer::committable_source(settings, Subscription::topics([topic])).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), source.next())
        .await
        .expect("an unauthorized consumer must not hang");
    let err = match first {
        Some(Err(e)) => e,
        Some(Ok(m)) => panic!("read a record it may not read: {m:?}"),
        None => panic!("the stream ended silently"),
    };
    let elapsed = started.elapsed();
    let ended = control.shutdown().await;
    assert!(ended.is_err(), "the control reports the failure too");
    (err, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_read_on_the_topic_gets_the_topic_authorization_kind() {
    init_tracing();
    let Some((_, ca, _)) = tls_broker("topic ACLs") else {
        return;
    };
    // Created by a super user; the restricted user may not read it.
    let (broker, topic) = broker_with_topic("closed", 1).await;
    produce_n(&broker, &topic, 10, 1).await;
    let (err, elapsed) = restricted_consume(&ca, &topic, &unique("dave-g")).await;
    println!("no READ on the topic: failed after {elapsed:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::TopicAuthorization, "{err}");
    assert!(err.is_fatal(), "{err}");
    assert!(err.to_string().contains(&topic), "names the topic: {err}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_access_to_the_group_gets_the_group_authorization_kind() {
    init_tracing();
    let Some((_, ca, _)) = tls_broker("group ACLs") else {
        return;
    };
    // The restricted user may read this topic, but not use this group.
    let (broker, topic) = broker_with_topic("dave-open", 1).await;
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique("closed-g");
    let (err, elapsed) = restricted_consume(&ca, &topic, &group).await;
    println!("no access to the group: failed after {elapsed:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::GroupAuthorization, "{err}");
    assert!(err.is_fatal(), "{err}");
    assert!(err.to_string().contains(&group), "names the group: {err}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_write_on_the_topic_gets_the_topic_authorization_kind_from_the_sink() {
    init_tracing();
    let Some((_, ca, _)) = tls_broker("topic ACLs for producers") else {
        return;
    };
    let (_broker, topic) = broker_with_topic("closed", 1).await;
    let producer = ProducerSettings::new(sasl_servers())
        .security(Security::sasl_plain(RESTRICTED_USER.0, RESTRICTED_USER.1).ca(&ca));
    let started = Instant::now();
    let mut sink = reactive_kafka::producer::plain_sink(producer).unwrap();
    let sent = async {
        futures::SinkExt::send(
            &mut sink,
            reactive_kafka::ProducerRecord::new(&topic).key("k"),
        )
        .await?;
        futures::SinkExt::close(&mut sink).await
    };
    let err = tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .expect("an unauthorized producer must not hang")
        .expect_err("the broker refuses the record");
    let elapsed = started.elapsed();
    println!("no WRITE on the topic: failed after {elapsed:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::TopicAuthorization, "{err}");
    assert!(err.to_string().contains(&topic), "names the topic: {err}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_provider_fails_at_once_with_the_authentication_kind() {
    init_tracing();
    let Some((_, ca, _)) = tls_broker("an OAUTHBEARER token provider that fails") else {
        return;
    };
    let settings = ConsumerSettings::new(sasl_servers())
        .group_id("g-no-token")
        .security(
            Security::sasl_oauthbearer(|| {
                Err::<reactive_kafka::BearerToken, _>("identity provider answered 503")
            })
            .ca(&ca),
        );
    let (err, elapsed, _control) = start_failure(settings).await;
    println!("failing token provider: failed after {elapsed:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(
        err.to_string().contains("identity provider answered 503"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}
