use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;

use super::settings::TransactionalSettings;
use crate::error::{Error, ErrorKind, Result};
use crate::producer::{ProducerCore, Sent, Track};
use crate::record::ProducerRecord;
use crate::settings::ProducerSettings;

/// A transactional librdkafka producer shared by a sink's task or a
/// [`TransactionalProducer`]: every blocking transaction call runs on the
/// blocking pool, bounded by the settings' timeout.
#[derive(Clone)]
pub(crate) struct TxnCore {
    core: Arc<ProducerCore>,
    timeout: Duration,
    id: Arc<str>,
}

impl TxnCore {
    pub(crate) fn new(producer: &ProducerSettings, tx: &TransactionalSettings) -> Result<Self> {
        tx.validate()?;
        let settings = producer
            .clone()
            .property("transactional.id", tx.transactional_id.clone())
            .property(
                "transaction.timeout.ms",
                // The broker aborts a transaction left open this long (a
                // crashed producer's): well above a commit interval.
                (tx.commit_interval.max(tx.timeout) * 2)
                    .as_millis()
                    .min(900_000)
                    .to_string(),
            );
        Ok(TxnCore {
            core: Arc::new(ProducerCore::new(&settings)?),
            timeout: tx.timeout,
            id: tx.transactional_id.as_str().into(),
        })
    }

    /// Runs a blocking transaction call off the async workers; librdkafka
    /// bounds it by the timeout, and so does this (with a second's grace).
    async fn call<F>(&self, what: &'static str, f: F) -> Result<()>
    where
        F: FnOnce(&ProducerCore, Duration) -> std::result::Result<(), KafkaError> + Send + 'static,
    {
        let (core, timeout) = (self.core.clone(), self.timeout);
        let call = tokio::task::spawn_blocking(move || f(&core, timeout));
        match tokio::time::timeout(timeout + Duration::from_secs(1), call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(self.error(what, e)),
            Ok(Err(join)) => Err(Error::closed(format!(
                "{what} (transactional id `{}`) ended abnormally: {join}",
                self.id
            ))),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} (transactional id `{}`) did not finish within {timeout:?}",
                    self.id
                ),
            )),
        }
    }

    /// A transaction call's failure, named: a fenced producer is
    /// [`ErrorKind::ProducerFenced`] (the cause decides), any other
    /// [`ErrorKind::Transaction`].
    pub(crate) fn error(&self, what: &str, e: KafkaError) -> Error {
        Error::with_source(
            ErrorKind::Transaction,
            format!("{what} (transactional id `{}`)", self.id),
            e,
        )
    }

    pub(crate) async fn init(&self) -> Result<()> {
        self.call("could not initialise transactions", |p, t| {
            p.init_transactions(t)
        })
        .await
    }

    pub(crate) fn begin(&self) -> Result<()> {
        self.core
            .begin_transaction()
            .map_err(|e| self.error("could not begin a transaction", e))
    }

    /// Hands a record to librdkafka, waiting for room when its queue is full.
    pub(crate) async fn send(&self, record: &ProducerRecord) -> Result<()> {
        loop {
            match self.core.send(record, Track::No)? {
                Sent::Queued(_) => return Ok(()),
                Sent::Full => self.core.room().await,
            }
        }
    }

    /// Waits until every record sent so far has its delivery report
    /// (bounded by the timeout); a failed delivery is returned.
    pub(crate) async fn flush(&self) -> Result<()> {
        let wait = async {
            while self.core.in_flight() > 0 {
                self.core.room().await;
            }
        };
        if tokio::time::timeout(self.timeout, wait).await.is_err() {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "records of the transaction (transactional id `{}`) not delivered within {:?}",
                    self.id, self.timeout
                ),
            ));
        }
        self.core.failure().map_err(|e| {
            e.with_note(&format!(
                "in the transaction of transactional id `{}`",
                self.id
            ))
        })
    }

    /// Adds a group's offsets (next offsets to read) to the open transaction.
    pub(crate) async fn send_offsets(
        &self,
        offsets: rdkafka::TopicPartitionList,
        group: crate::driver::GroupMetadata,
    ) -> Result<()> {
        self.call(
            "could not add the consumed offsets to the transaction",
            move |p, t| p.send_offsets_to_transaction(&offsets, &group.0, t),
        )
        .await
    }

    /// Commits the open transaction: waits for its records' delivery first.
    pub(crate) async fn commit(&self) -> Result<()> {
        // A record that failed to be delivered dooms the transaction:
        // librdkafka's commit fails then too, this names the record (and
        // the transactional id: a fenced zombie learns it here as often as
        // from the commit).
        self.core.failure().map_err(|e| {
            e.with_note(&format!(
                "the transaction (transactional id `{}`) cannot commit",
                self.id
            ))
        })?;
        self.call("could not commit the transaction", |p, t| {
            p.commit_transaction(t)
        })
        .await
    }

    pub(crate) async fn abort(&self) -> Result<()> {
        self.call("could not abort the transaction", |p, t| {
            p.abort_transaction(t)
        })
        .await
    }
}

