//! What a source reads: topics, a pattern, or partitions assigned by hand.

use crate::error::{Error, Result};
use crate::record::TopicPartition;

/// Where a manually assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The group's committed offset, or `auto.offset.reset` without one.
    Committed,
    /// The oldest retained record.
    Beginning,
    /// After the newest record.
    End,
    /// This exact offset.
    Offset(i64),
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics, with partitions assigned by the consumer group.
    Topics(Vec<String>),
    /// Every topic whose name matches this regular expression (it must start
    /// with `^`), with partitions assigned by the consumer group.
    Pattern(String),
    /// These partitions, with no group assignment (a group is still needed to
    /// commit offsets).
    Assignment(Vec<(TopicPartition, StartOffset)>),
}

impl Subscription {
    /// Subscribes to these topics through the consumer group.
    pub fn topics<I, S>(topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Subscription::Topics(topics.into_iter().map(Into::into).collect())
    }

    /// Subscribes to every topic matching `regex`, which must start with `^`
    /// (librdkafka's marker for a pattern).
    pub fn pattern(regex: impl Into<String>) -> Self {
        Subscription::Pattern(regex.into())
    }

    /// Reads these partitions from the group's committed offsets.
    pub fn assignment<I: IntoIterator<Item = TopicPartition>>(partitions: I) -> Self {
        Subscription::Assignment(
            partitions
                .into_iter()
                .map(|tp| (tp, StartOffset::Committed))
                .collect(),
        )
    }

    /// Reads these partitions from the given offsets.
    pub fn assignment_with_offsets<I: IntoIterator<Item = (TopicPartition, StartOffset)>>(
        partitions: I,
    ) -> Self {
        Subscription::Assignment(partitions.into_iter().collect())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Subscription::Topics(t) if t.is_empty() => {
                Err(Error::config("invalid subscription: no topics"))
            }
            Subscription::Topics(t) => t.iter().try_for_each(|t| validate_topic(t)),
            Subscription::Pattern(p) if !p.starts_with('^') => Err(Error::config(format!(
                "invalid subscription pattern `{p}`: a pattern must start with `^`"
            ))),
            Subscription::Pattern(p) => check_pattern(p),
            Subscription::Assignment(a) if a.is_empty() => {
                Err(Error::config("invalid subscription: no partitions"))
            }
            Subscription::Assignment(a) => a.iter().try_for_each(|(tp, _)| {
                validate_topic(&tp.topic)?;
                match tp.partition {
                    p if p < 0 => Err(Error::config(format!(
                        "invalid subscription: bad partition `{tp}`"
                    ))),
                    _ => Ok(()),
                }
            }),
        }
    }
}

/// A pattern librdkafka would refuse when subscribing (after the cluster
/// answered) is refused here, at construction. librdkafka compiles patterns
/// with POSIX `regcomp` (extended syntax) where the platform has it, so the
/// same call decides here.
#[cfg(unix)]
fn check_pattern(pattern: &str) -> Result<()> {
    let c = std::ffi::CString::new(pattern).map_err(|_| {
        Error::config(format!(
            "invalid subscription pattern `{pattern}`: contains a NUL byte"
        ))
    })?;
    // SAFETY: `re` is plain data that `regcomp` initialises; it is freed
    // with `regfree` only when `regcomp` succeeded; `c` outlives the call.
    let mut re: libc::regex_t = unsafe { std::mem::zeroed() };
    let code = unsafe { libc::regcomp(&mut re, c.as_ptr(), libc::REG_EXTENDED | libc::REG_NOSUB) };
    if code == 0 {
        // SAFETY: compiled above.
        unsafe { libc::regfree(&mut re) };
        return Ok(());
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; `regerror` writes a
    // NUL-terminated message into it, cut to fit.
    unsafe { libc::regerror(code, &re, buf.as_mut_ptr().cast(), buf.len()) };
    let reason = std::ffi::CStr::from_bytes_until_nul(&buf)
        .map(|m| m.to_string_lossy().into_owned())
        .unwrap_or_default();
    Err(Error::config(format!(
        "invalid subscription pattern `{pattern}`: {reason}"
    )))
}

/// Elsewhere librdkafka uses its own engine: a bad pattern fails when the
/// source subscribes.
#[cfg(not(unix))]
fn check_pattern(_pattern: &str) -> Result<()> {
    Ok(())
}

/// Kafka's rule for topic names: 1 to 249 of `a-z A-Z 0-9 . _ -`, and not
/// `.` or `..`. A name that breaks it would never be assigned: the consumer
/// would wait forever.
fn validate_topic(topic: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let reason = if topic.is_empty() {
        Some("empty topic name".to_owned())
    } else if topic.len() > 249 {
        Some(format!(
            "topic name of {} characters (at most 249)",
            topic.len()
        ))
    } else if topic == "." || topic == ".." {
        Some(format!("topic name `{topic}`"))
    } else {
        topic.chars().find(|c| !legal(*c)).map(|c| {
            format!(
                "topic name `{topic}`: `{c}` is not allowed (only a-z, A-Z, 0-9, `.`, `_`, `-`)"
            )
        })
    };
    match reason {
        Some(reason) => Err(Error::config(format!("invalid subscription: {reason}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_that_does_not_compile_is_refused_naming_it() {
        assert!(Subscription::pattern("^orders-.*").validate().is_ok());
        assert!(Subscription::pattern("^orders-[0-9]+$").validate().is_ok());
        let err = Subscription::pattern("^orders-(").validate().unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        assert!(err.to_string().contains("^orders-("), "{err}");
    }

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for good in ["orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "bad topic!", "ünïcode", &"x".repeat(250)] {
            let err = validate_topic(bad).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        }
        let err = validate_topic("bad topic!").unwrap_err().to_string();
        assert!(err.contains("bad topic!") && err.contains("` `"), "{err}");
    }
}
