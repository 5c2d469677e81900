//! A thread that finishes closing clients dropped without a shutdown.
//! Flushing or destroying a librdkafka client blocks, so `Drop` hands the
//! client here instead of blocking (or spawning) where it was dropped.

use std::sync::mpsc;
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

fn reaper() -> &'static mpsc::Sender<Job> {
    static REAPER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("reactive-kafka-reaper".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("could not start the reactive-kafka reaper thread");
        tx
    })
}

/// Starts the reaper if it is not running yet. Called by constructors, so
/// that `Drop` never starts a thread.
pub(crate) fn ensure_started() {
    let _ = reaper();
}

/// Runs `job` on the reaper thread. Never blocks.
pub(crate) fn submit(job: impl FnOnce() + Send + 'static) {
    let _ = reaper().send(Box::new(job));
}
