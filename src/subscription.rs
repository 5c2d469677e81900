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
            Subscription::Topics(t) => match t.iter().find(|t| t.is_empty()) {
                Some(_) => Err(Error::config("invalid subscription: empty topic name")),
                None => Ok(()),
            },
            Subscription::Pattern(p) if !p.starts_with('^') => Err(Error::config(format!(
                "invalid subscription pattern `{p}`: a pattern must start with `^`"
            ))),
            Subscription::Pattern(_) => Ok(()),
            Subscription::Assignment(a) if a.is_empty() => {
                Err(Error::config("invalid subscription: no partitions"))
            }
            Subscription::Assignment(a) => match a
                .iter()
                .find(|(tp, _)| tp.partition < 0 || tp.topic.is_empty())
            {
                Some((tp, _)) => Err(Error::config(format!(
                    "invalid subscription: bad partition `{tp}`"
                ))),
                None => Ok(()),
            },
        }
    }
}
