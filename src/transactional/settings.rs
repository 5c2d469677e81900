use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// How a transactional sink or producer runs its transactions.
#[derive(Clone)]
pub struct TransactionalSettings {
    pub(crate) transactional_id: String,
    pub(crate) commit_interval: Duration,
    pub(crate) max_records: usize,
    pub(crate) timeout: Duration,
}

impl fmt::Debug for TransactionalSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalSettings")
            .field("transactional_id", &self.transactional_id)
            .field("commit_interval", &self.commit_interval)
            .field("max_records", &self.max_records)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TransactionalSettings {
    /// Transactions under `transactional_id`: stable per instance of your
    /// service across restarts, unique among the instances running (see
    /// the [module docs](super)). Commits every 100 ms or 10,000 records,
    /// each transaction call bounded by 30 s.
    pub fn new(transactional_id: impl Into<String>) -> Self {
        TransactionalSettings {
            transactional_id: transactional_id.into(),
            commit_interval: Duration::from_millis(100),
            max_records: 10_000,
            timeout: Duration::from_secs(30),
        }
    }

    /// How long a transaction stays open before it is committed (default
    /// 100 ms). Longer: fewer commits, more throughput, and output visible
    /// to `read_committed` readers that much later.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Commits as soon as a transaction holds this many records (default
    /// 10,000), whatever the interval.
    pub fn max_records(mut self, records: usize) -> Self {
        self.max_records = records;
        self
    }

    /// The bound of each blocking transaction call: initialising,
    /// adding offsets, committing (which waits for every record of the
    /// transaction to be delivered) and aborting (default 30 s). A call
    /// that takes longer fails the pipeline with a timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.transactional_id.trim().is_empty() {
            return Err(Error::config("the transactional id is empty"));
        }
        if self.commit_interval.is_zero() {
            return Err(Error::config("commit_interval must be above zero"));
        }
        if self.max_records == 0 {
            return Err(Error::config("max_records must be above zero"));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(Error::config(format!(
                "timeout {:?} is too short for a transaction call (100 ms at least)",
                self.timeout
            )));
        }
        Ok(())
    }
}
