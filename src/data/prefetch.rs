//! Ordered prefetch: worker threads build items `0..n` ahead of a consumer, never more than
//! `window` items ahead of it, and the consumer receives them in index order.
//!
//! What an item holds must depend only on its index (the loaders derive every random draw from
//! the index), so the stream is the same for any number of workers; workers only decide *when*
//! an item is built. The detector loader and the pretraining loaders both run on this.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

struct Shared {
    next: AtomicUsize,
    consumed: Mutex<usize>,
    window: Condvar,
    stop: AtomicBool,
}

impl Shared {
    /// Block until item `i` is within `window` of the consumer; false when stopped.
    fn wait_for_room(&self, i: usize, window: usize) -> bool {
        let mut consumed = self.consumed.lock().unwrap_or_else(|e| e.into_inner());
        while i >= *consumed + window && !self.stop.load(Ordering::SeqCst) {
            consumed = self
                .window
                .wait(consumed)
                .unwrap_or_else(|e| e.into_inner());
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

/// Items `0..n` in order, built by worker threads (see the module docs). Dropping it stops the
/// workers and joins them.
pub struct Prefetch<T> {
    rx: mpsc::Receiver<(usize, Option<T>)>,
    handles: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    pending: BTreeMap<usize, T>,
    next: usize,
    n: usize,
    /// A worker panicked while building an item: the stream ended early.
    failed: bool,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Start `workers` threads (at least one) building `build(i)` for `i` in `0..n`, at most
    /// `window` (at least 1) items ahead of the consumer.
    pub fn start<F>(n: usize, workers: usize, window: usize, build: F) -> Prefetch<T>
    where
        F: Fn(usize) -> T + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            next: AtomicUsize::new(0),
            consumed: Mutex::new(0),
            window: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let build = Arc::new(build);
        let window = window.max(1);
        let handles = (0..workers.max(1))
            .map(|_| {
                let (shared, tx, build) = (shared.clone(), tx.clone(), build.clone());
                std::thread::spawn(move || loop {
                    let i = shared.next.fetch_add(1, Ordering::SeqCst);
                    if i >= n || !shared.wait_for_room(i, window) {
                        return;
                    }
                    // A panic in one item ends the stream for the consumer (rather than leaving
                    // it waiting for an item that never comes).
                    let item = catch_unwind(AssertUnwindSafe(|| build(i))).ok();
                    let panicked = item.is_none();
                    if tx.send((i, item)).is_err() || panicked {
                        return;
                    }
                })
            })
            .collect();
        Prefetch {
            rx,
            handles,
            shared,
            pending: BTreeMap::new(),
            next: 0,
            n,
            failed: false,
        }
    }
}

impl<T> Prefetch<T> {
    /// True when a worker panicked and the stream ended before `n` items.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next >= self.n || self.failed {
            return None;
        }
        let item = loop {
            if let Some(got) = self.pending.remove(&self.next) {
                break got;
            }
            match self.rx.recv() {
                Ok((i, Some(item))) => {
                    self.pending.insert(i, item);
                }
                Ok((_, None)) | Err(_) => {
                    self.failed = true;
                    return None;
                }
            }
        };
        self.next += 1;
        *self
            .shared
            .consumed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.next;
        self.shared.window.notify_all();
        Some(item)
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.window.notify_all();
        // Drain so that no worker blocks on a send, then join them.
        while self.rx.try_recv().is_ok() {}
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_for_any_worker_count() {
        for workers in [1, 2, 5] {
            let got: Vec<usize> = Prefetch::start(23, workers, 3, |i| i * i).collect();
            assert_eq!(got, (0..23).map(|i| i * i).collect::<Vec<_>>());
        }
    }

    #[test]
    fn workers_stay_within_the_window() {
        let built = Arc::new(AtomicUsize::new(0));
        let counter = built.clone();
        let mut p = Prefetch::start(100, 4, 2, move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            i
        });
        assert_eq!(p.next(), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Consumed 1: items 1 and 2 may be built, not item 3 or later.
        assert!(
            built.load(Ordering::SeqCst) <= 3,
            "{}",
            built.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn a_panicking_item_ends_the_stream_instead_of_hanging() {
        let mut p = Prefetch::start(10, 2, 2, |i| {
            if i == 3 {
                panic!("item 3 breaks");
            }
            i
        });
        let got: Vec<usize> = p.by_ref().collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(p.failed());
    }
}
