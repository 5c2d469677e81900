//! Why no broker answers: librdkafka's connection failures, as it logs them
//! (facility `FAIL`) and returns them from polls, sorted into causes that
//! will not go away by waiting (failed authentication, a failed TLS
//! handshake, bootstrap names that do not resolve), so that a consumer
//! fails at once with the real cause instead of after `connect_timeout`
//! with "no broker answered", and a producer that never reached a broker
//! fails its records at once instead of after `message.timeout.ms`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rdkafka::error::RDKafkaErrorCode;

use crate::error::{Error, ErrorKind};

/// The connection failures seen so far (filled from librdkafka's log
/// callback, read by the driver while it waits for the cluster).
#[derive(Debug, Default)]
pub(crate) struct ConnectFailures {
    inner: Mutex<Seen>,
    /// Something that may be final was noted: a cheap check per record.
    noted: AtomicBool,
}

#[derive(Debug, Default)]
struct Seen {
    authentication: Option<String>,
    tls: Option<String>,
    /// `host:port` names that failed to resolve, and the last message.
    unresolved: BTreeSet<String>,
    resolve_message: Option<String>,
}

impl ConnectFailures {
    /// Notes a librdkafka log line of facility `FAIL` (a broker connection
    /// failed and why). True when it may be final.
    pub(crate) fn note(&self, message: &str) -> bool {
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if message.contains("SASL authentication error")
            || message.contains("SASL authentication failed")
            || message.contains("Failed to initialize SASL authentication")
        {
            seen.authentication = Some(message.to_owned());
        } else if message.contains("SSL handshake failed") {
            seen.tls = Some(message.to_owned());
        } else if let Some(rest) = message.split("Failed to resolve '").nth(1) {
            if let Some(name) = rest.split('\'').next() {
                seen.unresolved.insert(name.to_owned());
                seen.resolve_message = Some(message.to_owned());
            }
        } else {
            return false;
        }
        self.noted.store(true, Ordering::Release);
        true
    }

    /// Notes an error librdkafka reported (its error callback, with
    /// librdkafka's reason, or a poll, without): its code says the cause
    /// when no log line did. True when it may be final.
    pub(crate) fn note_code(&self, code: RDKafkaErrorCode, reason: Option<&str>) -> bool {
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let said = || reason.map_or_else(|| code.to_string(), str::to_owned);
        match code {
            RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
                seen.authentication.get_or_insert_with(said);
            }
            RDKafkaErrorCode::SSL => {
                seen.tls.get_or_insert_with(said);
            }
            _ => return false,
        }
        self.noted.store(true, Ordering::Release);
        true
    }

    /// The failure to report now, if waiting longer cannot help: failed
    /// authentication or TLS handshake, or every name of `bootstrap`
    /// unresolvable.
    pub(crate) fn verdict(&self, bootstrap: &str) -> Option<Error> {
        if !self.noted.load(Ordering::Acquire) {
            return None;
        }
        let seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &seen.authentication {
            return Some(Error::new(
                ErrorKind::Authentication,
                format!("authentication with the broker at `{bootstrap}` failed: {m}"),
            ));
        }
        if let Some(m) = &seen.tls {
            return Some(Error::new(
                ErrorKind::Tls,
                format!("TLS handshake with the broker at `{bootstrap}` failed: {m}"),
            ));
        }
        let names = bootstrap_names(bootstrap);
        if !names.is_empty() && names.iter().all(|n| seen.unresolved.contains(n)) {
            let m = seen.resolve_message.as_deref().unwrap_or_default();
            return Some(Error::new(
                ErrorKind::BrokerUnreachable,
                format!("no name of `{bootstrap}` resolves (DNS): {m}"),
            ));
        }
        None
    }
}

/// The `host:port` names of a `bootstrap.servers` value as librdkafka
/// names them (port 9092 when none is given, protocol prefix dropped).
fn bootstrap_names(bootstrap: &str) -> Vec<String> {
    bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit("://").next().unwrap_or(s))
        .map(|s| {
            if s.starts_with('[') || s.contains(':') {
                s.to_owned()
            } else {
                format!("{s}:9092")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unresolvable_name_fails_with_dns_named() {
        let f = ConnectFailures::default();
        let bootstrap = "a.invalid:9092, b.invalid";
        f.note("a.invalid:9092/bootstrap: Failed to resolve 'a.invalid:9092': Name or service not known (after 1ms in state CONNECT)");
        assert!(
            f.verdict(bootstrap).is_none(),
            "b.invalid may still resolve"
        );
        f.note("b.invalid:9092/bootstrap: Failed to resolve 'b.invalid:9092': Name or service not known (after 1ms in state CONNECT)");
        let err = f.verdict(bootstrap).expect("both failed");
        assert_eq!(err.kind(), ErrorKind::BrokerUnreachable);
        assert!(err.to_string().contains("DNS"), "{err}");
        assert!(err.to_string().contains("b.invalid:9092"), "{err}");
    }

    #[test]
    fn authentication_and_tls_failures_are_final() {
        let f = ConnectFailures::default();
        f.note("h:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: Connection refused");
        assert!(f.verdict("h:9093").is_none());
        f.note("h:9093/bootstrap: SASL authentication error: Authentication failed: Invalid username or password (after 3ms in state AUTH_REQ)");
        let err = f.verdict("h:9093").unwrap();
        assert_eq!(err.kind(), ErrorKind::Authentication);
        assert!(err.to_string().contains("Invalid username"), "{err}");

        let f = ConnectFailures::default();
        f.note("h:9093/bootstrap: SSL handshake failed: certificate verify failed");
        assert_eq!(f.verdict("h:9093").unwrap().kind(), ErrorKind::Tls);
    }

    #[test]
    fn an_error_code_is_final_and_keeps_the_first_reason_given() {
        let f = ConnectFailures::default();
        assert!(!f.note_code(
            RDKafkaErrorCode::AllBrokersDown,
            Some("1/1 brokers are down")
        ));
        assert!(f.verdict("h:9093").is_none());
        let reason = "Failed to acquire SASL OAUTHBEARER token: provider answered 503";
        assert!(f.note_code(RDKafkaErrorCode::Authentication, Some(reason)));
        // The same error, polled without a reason, keeps the reason.
        assert!(f.note_code(RDKafkaErrorCode::Authentication, None));
        let err = f.verdict("h:9093").unwrap();
        assert_eq!(err.kind(), ErrorKind::Authentication);
        assert!(err.to_string().contains(reason), "{err}");
    }

    #[test]
    fn bootstrap_names_get_the_default_port() {
        assert_eq!(
            bootstrap_names("SASL_SSL://a:1,b"),
            vec!["a:1".to_owned(), "b:9092".to_owned()]
        );
    }
}
