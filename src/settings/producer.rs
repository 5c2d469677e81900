use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::error::Error;

/// Settings of a producer sink.
///
/// # librdkafka defaults this crate changes
///
/// | key | librdkafka | here | why |
/// |---|---|---|---|
/// | `enable.idempotence` | false | true | retries after a lost acknowledgement never write a record twice or out of order within a partition |
/// | `reconnect.backoff.max.ms` | 10000 | 1000 | the Java client's default: after a broker restart the producer reconnects within a second of the broker answering, not up to ten |
///
/// Every other key keeps librdkafka's default and can be set with
/// [`property`](ProducerSettings::property).
#[derive(Clone)]
pub struct ProducerSettings {
    pub(crate) bootstrap_servers: String,
    pub(crate) properties: BTreeMap<String, String>,
    pub(crate) flush_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) token_provider: Option<super::TokenProvider>,
}

/// Secret values (see [`property`](ProducerSettings::property)) are shown as `<redacted>`.
impl std::fmt::Debug for ProducerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &super::Redacted(&self.properties))
            .field("flush_timeout", &self.flush_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("token_provider", &self.token_provider)
            .finish()
    }
}

impl ProducerSettings {
    /// Settings for the brokers at `bootstrap_servers` (`host:port[,host:port]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ProducerSettings {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
            flush_timeout: Duration::from_secs(30),
            max_in_flight: 30_000,
            token_provider: None,
        }
    }

    /// Connects with TLS and/or SASL: the properties of `security` (see
    /// [`Security`](crate::Security)), over any set before.
    pub fn security(mut self, security: super::Security) -> Self {
        let (properties, token_provider) = security.into_parts();
        self.properties.extend(properties);
        if token_provider.is_some() {
            self.token_provider = token_provider;
        }
        self
    }

    /// Sets `client.id`, shown in broker logs and metrics.
    pub fn client_id(self, client_id: impl Into<String>) -> Self {
        self.property("client.id", client_id)
    }

    /// Sets several librdkafka properties at once, as
    /// [`property`](Self::property) does each (for example from a
    /// configuration file's section).
    pub fn properties<K, V>(mut self, properties: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in properties {
            self = self.property(k, v);
        }
        self
    }

    /// Sets any librdkafka producer property. Overrides this crate's defaults.
    ///
    /// Secrets stay secret: the value of a key that holds one (any key
    /// ending in `password` or naming a `secret`, `token` or private key,
    /// such as `sasl.password`, `ssl.key.password`, `ssl.key.pem` or
    /// `sasl.oauthbearer.client.secret`) is shown as `<redacted>` in `Debug`,
    /// and never appears in this crate's error messages or logs.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// How long closing a sink waits for queued records to be acknowledged,
    /// and how long a sink dropped without closing keeps delivering in the
    /// background. Default 30 s.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Most records a [`plain_sink`](crate::producer::plain_sink),
    /// [`flow`](crate::producer::flow) or committable sink keeps
    /// unacknowledged at once. Default 30,000.
    ///
    /// A flow sends at most this many records per acknowledgement round
    /// trip (`linger.ms` plus the broker's write). On Apache Kafka on the
    /// same machine with `linger.ms` 5, 10,000 (Alpakka's `parallelism`)
    /// held a flow of 100 B records to 0.8x a raw `BaseProducer` loop;
    /// 30,000 reached its rate, and 100,000 was no faster with 2.5 times the
    /// memory. Raise it for a broker farther away; each record in flight
    /// holds its payload and its pass-through value.
    ///
    /// The plain sink keeps to it too, instead of filling librdkafka's queue
    /// (`queue.buffering.max.messages`, 100,000 records): with the broker
    /// and the sink pinned to a core each, 100 B records, the sink read at
    /// 0.60M to 0.98M records/s against 0.64M to 0.71M, with 0.78 to 1.15 µs
    /// of CPU per record against 1.15 to 1.34 and half the memory (23 to
    /// 25 MB RSS against 45 to 47). A smaller window helped the sink only
    /// where it shared one core with librdkafka's threads (100 B records:
    /// 1.12 to 1.15x the raw loop with 15,000 against 0.83 to 0.93x with
    /// 30,000), not on two cores (1.05 and 1.18 against 1.35 and 1.09);
    /// 15,000 held a flow to 0.81 to 0.85x of the raw loop on two cores, so
    /// the default stays 30,000.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub(crate) fn to_client_config(&self) -> Result<ClientConfig, Error> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config("invalid setting `bootstrap.servers`: empty"));
        }
        super::positive_duration("flush_timeout", self.flush_timeout)?;
        if self.max_in_flight == 0 {
            return Err(Error::config(
                "invalid setting `max_in_flight`: must be at least 1",
            ));
        }
        let defaults = [
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("enable.idempotence", "true".to_owned()),
            (
                "reconnect.backoff.max.ms",
                super::consumer::RECONNECT_BACKOFF_MAX_MS.to_owned(),
            ),
        ];
        super::client_config(&defaults, &self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotence_is_on_by_default() {
        let cfg = ProducerSettings::new("h:1").to_client_config().unwrap();
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("reconnect.backoff.max.ms"), Some("1000"));
    }

    #[test]
    fn client_id_and_bulk_properties_are_set() {
        let from_file = [("linger.ms", "7"), ("compression.type", "zstd")];
        let cfg = ProducerSettings::new("h:1")
            .client_id("billing")
            .properties(from_file)
            .to_client_config()
            .unwrap();
        assert_eq!(cfg.get("client.id"), Some("billing"));
        assert_eq!(cfg.get("linger.ms"), Some("7"));
        assert_eq!(cfg.get("compression.type"), Some("zstd"));
        let err = ProducerSettings::new("h:1")
            .properties(vec![("lingerr.ms".to_owned(), "5".to_owned())])
            .to_client_config()
            .unwrap_err();
        assert!(err.to_string().contains("lingerr.ms"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ProducerSettings::new("h:1")
            .property("lingerr.ms", "5")
            .to_client_config()
            .unwrap_err();
        assert!(err.to_string().contains("lingerr.ms"), "{err}");
    }
}
