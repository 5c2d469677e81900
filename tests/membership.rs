//! Several consumers of one group process records while members join and
//! leave: nothing is lost, and every record delivered twice was delivered in
//! two different assignments (a rebalance moved it), never twice in one.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer;
use reactive_kafka::{committer, CommitterSettings, Control, Subscription};
use support::*;

/// One delivery: record index, member, assignment generation in that member.
type Delivery = (usize, usize, u64);

struct Member {
    task: tokio::task::JoinHandle<reactive_kafka::Result<()>>,
    control: Control,
}

fn start_member(
    settings: reactive_kafka::ConsumerSettings,
    topic: &str,
    id: usize,
    log: Arc<Mutex<Vec<Delivery>>>,
) -> Member {
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic])).unwrap();
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        source
            .then(move |m| {
                let log = log.clone();
                n += 1;
                let pause = n % 200 == 0;
                async move {
                    let m = m?;
                    log.lock().unwrap().push((
                        key_index(m.record.key()),
                        id,
                        m.offset.generation(),
                    ));
                    // Some work, so the run spans the membership changes.
                    if pause {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Ok(m.offset)
                }
            })
            .forward(
                // The embedded broker refuses commits for as long as a
                // classic rebalance lasts, and with members coming and going
                // one can outlast the default 15 s commit timeout there.
                committer::sink(
                    CommitterSettings::default()
                        .max_interval(Duration::from_millis(500))
                        .commit_timeout(Duration::from_secs(60)),
                )
                .unwrap(),
            )
            .await
    });
    Member { task, control }
}

/// Stops a member cleanly: no new records, the committer commits what it
/// holds, then the consumer leaves the group.
async fn stop_member(member: Member) {
    member.control.stop().await.unwrap();
    member.task.await.unwrap().unwrap();
    member.control.shutdown().await.unwrap();
}

fn unique_count(log: &Mutex<Vec<Delivery>>) -> usize {
    let log = log.lock().unwrap();
    let mut seen = vec![false; log.iter().map(|d| d.0 + 1).max().unwrap_or(0)];
    log.iter().for_each(|d| seen[d.0] = true);
    seen.iter().filter(|s| **s).count()
}

async fn membership_changes_under_load(protocol: Protocol) {
    let partitions = 6;
    let (broker, topic) = broker_with_topic("members", partitions).await;
    let n = 100_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-members");
    let settings = group_settings(&broker, &group, protocol)
        .max_batch_records(200)
        .revoke_timeout(Duration::from_secs(20));
    let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();

    let mut next_id = 0;
    let mut members: Vec<Member> = Vec::new();
    for _ in 0..2 {
        members.push(start_member(settings.clone(), &topic, next_id, log.clone()));
        next_id += 1;
    }
    // Six changes, at fixed points of progress: join, leave, join, leave, ...
    let changes = 6;
    for change in 1..=changes {
        let target = n * change / (changes + 2);
        wait_until(
            &format!("{protocol:?}: progress to {target} before change {change}"),
            Duration::from_secs(120),
            || unique_count(&log) >= target,
        )
        .await;
        if change % 2 == 1 {
            members.push(start_member(settings.clone(), &topic, next_id, log.clone()));
            next_id += 1;
        } else {
            stop_member(members.remove(0)).await;
        }
    }
    wait_until(
        &format!("{protocol:?}: every record consumed"),
        Duration::from_secs(120),
        || unique_count(&log) == n,
    )
    .await;
    let revocations: u64 = members
        .iter()
        .map(|m| m.control.metrics().revocations)
        .sum();
    for m in members {
        stop_member(m).await;
    }

    let log = log.lock().unwrap();
    let mut by_record: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
    for (record, member, generation) in log.iter() {
        by_record
            .entry(*record)
            .or_default()
            .push((*member, *generation));
    }
    assert_eq!(by_record.len(), n, "records lost");
    let mut duplicates = 0;
    let mut by_partition = std::collections::BTreeMap::new();
    for (record, assignments) in &by_record {
        duplicates += assignments.len() - 1;
        if assignments.len() > 1 {
            // Record i was produced to partition i % partitions.
            *by_partition
                .entry(*record % partitions as usize)
                .or_insert(0usize) += assignments.len() - 1;
        }
        let mut distinct = assignments.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            assignments.len(),
            "record {record} delivered twice within one assignment: {assignments:?}"
        );
    }
    let real_broker = std::env::var_os("KAFKA_BOOTSTRAP_SERVERS").is_some();
    println!(
        "protocol={protocol:?} broker={} records={n} deliveries={} duplicates={duplicates} duplicates_by_partition={by_partition:?} membership_changes={changes} members={next_id} revocations_in_last_members={revocations}",
        if real_broker { "kafka" } else { "embedded" },
        log.len()
    );
    // Members leave cleanly and revocations wait for commits, so nothing is
    // read twice where the broker accepts commits while a rebalance waits
    // for this member: Apache Kafka, with every protocol, and the embedded
    // broker with the consumer protocol. (The embedded broker refuses
    // commits during a classic rebalance; the revocation is then released
    // and the next owner reads the uncommitted records again.)
    if real_broker || protocol == Protocol::Consumer {
        assert_eq!(duplicates, 0, "records delivered again: {by_partition:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_lose_nothing_with_the_eager_classic_protocol() {
    membership_changes_under_load(Protocol::Eager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_lose_nothing_with_cooperative_sticky() {
    membership_changes_under_load(Protocol::Cooperative).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_lose_nothing_with_the_consumer_protocol() {
    membership_changes_under_load(Protocol::Consumer).await;
}
