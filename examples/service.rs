//! A consume-transform-produce service an operator can watch: Prometheus
//! `/metrics`, a `/health` endpoint, graceful shutdown on SIGTERM.
//!
//! Orders are read from an input topic, upper-cased, written to an output
//! topic, and each input offset is committed once its output record was
//! delivered (`producer::committable_sink`). The crate's figures (feature
//! `metrics`) go to a Prometheus recorder; `/metrics` renders them, and
//! `/health` answers from `Control::health` (200 while the consumer runs
//! and polls, 503 otherwise). SIGTERM (or Ctrl-C) drains the pipeline:
//! in-flight records are delivered and committed, then the consumer closes.
//!
//! ```text
//! cargo run --release --features metrics --example service                 # checks itself, embedded broker
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release --features metrics --example service
//! cargo run --release --features metrics --example service -- --serve      # serves on 127.0.0.1:9898 until SIGTERM
//! ```
//!
//! Without `--serve` it checks itself: it produces 2,000 orders, scrapes its
//! own `/metrics` until the figures show them consumed, produced and
//! committed with lag 0, reads `/health`, sends itself SIGTERM and exits 0
//! once the drain committed everything.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use reactive_kafka::consumer::DrainingControl;
use reactive_kafka::producer::{self, Envelope};
use reactive_kafka::testkit::{unique_name, TestBroker};
use reactive_kafka::{
    consumer, AutoOffsetReset, CommitterSettings, ConsumerSettings, Control, ProducerRecord,
    ProducerSettings, Subscription,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ORDERS: usize = 2_000;
const CLIENT_ID: &str = "order-service";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(std::env::args().any(|a| a == "--serve")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(serve: bool) -> Result<(), BoxError> {
    // Gauges not updated for a minute (a revoked partition's lag) leave the output.
    let prometheus = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(60)))
        .install_recorder()?;

    let broker = TestBroker::start().await?;
    let brokers = broker.bootstrap_servers().to_owned();
    let (input, output) = (unique_name("orders"), unique_name("orders-upper"));
    broker.create_topic(&input, 2).await?;
    broker.create_topic(&output, 2).await?;

    let settings = ConsumerSettings::new(&brokers)
        .group_id(unique_name("order-service"))
        .client_id(CLIENT_ID)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        // Lag per partition comes from librdkafka's statistics.
        .property("statistics.interval.ms", "1000")
        // Warn (and count a stall) when records wait 30 s for the stream.
        .max_pull_interval(Duration::from_secs(30), false);
    let (source, control) = consumer::committable_source(settings, Subscription::topics([&input]))?;
    let sink = producer::committable_sink(
        ProducerSettings::new(&brokers).client_id(CLIENT_ID),
        CommitterSettings::default(),
    )?;
    let to = output.clone();
    let pipeline = DrainingControl::spawn(
        control.clone(),
        source
            .map(move |m| {
                let m = m?;
                let upper = m.record.payload().unwrap_or_default().to_ascii_uppercase();
                let record = ProducerRecord::new(to.as_str()).payload(upper);
                let record = match m.record.key_bytes() {
                    Some(key) => record.key(key),
                    None => record,
                };
                Ok(Envelope::message(record, m.offset))
            })
            .forward(sink),
    );

    let address = if serve {
        "127.0.0.1:9898"
    } else {
        "127.0.0.1:0"
    };
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    println!("serving http://{address}/metrics and http://{address}/health");
    tokio::spawn(serve_http(listener, prometheus, control.clone()));

    let check = (!serve).then(|| tokio::spawn(check_itself(brokers, input, address)));

    // Graceful shutdown: SIGTERM or Ctrl-C drains the pipeline.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => println!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => println!("Ctrl-C: draining"),
    }
    let drained = pipeline.drain_and_shutdown(Duration::from_secs(30)).await?;
    println!(
        "drained: complete {}, committed {:?}",
        drained.report.complete, drained.report.committed
    );
    if let Some(check) = check {
        check.await??;
        if !drained.report.complete {
            return Err("the drain left offsets uncommitted".into());
        }
        println!("ok: service checked itself");
    }
    Ok(())
}

