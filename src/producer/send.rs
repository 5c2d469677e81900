use std::fmt;
use std::sync::Arc;

use super::core::{ProducerCore, RecordMetadata, Sent, Track};
use crate::error::{Error, Result};
use crate::record::ProducerRecord;
use crate::settings::ProducerSettings;

/// A cloneable producer handle for request/response code: `send(record).await`
/// resolves when the broker acknowledged the record.
///
/// Every clone shares one librdkafka producer. When the last clone is
/// dropped, queued records keep being delivered on a background thread for up
/// to [`flush_timeout`](ProducerSettings::flush_timeout).
#[derive(Clone)]
pub struct SendProducer {
    core: Arc<ProducerCore>,
}

impl fmt::Debug for SendProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendProducer")
            .field("core", &self.core)
            .finish()
    }
}

impl SendProducer {
    /// A handle with a producer of its own.
    pub fn new(settings: ProducerSettings) -> Result<Self> {
        Ok(SendProducer {
            core: Arc::new(ProducerCore::new(&settings)?),
        })
    }

    /// Produces `record` and waits for the broker's acknowledgement. When
    /// librdkafka's queue is full it waits for deliveries to free room.
    ///
    /// On failure the record is handed back with the error ([`SendError`]),
    /// which `?` turns into the crate's [`Error`] where the record is not
    /// needed.
    ///
    /// Cancel safety: dropping the future after the record was queued does
    /// not unsend it; it is still delivered, unobserved.
    pub async fn send(
        &self,
        record: ProducerRecord,
    ) -> std::result::Result<RecordMetadata, SendError> {
        let failed = |error, record| Err(SendError(Box::new((error, record))));
        let rx = loop {
            match self.core.send(&record, Track::Own) {
                Ok(Sent::Queued(rx)) => {
                    break rx.expect("a record sent with Track::Own has a receiver")
                }
                Ok(Sent::Full) => self.core.room().await,
                Err(e) => return failed(e, record),
            }
        };
        match rx.await {
            Ok(Ok(metadata)) => Ok(metadata),
            Ok(Err(e)) => failed(e, record),
            Err(_) => failed(
                Error::closed("the producer closed before answering"),
                record,
            ),
        }
    }

    /// Records handed to librdkafka and not yet acknowledged, over all clones.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }
}

/// A record [`SendProducer::send`] could not produce, and why.
#[derive(Debug, Clone)]
pub struct SendError(Box<(Error, ProducerRecord)>);

impl SendError {
    /// Why it failed.
    pub fn error(&self) -> &Error {
        &self.0 .0
    }

    /// The record, to retry or route elsewhere.
    pub fn record(&self) -> &ProducerRecord {
        &self.0 .1
    }

    /// The error and the record.
    pub fn into_parts(self) -> (Error, ProducerRecord) {
        *self.0
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.error(), f)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.error())
    }
}

/// `?` on a send in a function returning the crate's `Result`.
impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        e.into_parts().0
    }
}
