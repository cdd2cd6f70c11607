//! One lifecycle for everything async in turnd: a single tokio runtime runs
//! the TCP/TLS accept loops and connections, the page, the operator
//! endpoints and the signal handling; one cancellation token stops all of
//! it and one task tracker waits for it. The mio relay workers are not
//! tasks: they watch the same token through [`Tasks::on_cancel`], which
//! wakes them.
//!
//! The runtime is driven by a thread of its own, so a [`Lifecycle`] can be
//! stopped from anywhere (an async test included) and its tasks keep
//! running while the main thread blocks on something else.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long tasks get to end once cancelled before the runtime drops them.
const GRACE: Duration = Duration::from_secs(1);

/// Spawns tasks that end when turnd stops. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tasks {
    handle: Handle,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// Runs `f` until it ends or turnd stops, whichever comes first (a
    /// cancelled task is dropped at its next await: its sockets close).
    pub fn spawn<F>(&self, f: F)
    where
        F: Future + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn_on(
            async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = f => {}
                }
            },
            &self.handle,
        );
    }

    /// Calls `f` once, when turnd stops (on the runtime: `f` must not block
    /// for long).
    pub fn on_cancel(&self, f: impl FnOnce() + Send + 'static) {
        let token = self.token.clone();
        self.tracker.spawn_on(
            async move {
                token.cancelled().await;
                f();
            },
            &self.handle,
        );
    }

    /// Resolves once turnd is stopping.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Whether turnd is stopping.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The runtime, to enter (tokio sockets are made inside it) or to
    /// block on from a thread outside it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// The runtime and its thread; stops everything on [`Lifecycle::stop`] or
/// drop.
pub struct Lifecycle {
    tasks: Tasks,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lifecycle {
    /// A runtime with `threads` worker threads.
    pub fn start(threads: usize) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("turnd-async")
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let tasks = Tasks {
            handle: rt.handle().clone(),
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let (token, tracker) = (tasks.token.clone(), tasks.tracker.clone());
        let thread = std::thread::Builder::new()
            .name("turnd-lifecycle".into())
            .spawn(move || {
                rt.block_on(async {
                    token.cancelled().await;
                    tracker.close();
                    if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
                        tracing::debug!(left = tracker.len(), "tasks still running at shutdown: dropped");
                    }
                });
                rt.shutdown_timeout(GRACE);
            })
            .context("cannot start the runtime's thread")?;
        Ok(Self {
            tasks,
            thread: Some(thread),
        })
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Cancels every task (and so wakes the relay workers), waits for them
    /// to end (at most a second) and stops the runtime.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tasks.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