/// Serves `/metrics` and `/health` until the process ends: one request per
/// connection, HTTP/1.1 `Connection: close`.
async fn serve_http(listener: TcpListener, prometheus: PrometheusHandle, control: Control) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (prometheus, control) = (prometheus.clone(), control.clone());
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request))
                .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&request[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, kind, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", prometheus.render()),
                "/health" => health(&control),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// 200 while the consumer runs and its thread polled within 10 s; 503 otherwise.
fn health(control: &Control) -> (&'static str, &'static str, String) {
    let h = control.health();
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let healthy = h.running && h.since_polled.is_some_and(|d| d < Duration::from_secs(10));
    let body = serde_json::json!({
        "healthy": healthy,
        "running": h.running,
        "assigned_partitions": h.assigned_partitions,
        "since_pulled_ms": ms(h.since_pulled),
        "since_polled_ms": ms(h.since_polled),
        "since_committed_ms": ms(h.since_committed),
        "stalls": h.stalls,
        "last_error": h.last_error.map(|e| e.to_string()),
    });
    let status = if healthy {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    (status, "application/json", format!("{body}\n"))
}

/// GETs `path` from the service: the status line and the body.
async fn get(address: std::net::SocketAddr, path: &str) -> Result<(String, String), BoxError> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// The values of `name`'s series for this service's client id.
fn series<'a>(metrics: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(&format!("messaging_client_id=\"{CLIENT_ID}\"")))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// Produces the orders, waits for `/metrics` to show them through, reads
/// `/health`, then sends this process SIGTERM.
async fn check_itself(
    brokers: String,
    input: String,
    address: std::net::SocketAddr,
) -> Result<(), BoxError> {
    let mut sink = producer::plain_sink(ProducerSettings::new(&brokers))?;
    for i in 0..ORDERS {
        sink.feed(
            ProducerRecord::new(input.as_str())
                .key(format!("order-{i}"))
                .payload(format!("order {i}: two apples")),
        )
        .await?;
    }
    sink.close().await?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let (status, metrics) = get(address, "/metrics").await?;
        if !status.contains("200") {
            return Err(format!("/metrics answered {status}").into());
        }
        let total = |name| series(&metrics, name).iter().map(|(_, v)| *v).sum::<f64>();
        let consumed = total("messaging_client_consumed_messages");
        let sent = total("messaging_client_sent_messages");
        let committed = total("messaging_kafka_consumer_offsets_committed");
        let lag = series(&metrics, "messaging_kafka_consumer_lag");
        let caught_up = lag.len() == 2 && lag.iter().all(|(_, v)| *v == 0.0);
        // Each delivery's duration is one sample of the send histogram.
        let timed = series(&metrics, "messaging_client_operation_duration_count")
            .iter()
            .filter(|(labels, _)| labels.contains("messaging_operation_name=\"send\""))
            .map(|(_, v)| *v)
            .sum::<f64>();
        if consumed == ORDERS as f64
            && sent == ORDERS as f64
            && timed == ORDERS as f64
            && committed > 0.0
            && caught_up
        {
            break metrics;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after 60 s: consumed {consumed}, sent {sent} ({timed} timed), offsets committed {committed}, lag {lag:?}\n{metrics}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("--- /metrics (this client's series):");
    for line in metrics
        .lines()
        .filter(|l| l.contains(&format!("messaging_client_id=\"{CLIENT_ID}\"")))
    {
        println!("{line}");
    }
    let (status, body) = get(address, "/health").await?;
    println!("--- /health: {status}\n{body}");
    let health: serde_json::Value = serde_json::from_str(&body)?;
    if !status.contains("200") || health["assigned_partitions"] != 2 || health["stalls"] != 0 {
        return Err(format!("unhealthy: {status} {body}").into());
    }
    // What an orchestrator does to stop the service.
    // SAFETY: raising a signal this process handles.
    unsafe { libc::raise(libc::SIGTERM) };
    Ok(())
}
