use std::fmt;

use super::core::RecordMetadata;
use crate::error::Error;
use crate::record::ProducerRecord;
use crate::task_sink::Fold;

/// What a producer flow or sink is given: records to produce and a value to
/// pass through to the result (Alpakka's `Envelope`).
#[derive(Debug, Clone)]
pub enum Envelope<P> {
    /// One record; its result carries `pass_through`.
    Message {
        /// The record to produce.
        record: ProducerRecord,
        /// A value handed back with the result, for example the offset to commit.
        pass_through: P,
    },
    /// Several records; the result arrives when all of them are delivered.
    MultiMessage {
        /// The records to produce.
        records: Vec<ProducerRecord>,
        /// A value handed back with the result.
        pass_through: P,
    },
    /// No record: the value flows on, in order with the others (for example
    /// the offset of a record that was filtered out).
    PassThrough(P),
}

/// Each envelope is produced on its own: none folds into another.
impl<P> Fold for Envelope<P> {}

impl<P> Envelope<P> {
    /// One record with a pass-through value.
    pub fn message(record: ProducerRecord, pass_through: P) -> Self {
        Envelope::Message {
            record,
            pass_through,
        }
    }

    /// Several records with one pass-through value.
    pub fn multi(records: Vec<ProducerRecord>, pass_through: P) -> Self {
        Envelope::MultiMessage {
            records,
            pass_through,
        }
    }

    /// Only a pass-through value.
    pub fn pass_through(pass_through: P) -> Self {
        Envelope::PassThrough(pass_through)
    }

    /// The pass-through value, whatever the kind of envelope.
    pub(crate) fn pass_through_ref(&self) -> &P {
        match self {
            Envelope::Message { pass_through, .. }
            | Envelope::MultiMessage { pass_through, .. }
            | Envelope::PassThrough(pass_through) => pass_through,
        }
    }
}

/// The result of one envelope, in the order the envelopes were given.
#[derive(Debug, Clone)]
pub enum ProducerResult<P> {
    /// An [`Envelope::Message`] was delivered.
    Message {
        /// Where the record was written.
        metadata: RecordMetadata,
        /// The record.
        record: ProducerRecord,
        /// The envelope's value.
        pass_through: P,
    },
    /// Every record of an [`Envelope::MultiMessage`] was delivered.
    MultiMessage {
        /// Where each record was written, with the record, in envelope order.
        parts: Vec<(RecordMetadata, ProducerRecord)>,
        /// The envelope's value.
        pass_through: P,
    },
    /// An [`Envelope::PassThrough`].
    PassThrough(P),
}

impl<P> ProducerResult<P> {
    /// The envelope's pass-through value.
    pub fn pass_through(&self) -> &P {
        match self {
            ProducerResult::Message { pass_through, .. }
            | ProducerResult::MultiMessage { pass_through, .. }
            | ProducerResult::PassThrough(pass_through) => pass_through,
        }
    }

    /// Takes the pass-through value.
    pub fn into_pass_through(self) -> P {
        match self {
            ProducerResult::Message { pass_through, .. }
            | ProducerResult::MultiMessage { pass_through, .. }
            | ProducerResult::PassThrough(pass_through) => pass_through,
        }
    }
}

/// An envelope at least one record of which was not delivered: the error,
/// every record of the envelope, and its pass-through value, so nothing is lost.
#[non_exhaustive]
pub struct ProduceFailure<P> {
    /// The first error among the envelope's records.
    pub error: Error,
    /// The envelope's records (delivered or not).
    pub records: Vec<ProducerRecord>,
    /// The envelope's value.
    pub pass_through: P,
}

impl<P> fmt::Debug for ProduceFailure<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProduceFailure")
            .field("error", &self.error)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl<P> fmt::Display for ProduceFailure<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} records in the envelope)",
            self.error,
            self.records.len()
        )
    }
}

impl<P> std::error::Error for ProduceFailure<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<P> From<ProduceFailure<P>> for Error {
    fn from(f: ProduceFailure<P>) -> Error {
        f.error
    }
}
