//! Settings for consumers, producers and committers: plain data with
//! documented defaults, consuming setters, a raw `property(key, value)` escape
//! hatch for any librdkafka key, and one validating step.

mod committer;
mod consumer;
mod producer;
mod secret;
mod security;

pub(crate) use committer::DEFAULT_COMMIT_TIMEOUT;
pub use committer::{CommitDelivery, CommitWhen, CommitterSettings};
pub use consumer::{AutoOffsetReset, ConsumerSettings};
pub use producer::ProducerSettings;
pub(crate) use secret::{redact, Redacted, Secrets};
pub(crate) use security::{oauth_token, TokenProvider};
pub use security::{BearerToken, Security};

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::error::Error;

/// Builds a `ClientConfig` from layered properties (defaults first, then the
/// user's) and asks librdkafka to accept every key and value, so that a bad
/// key fails here with its name rather than later.
pub(crate) fn client_config(
    defaults: &[(&str, String)],
    user: &BTreeMap<String, String>,
) -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::new();
    for (k, v) in defaults {
        config.set(*k, v.as_str());
    }
    for (k, v) in user {
        config.set(k.as_str(), v.as_str());
    }
    security::check(user)?;
    config.create_native_config().map_err(|e| match &e {
        KafkaError::ClientConfig(_, desc, key, _) if desc.contains("OpenSSL not available") => {
            Error::config(secret::redact(
                &format!(
                    "invalid setting `{key}`: TLS and SCRAM need OpenSSL: enable reactive-kafka's `tls` feature ({desc})"
                ),
                user,
            ))
        }
        // librdkafka's description is the whole cause: it is the message,
        // not a source that would print it twice. Secret values are never
        // echoed.
        KafkaError::ClientConfig(_, desc, key, value) => {
            let value = if secret::is_secret(key) {
                secret::REDACTED.to_owned()
            } else {
                format!("`{value}`")
            };
            Error::config(secret::redact(
                &format!("invalid setting `{key}` = {value}: {desc}"),
                user,
            ))
        }
        _ => Error::with_source(
            crate::error::ErrorKind::Config,
            "invalid client configuration",
            e.clone(),
        ),
    })?;
    Ok(config)
}

pub(crate) fn positive_duration(name: &str, value: std::time::Duration) -> Result<(), Error> {
    if value.is_zero() {
        return Err(Error::config(format!(
            "invalid setting `{name}`: must be greater than zero"
        )));
    }
    Ok(())
}
