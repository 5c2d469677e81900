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
            Subscription::Pattern(_) => Ok(()),
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
