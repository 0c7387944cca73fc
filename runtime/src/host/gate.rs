//! The key-value gate of a plugin: an invocation takes it at its first key-value call and holds
//! it until its commit is submitted (the caller drops the [`KvGuard`] then), so invocations of one
//! plugin that touch its state run one after another and commit in that order: the state is
//! serializable without guest locks, while invocations that never touch it run in parallel.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// One plugin's gate, shared by its instances and by all its versions (their state is the
/// same).
#[derive(Debug, Default)]
pub struct KvGate {
    held: Mutex<bool>,
    released: Condvar,
}

impl KvGate {
    /// Blocks until the gate is free and takes it.
    pub fn acquire(self: &Arc<Self>) -> KvGuard {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while *held {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *held = true;
        KvGuard(Arc::clone(self))
    }
}

/// The gate, held; released on drop.
#[derive(Debug)]
pub struct KvGuard(Arc<KvGate>);

impl Drop for KvGuard {
    fn drop(&mut self) {
        *self.0.held.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.0.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let gate = Arc::new(KvGate::default());
        let count = Arc::new(Mutex::new((0u32, 0u32))); // (inside, most inside at once)
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _g = gate.acquire();
                        let mut c = count.lock().unwrap();
                        c.0 += 1;
                        c.1 = c.1.max(c.0);
                        drop(c);
                        std::thread::yield_now();
                        count.lock().unwrap().0 -= 1;
                    }
                });
            }
        });
        assert_eq!(*count.lock().unwrap(), (0, 1));
    }
}
