//! Starting a driver: validate the settings, create the consumer with its
//! context, start the thread, and hand back the handle and the source's end
//! of the output.

use std::sync::{mpsc, Arc};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::KafkaError;

use super::context::{DriverConsumer, DriverContext};
use super::ffi::{MessageBuf, QueueRef};
use super::missing::MissingTopics;
use super::pipeline::CommitPipeline;
use super::records::{BatchSize, RecordBuilder};
use super::revocation::RevocationHolds;
use super::run::{Driver, Output, Phase};
use super::table::PartitionTable;
use super::{next_id, DriverConfig, DriverHandle, DriverLink, Shared, SourceRx, Target};
use crate::error::{Error, ErrorKind, Result};

/// Starts a driver thread and its consumer. Configuration and client
/// creation errors are returned here, synchronously.
pub(crate) fn spawn(config: DriverConfig) -> Result<(Arc<DriverHandle>, SourceRx)> {
    let settings = &config.settings;
    let client_config = settings.to_client_config(config.committable)?;
    let revoke_timeout = settings.effective_revoke_timeout()?;
    config.subscription.validate()?;
    let (boot_tx, boot_rx) = mpsc::sync_channel::<Driver>(1);
    let (commands_tx, commands) = mpsc::channel();
    let shared = Shared::new(settings.max_outstanding.filter(|_| config.committable));
    let id = next_id();
    let join = std::thread::Builder::new()
        .name(format!("reactive-kafka-consumer-{id}"))
        .spawn(move || {
            // The constructor sends the driver once the consumer exists; if
            // creation fails the sender is dropped and the thread ends.
            if let Ok(driver) = boot_rx.recv() {
                driver.run();
            }
        })
        .map_err(|e| Error::closed(format!("could not start the consumer thread: {e}")))?;
    let thread = join.thread().clone();
    drop(join); // detached: the driver ends by itself when released or shut down
    let link = Arc::new(DriverLink::new(
        id,
        Target::Thread {
            commands: commands_tx,
            thread: thread.clone(),
        },
        shared,
    ));

    let hold_revocations = config.committable && settings.rebalance_safe_commits;
    let listener = settings.listener.as_ref().map(|l| l.0.clone());
    let secrets = crate::settings::Secrets::of(&settings.properties);
    let context = DriverContext::new(
        thread.clone(),
        hold_revocations,
        listener,
        secrets,
        settings.token_provider.clone(),
        link.shared.statistics.clone(),
    );
    let mut consumer =
        DriverConsumer::from_config_and_context(&client_config, context).map_err(|e| match e {
            // librdkafka's own words name the key or combination it refused.
            KafkaError::ClientCreation(reason) => Error::config(crate::settings::redact(
                &format!("could not create the consumer: {reason}"),
                &settings.properties,
            )),
            e => Error::with_source(ErrorKind::Config, "could not create the consumer", e),
        })?;
    consumer.set_nonempty_callback(move || thread.unpark());
    let consumer = Arc::new(consumer);

    let (output, source_rx) = if config.partitioned {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Output::Partitioned(tx), SourceRx::Partitioned(rx))
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel(settings.buffer_batches);
        (Output::Single(tx), SourceRx::Single(rx))
    };
    let driver = Driver {
        commit_queue: QueueRef::consumer(&consumer),
        polled_queue: QueueRef::polled(&consumer, settings.group_id.is_some()),
        records: rdkafka::consumer::Consumer::context(&*consumer).open_records(&consumer),
        consumer: Some(consumer),
        link: link.clone(),
        commands,
        output: Some(output),
        table: PartitionTable::default(),
        holds: RevocationHolds::new(revoke_timeout),
        pipeline: CommitPipeline::new(
            link.clone(),
            settings.get("client.id").as_deref().unwrap_or("rdkafka"),
            settings.group_id.as_deref(),
            settings.min_commit_interval,
        ),
        builder: RecordBuilder::new(settings.buffer_batches, settings.max_batch_bytes),
        scratch: MessageBuf::default(),
        rr: 0,
        phase: Phase::Running,
        drain: None,
        failure: None,
        buffer_batches: settings.buffer_batches,
        batch_size: BatchSize::new(settings.max_batch_records, settings.max_batch_bytes),
        wake_interval: settings.wake_interval,
        close_timeout: settings.close_timeout,
        connect_timeout: settings.connect_timeout,
        missing_topics: MissingTopics::new(
            settings.missing_topic_timeout,
            settings.get("allow.auto.create.topics").as_deref() == Some("true"),
        ),
        bootstrap: settings.bootstrap_servers.clone(),
        group_id: settings.group_id.clone(),
        max_pull_interval: settings.max_pull_interval,
        stalled: false,
        exporter: crate::export::Exporter::new(
            settings.get("client.id").as_deref().unwrap_or("rdkafka"),
            settings.group_id.as_deref(),
        ),
        next_export: std::time::Instant::now(),
        committable: config.committable,
        subscription: config.subscription,
    };
    if boot_tx.send(driver).is_err() {
        return Err(Error::closed("the consumer thread ended before it started"));
    }
    let handle = Arc::new(DriverHandle {
        link,
        close_timeout: config.settings.close_timeout,
    });
    Ok((handle, source_rx))
}
