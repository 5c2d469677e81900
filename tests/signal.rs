//! `shutdown_signal` hears SIGTERM, the signal a container orchestrator sends.

#![cfg(unix)]

use std::time::Duration;

use reactive_kafka::consumer::shutdown_signal;

#[tokio::test]
async fn shutdown_signal_resolves_on_sigterm() {
    // Install a SIGTERM handler first, so the signal can never end the test
    // process whatever the order below.
    let mut guard =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let waiting = tokio::spawn(shutdown_signal());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "resolved without a signal");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("shutdown_signal resolved on SIGTERM")
        .unwrap();
    guard.recv().await;
}
