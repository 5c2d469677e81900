//! Which settings hold secrets, and how they are kept out of `Debug`, error
//! messages and logs.
//!
//! The rule: a key holds a secret when its last dot-separated part contains
//! `password`, `passphrase`, `secret` or `token` (`sasl.password`,
//! `ssl.key.password`, `ssl.keystore.password`,
//! `sasl.oauthbearer.client.secret`), when it names private key material
//! (`ssl.key.pem`, `ssl_key`, or any key containing `private.key`), or when
//! it is a configuration string that may embed them
//! (`sasl.oauthbearer.config`, `sasl.jaas.config`). Its value is shown as
//! `<redacted>`; so is any occurrence of it inside a message.

use std::collections::BTreeMap;
use std::fmt;

/// What a secret value is shown as.
pub(crate) const REDACTED: &str = "<redacted>";

/// True when `key` holds a secret (see the module documentation).
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let last = key.rsplit('.').next().unwrap_or(&key);
    ["password", "passphrase", "secret", "token"]
        .iter()
        .any(|w| last.contains(w))
        || key.contains("private.key")
        || matches!(
            key.as_str(),
            "ssl.key.pem" | "ssl_key" | "sasl.oauthbearer.config" | "sasl.jaas.config"
        )
}

/// `text` with every secret value of `properties` replaced by `<redacted>`.
pub(crate) fn redact(text: &str, properties: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in properties {
        if is_secret(k) && !v.is_empty() {
            out = out.replace(v.as_str(), REDACTED);
        }
    }
    out
}

/// The secret values of a client's settings, to redact from what
/// librdkafka logs and reports about that client.
#[derive(Debug, Default, Clone)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    pub(crate) fn of(properties: &BTreeMap<String, String>) -> Self {
        Secrets(
            properties
                .iter()
                .filter(|(k, v)| is_secret(k) && !v.is_empty())
                .map(|(_, v)| v.clone())
                .collect(),
        )
    }

    /// `text`, with every secret value replaced (borrowed when none occurs).
    pub(crate) fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if self.0.iter().any(|v| text.contains(v.as_str())) {
            let mut out = text.to_owned();
            for v in &self.0 {
                out = out.replace(v.as_str(), REDACTED);
            }
            std::borrow::Cow::Owned(out)
        } else {
            std::borrow::Cow::Borrowed(text)
        }
    }
}

/// Properties for `Debug`, with secret values redacted.
pub(crate) struct Redacted<'a>(pub(crate) &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &str = if is_secret(k) { REDACTED } else { v };
                (k, shown)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_covers_librdkafkas_secret_keys_and_nothing_else() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "ssl_key",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "sasl.username",
            "ssl.key.location",
            "ssl.certificate.pem",
            "ssl.ca.location",
            "sasl.oauthbearer.token.endpoint.url",
            "sasl.mechanisms",
            "bootstrap.servers",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }

    #[test]
    fn secret_values_are_redacted_in_messages_and_debug() {
        let mut p = BTreeMap::new();
        p.insert("sasl.password".to_owned(), "hunter2".to_owned());
        p.insert("sasl.username".to_owned(), "alice".to_owned());
        let text = redact("rejected `hunter2` for alice", &p);
        assert_eq!(text, "rejected `<redacted>` for alice");
        let debug = format!("{:?}", Redacted(&p));
        assert!(
            !debug.contains("hunter2") && debug.contains("alice"),
            "{debug}"
        );
    }
}
