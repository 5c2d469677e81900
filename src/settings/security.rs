//! How a client connects to a secured cluster: TLS, SASL, or both, as a
//! value applied to consumer or producer settings, and the checks that
//! name a missing file or an inconsistent combination at construction.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    token_provider: Option<TokenProvider>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("Security");
        d.field(&super::Redacted(&self.properties));
        if self.token_provider.is_some() {
            d.field(&"token provider");
        }
        d.finish()
    }
}

impl Security {
    fn with(pairs: &[(&str, &str)]) -> Self {
        Security {
            properties: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            token_provider: None,
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

    /// SASL/OAUTHBEARER over TLS with tokens from `provider`: it is called
    /// when the client starts and again before each token expires (at 80%
    /// of its lifetime), on the client's own thread, so it may block (an
    /// HTTP call to your identity provider) at the cost of delaying that
    /// client's work meanwhile. An error it returns fails the connection
    /// with [`ErrorKind::Authentication`](crate::ErrorKind::Authentication)
    /// naming the error; the token never appears in `Debug`, errors or logs.
    ///
    /// This is librdkafka's token refresh callback, which needs no extra
    /// system library. (librdkafka's built-in OIDC client,
    /// `sasl.oauthbearer.method=oidc`, needs libcurl, which this crate does
    /// not build.)
    pub fn sasl_oauthbearer<F, E>(provider: F) -> Self
    where
        F: Fn() -> Result<BearerToken, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let mut security = Self::with(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "OAUTHBEARER"),
        ]);
        security.token_provider = Some(TokenProvider(Arc::new(move || {
            provider().map_err(|e| e.to_string())
        })));
        security
    }

    /// SASL/OAUTHBEARER over TLS with unsigned tokens naming `principal`,
    /// made by librdkafka (`enable.sasl.oauthbearer.unsecure.jwt`). Only a
    /// broker that accepts unsecured tokens (Apache Kafka's default
    /// OAUTHBEARER validator, meant for development) takes them: for tests
    /// and development, never production.
    pub fn sasl_oauthbearer_unsecured(principal: impl AsRef<str>) -> Self {
        Self::with(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "OAUTHBEARER"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
        ])
        .set(
            "sasl.oauthbearer.config",
            format!("principal={}", principal.as_ref()),
        )
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

    pub(crate) fn into_parts(self) -> (BTreeMap<String, String>, Option<TokenProvider>) {
        (self.properties, self.token_provider)
    }
}

/// An OAuth 2 bearer token for SASL/OAUTHBEARER, as your provider returns it
/// (see [`Security::sasl_oauthbearer`]). `Debug` does not show the token.
#[derive(Clone)]
pub struct BearerToken {
    token: String,
    principal: String,
    expires_at: SystemTime,
}

impl BearerToken {
    /// A token (the compact JWT or opaque string the broker validates) for
    /// `principal`, valid until `expires_at`.
    pub fn new(
        token: impl Into<String>,
        principal: impl Into<String>,
        expires_at: SystemTime,
    ) -> Self {
        BearerToken {
            token: token.into(),
            principal: principal.into(),
            expires_at,
        }
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("token", &"<redacted>")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

type TokenFn = dyn Fn() -> Result<BearerToken, String> + Send + Sync;

/// The user's token provider, called by the client contexts when librdkafka
/// asks for a token.
#[derive(Clone)]
pub(crate) struct TokenProvider(Arc<TokenFn>);

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// The token librdkafka asked for: from the provider, or an error that says
/// none is set (librdkafka then fails authentication with it).
pub(crate) fn oauth_token(
    provider: Option<&TokenProvider>,
) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
    let provider = provider.ok_or(
        "SASL/OAUTHBEARER needs tokens: use Security::sasl_oauthbearer with a token provider \
         (or Security::sasl_oauthbearer_unsecured for a development broker)",
    )?;
    let token =
        (provider.0)().map_err(|e| format!("the OAUTHBEARER token provider failed: {e}"))?;
    let lifetime_ms = token
        .expires_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Ok(rdkafka::client::OAuthToken {
        token: token.token,
        principal_name: token.principal,
        lifetime_ms: i64::try_from(lifetime_ms).unwrap_or(i64::MAX),
    })
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
    fn a_bearer_token_never_shows_in_debug() {
        let token = BearerToken::new("eyJhbGciOi.secret-part.sig", "svc", SystemTime::now());
        let shown = format!("{token:?}");
        assert!(!shown.contains("secret-part"), "{shown}");
        assert!(shown.contains("svc"), "{shown}");
        let security = Security::sasl_oauthbearer(move || Ok::<_, String>(token.clone()));
        let shown = format!("{security:?}");
        assert!(!shown.contains("secret-part"), "{shown}");
        assert!(shown.contains("token provider"), "{shown}");
    }

    #[test]
    fn a_token_provider_is_asked_and_its_failure_named() {
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let ok = Security::sasl_oauthbearer(move || {
            Ok::<_, String>(BearerToken::new("t", "svc", expires))
        });
        let (properties, provider) = ok.into_parts();
        assert_eq!(properties["sasl.mechanisms"], "OAUTHBEARER");
        let token = oauth_token(provider.as_ref()).unwrap();
        assert_eq!(token.principal_name, "svc");
        assert_eq!(token.lifetime_ms, 2_000_000_000_000);

        let failing = Security::sasl_oauthbearer(|| Err::<BearerToken, _>("503 from the IdP"));
        let (_, provider) = failing.into_parts();
        let err = oauth_token(provider.as_ref()).err().unwrap().to_string();
        assert!(err.contains("503 from the IdP"), "{err}");
        let err = oauth_token(None).err().unwrap().to_string();
        assert!(err.contains("Security::sasl_oauthbearer"), "{err}");
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
        assert!(check(&Security::sasl_plain("u", "p").into_parts().0).is_ok());
        assert!(check(&Security::sasl_plain("u", "p").without_tls().into_parts().0).is_ok());
        assert!(check(&Security::tls().into_parts().0).is_ok());
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
