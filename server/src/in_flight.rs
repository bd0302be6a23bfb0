//! The service-wide cap on generation requests in flight, reserved
//! atomically so concurrent admissions never overshoot it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Generation requests in flight across all models of a service.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
}

/// One admitted request's place under the cap; dropping it gives the place back.
#[derive(Debug)]
pub struct InFlightPermit {
    count: Arc<AtomicUsize>,
}

impl InFlight {
    /// A place for one more request, if fewer than `limit` hold one.
    pub fn try_acquire(&self, limit: usize) -> Option<InFlightPermit> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightPermit {
                count: self.count.clone(),
            })
    }

    /// Places held now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_given_back_on_drop() {
        let f = InFlight::default();
        let a = f.try_acquire(2).expect("first");
        let b = f.try_acquire(2).expect("second");
        assert!(f.try_acquire(2).is_none());
        assert_eq!(f.current(), 2);
        drop(a);
        let c = f.try_acquire(2).expect("freed place");
        drop((b, c));
        assert_eq!(f.current(), 0);
        assert!(f.try_acquire(0).is_none());
    }

    #[test]
    fn concurrent_admissions_never_overshoot() {
        let f = InFlight::default();
        let limit = 5;
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (f, barrier) = (f.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..1000)
                        .filter_map(|_| f.try_acquire(limit))
                        .take(1)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let held: Vec<InFlightPermit> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(held.len(), limit);
        assert_eq!(f.current(), limit);
        drop(held);
        assert_eq!(f.current(), 0);
    }
}
