//! A server-wide bound on the upload bytes held in memory. Segmentation uploads are received before a request asks
//! for a compute slot (admission bounds computations, not streams), so without this bound every open stream could
//! hold up to `max_upload_bytes` at once. Each request's [`UploadReservation`] grows as its bytes arrive and is given
//! back when the upload has been decoded (or the request ends); KServe tensor requests, which the transport receives
//! whole, hold their message size until their computation starts. A request whose next bytes would take the total past
//! `max_upload_memory_bytes` is refused with RESOURCE_EXHAUSTED, to be retried, instead of the server running out of
//! memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

use crate::error::ServeError;

/// The bound and the bytes held under it.
#[derive(Debug)]
pub struct UploadBudget {
    limit: u64,
    held: AtomicU64,
    gauge: Gauge,
}

impl UploadBudget {
    /// A budget of `limit` bytes; `gauge` follows the bytes held.
    pub fn new(limit: u64, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicU64::new(0),
            gauge,
        })
    }

    /// Bytes held by uploads now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// An empty reservation for one request.
    pub fn reservation(self: &Arc<Self>) -> UploadReservation {
        UploadReservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// One request's share of the budget; given back when dropped.
#[derive(Debug)]
pub struct UploadReservation {
    budget: Arc<UploadBudget>,
    bytes: u64,
}

impl UploadReservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Make the reservation at least `total` bytes, or refuse (RESOURCE_EXHAUSTED) when the other uploads in
    /// memory leave less than that; a refused growth holds nothing more.
    pub fn grow_to(&mut self, total: u64) -> Result<(), ServeError> {
        let Some(more) = total.checked_sub(self.bytes).filter(|&m| m > 0) else {
            return Ok(());
        };
        let b = &self.budget;
        let mut held = b.held.load(Ordering::SeqCst);
        loop {
            let next = held.saturating_add(more);
            if next > b.limit {
                return Err(ServeError::TooLarge(format!(
                    "server busy receiving uploads: {} of its {} bytes for uploads in memory are taken, this \
                     upload needs {total}; retry later (limit max_upload_memory_bytes)",
                    held - self.bytes.min(held),
                    b.limit
                )));
            }
            match b
                .held
                .compare_exchange_weak(held, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => held = now,
            }
        }
        self.bytes = total;
        b.gauge.inc_by(more as i64);
        Ok(())
    }
}

impl Drop for UploadReservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
            self.budget.gauge.dec_by(self.bytes as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_bound_and_give_back_on_drop() {
        let gauge = Gauge::default();
        let b = UploadBudget::new(100, gauge.clone());
        let mut a = b.reservation();
        let mut c = b.reservation();
        a.grow_to(60).unwrap();
        a.grow_to(40).unwrap(); // never shrinks
        assert_eq!((a.bytes(), b.held(), gauge.get()), (60, 60, 60));
        c.grow_to(40).unwrap();
        assert_eq!(b.held(), 100);
        // 41 would take the total to 101: refused, and nothing more is held.
        let e = c.grow_to(41).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        let msg = e.to_string();
        assert!(
            msg.contains("60 of its 100 bytes") && msg.contains("needs 41"),
            "{msg}"
        );
        assert_eq!((c.bytes(), b.held()), (40, 100));
        drop(a);
        assert_eq!((b.held(), gauge.get()), (40, 40));
        c.grow_to(100).unwrap();
        assert_eq!(b.held(), 100);
        drop(c);
        assert_eq!((b.held(), gauge.get()), (0, 0));
        // More than the whole budget is refused even on an idle server; u64 overflow is a refusal, not a wrap.
        let mut d = b.reservation();
        assert!(d.grow_to(101).is_err());
        d.grow_to(1).unwrap();
        let mut e2 = b.reservation();
        assert!(e2.grow_to(u64::MAX).is_err());
        assert_eq!(b.held(), 1);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_bound() {
        let b = UploadBudget::new(1000, Gauge::default());
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (b, peak) = (b.clone(), peak.clone());
                s.spawn(move || {
                    for i in 0..2000u64 {
                        let mut r = b.reservation();
                        for step in 1..=(i % 7 + 1) {
                            if r.grow_to(step * 50).is_err() {
                                break;
                            }
                            peak.fetch_max(b.held(), Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 1000);
        assert_eq!(b.held(), 0);
    }
}
