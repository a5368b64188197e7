//! Admission control: at most `max_concurrent` requests compute at once, up to `max_queue` more wait in FIFO order
//! (tokio's semaphore is fair), and anything beyond is refused at once with RESOURCE_EXHAUSTED.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Metrics;
use crate::error::ServeError;

/// The shared gate every compute request passes.
pub struct Admission {
    sem: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue: usize,
    queued: AtomicUsize,
    running: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// Held while a request computes; releases its slot on drop.
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    running: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = self
            .running
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.metrics.in_flight.set(now as i64);
    }
}

impl Admission {
    /// A gate with these limits (`max_concurrent` ≥ 1).
    pub fn new(max_concurrent: usize, max_queue: usize, metrics: Arc<Metrics>) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            sem: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_queue,
            queued: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    fn granted(&self, permit: OwnedSemaphorePermit) -> Permit {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.metrics.in_flight.set(now as i64);
        Permit {
            _permit: permit,
            running: self.running.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Take a compute slot, waiting in the queue if there is room, else fail with `Busy`.
    pub async fn acquire(&self) -> Result<Permit, ServeError> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Ok(self.granted(p));
        }
        let joined = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < self.max_queue).then_some(q + 1)
            });
        let Ok(before) = joined else {
            return Err(ServeError::Busy {
                in_flight: self.running.load(Ordering::SeqCst),
                queued: self.queued.load(Ordering::SeqCst),
                max_concurrent: self.max_concurrent,
                max_queue: self.max_queue,
            });
        };
        self.metrics.queue_depth.set((before + 1) as i64);
        // Leaving the queue is recorded even if the waiting future is dropped (client cancelled).
        let _leave = QueueGuard {
            queued: &self.queued,
            metrics: &self.metrics,
        };
        let p = self
            .sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServeError::Internal("admission semaphore closed".into()))?;
        Ok(self.granted(p))
    }
}

struct QueueGuard<'a> {
    queued: &'a AtomicUsize,
    metrics: &'a Metrics,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        let now = self.queued.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        self.metrics.queue_depth.set(now as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn queue_then_refuse() {
        let m = Arc::new(Metrics::new());
        let a = Arc::new(Admission::new(1, 1, m.clone()));
        let first = a.acquire().await.unwrap();
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(m.queue_depth.get(), 1);
        let e = a.acquire().await.err().unwrap();
        assert!(
            matches!(
                e,
                ServeError::Busy {
                    in_flight: 1,
                    queued: 1,
                    ..
                }
            ),
            "{e}"
        );
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(m.queue_depth.get(), 0);
        assert_eq!(m.in_flight.get(), 0);
        let _again = a.acquire().await.unwrap();
        assert_eq!(m.in_flight.get(), 1);
    }
}
