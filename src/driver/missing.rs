//! Topics subscribed to by name that do not exist: checked once, a while
//! after subscribing, so that a typo or a missing topic fails the source
//! with a named error instead of leaving its stream pending for ever.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// When to look, and what to do with what was found.
#[derive(Debug)]
pub(crate) struct MissingTopics {
    /// `None`: only warn.
    timeout: Option<Duration>,
    /// Brokers create subscribed topics: nothing to check.
    auto_create: bool,
    check_at: Option<Instant>,
}

/// How long a source with no timeout waits before it warns.
const WARN_AFTER: Duration = Duration::from_secs(60);

impl MissingTopics {
    pub(crate) fn new(timeout: Option<Duration>, auto_create: bool) -> Self {
        MissingTopics {
            timeout,
            auto_create,
            check_at: None,
        }
    }

    /// The source subscribed to topics by name at `now`.
    pub(crate) fn subscribed(&mut self, now: Instant) {
        if !self.auto_create {
            self.check_at = Some(now + self.timeout.unwrap_or(WARN_AFTER));
        }
    }

    /// True when the check is due (once).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.check_at.is_some_and(|at| now >= at)
    }

    /// What the check found: the subscribed topics the cluster does not
    /// know. An error to end the source with, or nothing (all there, or
    /// only a warning wanted).
    pub(crate) fn found(&mut self, missing: &[String]) -> Option<Error> {
        self.check_at = None;
        if missing.is_empty() {
            return None;
        }
        match self.timeout {
            Some(t) => Some(Error::new(
                ErrorKind::UnknownTopic,
                format!(
                    "subscribed topic(s) {missing:?} do not exist after {t:?} (missing_topic_timeout): create them, or set missing_topic_timeout(None) to wait"
                ),
            )),
            None => {
                tracing::warn!(topics = ?missing, "subscribed topics do not exist after {WARN_AFTER:?}; waiting for them (missing_topic_timeout is None)");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_fails_once_the_timeout_passed() {
        let now = Instant::now();
        let mut m = MissingTopics::new(Some(Duration::from_secs(5)), false);
        m.subscribed(now);
        assert!(!m.due(now + Duration::from_secs(4)));
        assert!(m.due(now + Duration::from_secs(5)));
        let err = m.found(&["orderz".to_owned()]).unwrap();
        assert_eq!(err.kind(), ErrorKind::UnknownTopic);
        assert!(err.to_string().contains("orderz"), "{err}");
        assert!(!m.due(now + Duration::from_secs(60)), "checked once");
    }

    #[test]
    fn nothing_fails_when_the_topics_exist_or_only_a_warning_is_wanted() {
        let now = Instant::now();
        let mut m = MissingTopics::new(Some(Duration::from_secs(5)), false);
        m.subscribed(now);
        assert!(m.found(&[]).is_none());
        let mut m = MissingTopics::new(None, false);
        m.subscribed(now);
        assert!(m.due(now + WARN_AFTER));
        assert!(m.found(&["orderz".to_owned()]).is_none());
        let mut m = MissingTopics::new(Some(Duration::from_secs(5)), true);
        m.subscribed(now);
        assert!(!m.due(now + Duration::from_secs(600)), "auto-created");
    }
}
