//! How a client connects to a secured cluster: TLS, SASL, or both, as a
//! value applied to consumer or producer settings, and the checks that
//! name a missing file or an inconsistent combination at construction.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::error::Error;

/// TLS and SASL settings for a client, applied with
/// [`ConsumerSettings::security`](crate::ConsumerSettings::security) or
/// [`ProducerSettings::security`](crate::ProducerSettings::security). Each
/// constructor sets `security.protocol` to match; the raw
/// [`property`](crate::ConsumerSettings::property) escape hatch stays for
/// anything else. TLS and SCRAM need the `tls` feature.
///
/// ```
/// use reactive_kafka::{ConsumerSettings, Security};
/// let settings = ConsumerSettings::new("kafka.example.com:9094")
///     .group_id("billing")
///     .security(Security::sasl_scram_sha512("billing", "s3cret").ca("/etc/kafka/ca.pem"));
/// assert_eq!(settings.get("security.protocol").as_deref(), Some("sasl_ssl"));
/// assert!(!format!("{settings:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct Security {
    properties: BTreeMap<String, String>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Security")
            .field(&super::Redacted(&self.properties))
            .finish()
    }
}

impl Security {
    fn with(pairs: &[(&str, &str)]) -> Self {
        Security {
            properties: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.properties.insert(key.to_owned(), value.into());
        self
    }

    /// TLS, trusting the system's CAs unless [`ca`](Self::ca) is given;
    /// the broker's hostname is verified.
    pub fn tls() -> Self {
        Self::with(&[("security.protocol", "ssl")])
    }

    /// SASL/PLAIN over TLS.
    pub fn sasl_plain(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::sasl("PLAIN", username.into(), password.into())
    }

    /// SASL/SCRAM-SHA-256 over TLS.
    pub fn sasl_scram_sha256(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::sasl("SCRAM-SHA-256", username.into(), password.into())
    }

    /// SASL/SCRAM-SHA-512 over TLS.
    pub fn sasl_scram_sha512(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::sasl("SCRAM-SHA-512", username.into(), password.into())
    }

    fn sasl(mechanism: &str, username: String, password: String) -> Self {
        Self::with(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", mechanism),
        ])
        .set("sasl.username", username)
        .set("sasl.password", password)
    }

    /// SASL without TLS (`sasl_plaintext`): credentials cross the network
    /// readable by anyone on the path. For tests and closed networks only.
    pub fn without_tls(self) -> Self {
        let protocol = if self.properties.contains_key("sasl.mechanisms") {
            "sasl_plaintext"
        } else {
            "plaintext"
        };
        self.set("security.protocol", protocol)
    }

    /// Trusts the CA certificates in this PEM file (instead of the system's).
    pub fn ca(self, pem_file: impl AsRef<Path>) -> Self {
        self.set("ssl.ca.location", pem_file.as_ref().display().to_string())
    }

    /// Presents this client certificate and key (PEM files) for mutual TLS.
    pub fn client_certificate(
        self,
        certificate_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Self {
        self.set(
            "ssl.certificate.location",
            certificate_file.as_ref().display().to_string(),
        )
        .set("ssl.key.location", key_file.as_ref().display().to_string())
    }

    /// The password of an encrypted client key.
    pub fn key_password(self, password: impl Into<String>) -> Self {
        self.set("ssl.key.password", password)
    }

    pub(crate) fn into_properties(self) -> BTreeMap<String, String> {
        self.properties
    }
}

/// Files the settings name must exist, and TLS and SASL settings must match
/// `security.protocol`. Run at construction, on the user's properties.
pub(crate) fn check(properties: &BTreeMap<String, String>) -> Result<(), Error> {
    for key in [
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.keystore.location",
        "ssl.crl.location",
    ] {
        if let Some(path) = properties.get(key) {
            // librdkafka also accepts a directory of CA files, and "probe".
            if path != "probe" && !Path::new(path).exists() {
                return Err(Error::config(format!(
                    "invalid setting `{key}` = `{path}`: no such file"
                )));
            }
        }
    }
    let protocol = properties
        .get("security.protocol")
        .map_or("plaintext".to_owned(), |p| p.to_ascii_lowercase());
    let sasl = properties
        .keys()
        .find(|k| k.starts_with("sasl.mechanism") || k.as_str() == "sasl.username");
    if let Some(key) = sasl {
        if !protocol.starts_with("sasl_") {
            return Err(Error::config(format!(
                "`{key}` is set but `security.protocol` is `{protocol}`: SASL needs `sasl_ssl` (or `sasl_plaintext`)"
            )));
        }
    }
    let tls = properties.keys().find(|k| {
        k.starts_with("ssl.")
            && k.as_str() != "ssl.endpoint.identification.algorithm"
            && !k.starts_with("ssl.engine")
    });
    if let Some(key) = tls {
        if !protocol.ends_with("ssl") {
            return Err(Error::config(format!(
                "`{key}` is set but `security.protocol` is `{protocol}`, which does not use TLS: use `ssl` or `sasl_ssl`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_missing_file_is_named_with_its_key() {
        let err = check(&props(&[
            ("security.protocol", "ssl"),
            ("ssl.ca.location", "/no/such/ca.pem"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("ssl.ca.location"), "{err}");
        assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
    }

    #[test]
    fn sasl_or_tls_settings_without_a_protocol_that_carries_them_fail() {
        let err = check(&props(&[("sasl.mechanisms", "PLAIN")])).unwrap_err();
        assert!(err.to_string().contains("sasl_ssl"), "{err}");
        let err = check(&props(&[
            ("security.protocol", "sasl_plaintext"),
            ("ssl.key.password", "x"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("ssl.key.password"), "{err}");
        assert!(check(&Security::sasl_plain("u", "p").into_properties()).is_ok());
        assert!(check(
            &Security::sasl_plain("u", "p")
                .without_tls()
                .into_properties()
        )
        .is_ok());
        assert!(check(&Security::tls().into_properties()).is_ok());
    }

    #[test]
    fn debug_redacts_the_password() {
        let s = Security::sasl_scram_sha256("alice", "hunter2").key_password("k3y");
        let d = format!("{s:?}");
        assert!(
            !d.contains("hunter2") && !d.contains("k3y") && d.contains("alice"),
            "{d}"
        );
    }
}
