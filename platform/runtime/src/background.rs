//! Work a service runs beside its HTTP server (outbox relay, consumers, projections, key reload),
//! started together with the server and stopped by the same shutdown token.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Task = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Background tasks, each a loop that returns once its token is cancelled.
#[derive(Default)]
pub struct Background {
    tasks: Vec<(&'static str, Task)>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tasks.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Background").field("tasks", &names).finish()
    }
}

/// Running background tasks.
#[derive(Debug)]
pub struct Running {
    set: JoinSet<()>,
}

impl Background {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task; `run` gets the shutdown token and must return soon after it is cancelled.
    pub fn add<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push((name, Box::new(move |token| Box::pin(run(token)))));
    }

    /// Starts every task.
    #[must_use]
    pub fn spawn(self, shutdown: &CancellationToken) -> Running {
        let mut set = JoinSet::new();
        for (name, task) in self.tasks {
            let token = shutdown.child_token();
            set.spawn(async move {
                task(token).await;
                tracing::debug!(task = name, "background task stopped");
            });
        }
        Running { set }
    }
}

impl Running {
    /// Waits up to `grace` for the tasks to return after shutdown, then aborts the rest.
    pub async fn stop(mut self, grace: Duration) {
        let drained =
            tokio::time::timeout(grace, async { while self.set.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("background tasks still running after the grace period; aborting them");
            self.set.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn tasks_run_until_shutdown_and_then_stop() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut background = Background::new();
        for _ in 0..3 {
            let stopped = Arc::clone(&stopped);
            background.add("loop", move |token| async move {
                token.cancelled().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            });
        }
        let shutdown = CancellationToken::new();
        let running = background.spawn(&shutdown);
        shutdown.cancel();
        running.stop(Duration::from_secs(5)).await;
        assert_eq!(stopped.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_shutdown_is_aborted_after_the_grace() {
        let mut background = Background::new();
        background.add("stubborn", |_token| std::future::pending());
        let shutdown = CancellationToken::new();
        let running = background.spawn(&shutdown);
        shutdown.cancel();
        running.stop(Duration::from_secs(1)).await;
    }
}
