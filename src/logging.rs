//! librdkafka's log lines and error callbacks, forwarded to `tracing`
//! (target `librdkafka`), with repeats rate-limited: during a broker outage
//! librdkafka repeats the same few warnings many times a second.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;

/// Lines of one kind logged at most once per window; the next one says how
/// many were left out.
const WINDOW: Duration = Duration::from_secs(10);

static REPEATS: LazyLock<RateLimit> = LazyLock::new(|| RateLimit::new(WINDOW));

pub(crate) fn librdkafka_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let limited = |level: &str| {
        let key = format!("{level}/{fac}/{}", kind_of(message));
        REPEATS.check(&key, Instant::now())
    };
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            if let Some(suppressed) = limited("error") {
                tracing::error!(target: "librdkafka", fac, suppressed, "{message}");
            }
        }
        RDKafkaLogLevel::Warning => {
            if let Some(suppressed) = limited("warn") {
                tracing::warn!(target: "librdkafka", fac, suppressed, "{message}");
            }
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// librdkafka's error callback (`ClientContext::error`) of a `client`
/// ("consumer" or "producer"), at warn level, rate-limited per error.
pub(crate) fn librdkafka_error(client: &str, error: &rdkafka::error::KafkaError, reason: &str) {
    let key = format!("{client}/{error}/{}", kind_of(reason));
    if let Some(suppressed) = REPEATS.check(&key, Instant::now()) {
        tracing::warn!(target: "librdkafka", client, %error, reason, suppressed, "librdkafka reported an error");
    }
}

/// A consumer error that librdkafka retries by itself (returned by its
/// poll), at warn level, rate-limited per error and partition.
pub(crate) fn retried_consumer_error(
    error: &rdkafka::error::KafkaError,
    partition: Option<&crate::record::TopicPartition>,
) {
    let key = format!("consumer-poll/{error}/{partition:?}");
    if let Some(suppressed) = REPEATS.check(&key, Instant::now()) {
        tracing::warn!(%error, ?partition, suppressed, "consumer error (librdkafka retries)");
    }
}

/// What tells lines apart: the text without digits (ports, counts and
/// times vary between repeats of one line), at most 60 characters.
fn kind_of(message: &str) -> String {
    message
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(60)
        .collect()
}

/// Per key: lets one line through per window, and counts the others.
#[derive(Debug)]
pub(crate) struct RateLimit {
    window: Duration,
    /// Per key: when a line last went through, and how many were left out since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateLimit {
    pub(crate) fn new(window: Duration) -> Self {
        RateLimit {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line of `key` may go out now (`n` lines of it were
    /// left out since the last one); `None` when it is left out.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(key) {
            Some((last, dropped)) if now.saturating_duration_since(*last) < self.window => {
                *dropped += 1;
                None
            }
            Some((last, dropped)) => {
                *last = now;
                Some(std::mem::take(dropped))
            }
            None => {
                // Bounded: keys are kinds of lines, a few dozen at most.
                if seen.len() >= 1024 {
                    seen.clear();
                }
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_and_the_next_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(limit.check("a", t), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(limit.check("a", t + Duration::from_millis(ms)), None);
        }
        // Another kind of line is not held back by the first.
        assert_eq!(limit.check("b", t + Duration::from_secs(1)), Some(0));
        assert_eq!(limit.check("a", t + Duration::from_secs(10)), Some(3));
        assert_eq!(limit.check("a", t + Duration::from_secs(11)), None);
        assert_eq!(limit.check("a", t + Duration::from_secs(20)), Some(1));
    }

    #[test]
    fn lines_that_differ_only_in_numbers_are_one_kind() {
        assert_eq!(
            kind_of("127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed (after 0ms)"),
            kind_of("127.0.0.1:9093/2: Connect to ipv4#127.0.0.1:9093 failed (after 12ms)")
        );
        assert_ne!(kind_of("Connect failed"), kind_of("Disconnected"));
    }
}
