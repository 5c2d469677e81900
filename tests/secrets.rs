//! Secret settings never appear in `Debug`, error messages or logs.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reactive_kafka::{consumer, producer, ConsumerSettings, ProducerSettings, Subscription};
use support::start_failure;

/// The keys that hold secrets, each with a value found nowhere else.
const SECRET_KEYS: [&str; 7] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
    "ssl.key.pem",
    "sasl.oauthbearer.config",
    "ssl_key",
];

fn value(key: &str) -> String {
    format!("Xy7-{}-qq", key.replace(['.', '_'], "-"))
}

fn assert_no_secret(what: &str, text: &str) {
    for key in SECRET_KEYS {
        assert!(
            !text.contains(&value(key)),
            "{what} shows the value of `{key}`: {text}"
        );
    }
}

#[test]
fn debug_of_settings_redacts_every_secret() {
    let mut c = ConsumerSettings::new("h:1")
        .group_id("g")
        .property("sasl.username", "alice");
    let mut p = ProducerSettings::new("h:1");
    for key in SECRET_KEYS {
        c = c.property(key, value(key));
        p = p.property(key, value(key));
    }
    let (c, p) = (format!("{c:?}"), format!("{p:?}"));
    assert_no_secret("ConsumerSettings Debug", &c);
    assert_no_secret("ProducerSettings Debug", &p);
    assert!(c.contains("alice") && c.contains("<redacted>"), "{c}");
    assert!(p.contains("<redacted>"), "{p}");
}

/// Each secret key alone, with a value librdkafka may reject: whatever the
/// error says, it does not say the value.
#[tokio::test]
async fn errors_never_echo_a_secret_value() {
    let mut errors = 0;
    for key in SECRET_KEYS {
        let settings = ConsumerSettings::new("127.0.0.1:1")
            .group_id("g")
            .property(key, value(key));
        if let Err(e) = consumer::plain_source(settings, Subscription::topics(["t"])) {
            errors += 1;
            assert_no_secret("a consumer error", &format!("{e} | {e:?} | {}", e.report()));
        }
        if let Err(e) =
            producer::plain_sink(ProducerSettings::new("127.0.0.1:1").property(key, value(key)))
        {
            errors += 1;
            assert_no_secret("a producer error", &format!("{e} | {e:?} | {}", e.report()));
        }
    }
    println!("{errors} configuration errors checked");
    assert!(
        errors > 0,
        "no secret value was rejected: the test checks nothing"
    );
}

/// A buffer the log lines go to.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A consumer that fails to authenticate, with librdkafka's security and
/// broker debug logs on: nothing logged shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_a_secret_value() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .try_init();
    let broker = reactive_kafka::testkit::EmbeddedKafka::start().unwrap();
    let settings = ConsumerSettings::new(broker.bootstrap_servers())
        .group_id("g")
        .property("security.protocol", "SASL_PLAINTEXT")
        .property("sasl.mechanisms", "PLAIN")
        .property("sasl.username", "alice")
        .property("sasl.password", value("sasl.password"))
        .property("debug", "security,broker,conf")
        .connect_timeout(Duration::from_secs(10));
    let (err, _, control) = start_failure(settings).await;
    let _ = control.shutdown().await;
    assert_no_secret("the error", &format!("{err} | {err:?}"));
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    println!("{} bytes of logs checked", logs.len());
    assert!(
        logs.contains("SASL"),
        "librdkafka's security logs were captured"
    );
    assert_no_secret("the logs", &logs);
}