/// A transactional producer without a source: writes records to several
/// topics and partitions atomically. A `read_committed` reader sees all of
/// a committed transaction's records, and none of an aborted one's.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use reactive_kafka::transactional::{TransactionalProducer, TransactionalSettings};
/// use reactive_kafka::{ProducerRecord, ProducerSettings};
///
/// let mut producer = TransactionalProducer::new(
///     ProducerSettings::new("127.0.0.1:9092"),
///     TransactionalSettings::new("billing-7"),
/// )
/// .await?;
/// let mut tx = producer.begin().await?;
/// tx.send(ProducerRecord::new("invoices").key("7").payload("12.00")).await?;
/// tx.send(ProducerRecord::new("ledger").key("7").payload("+12.00")).await?;
/// tx.commit().await?; // both or neither
/// # Ok(())
/// # }
/// ```
pub struct TransactionalProducer {
    txn: TxnCore,
    /// An abort started by dropping an open transaction.
    pending_abort: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.txn.id)
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Creates the producer and initialises its transactions: fences any
    /// earlier producer with the same transactional id and aborts what it
    /// left open. Bounded by the settings' timeout.
    pub async fn new(producer: ProducerSettings, tx: TransactionalSettings) -> Result<Self> {
        let txn = TxnCore::new(&producer, &tx)?;
        txn.init().await?;
        Ok(TransactionalProducer {
            txn,
            pending_abort: None,
        })
    }

    /// Begins a transaction. One at a time: the transaction borrows the
    /// producer until it is committed, aborted or dropped (dropping aborts).
    pub async fn begin(&mut self) -> Result<Transaction<'_>> {
        if let Some(abort) = self.pending_abort.take() {
            abort
                .await
                .map_err(|e| Error::closed(format!("the abort ended abnormally: {e}")))??;
        }
        self.txn.begin()?;
        Ok(Transaction {
            producer: self,
            open: true,
        })
    }
}

/// An open transaction of a [`TransactionalProducer`]. Dropping it without
/// [`commit`](Self::commit) aborts it (on the blocking pool; the next
/// [`begin`](TransactionalProducer::begin) waits for that).
#[must_use = "a transaction is aborted unless committed"]
pub struct Transaction<'a> {
    producer: &'a mut TransactionalProducer,
    open: bool,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("transactional_id", &self.producer.txn.id)
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    /// Adds a record to the transaction (waits only while librdkafka's
    /// queue is full; delivery is confirmed by [`commit`](Self::commit)).
    pub async fn send(&mut self, record: ProducerRecord) -> Result<()> {
        self.producer.txn.send(&record).await
    }

    /// Waits until every record sent so far is delivered to the broker
    /// (still invisible to `read_committed` readers until the commit),
    /// bounded by the settings' timeout; returns a failed delivery.
    pub async fn flush(&mut self) -> Result<()> {
        self.producer.txn.flush().await
    }

    /// Commits: every record of the transaction is delivered, then they
    /// all become visible to `read_committed` readers at once. On failure
    /// the transaction is aborted (when it can be) and the error returned.
    pub async fn commit(mut self) -> Result<()> {
        self.open = false;
        match self.producer.txn.commit().await {
            Ok(()) => Ok(()),
            Err(e) => {
                if !e.is_fatal() {
                    if let Err(abort) = self.producer.txn.abort().await {
                        tracing::warn!(error = %abort.report(), "could not abort the failed transaction");
                    }
                }
                Err(e)
            }
        }
    }

    /// Aborts: none of the transaction's records will be visible to
    /// `read_committed` readers.
    pub async fn abort(mut self) -> Result<()> {
        self.open = false;
        self.producer.txn.abort().await
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let txn = self.producer.txn.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                self.producer.pending_abort = Some(runtime.spawn(async move { txn.abort().await }));
            }
        }
    }
}
