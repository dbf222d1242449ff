//! Compressor state kept per thread and reused: the remedy for what a fresh compressor per
//! response costs. A DEFLATE compressor holds ~270 KiB of tables; allocated per response and
//! freed after it, the allocator hands that memory back to the kernel often enough (glibc
//! trims its heap when the top chunk grows past 128 KiB) that a 2 KiB gzip response took
//! ~40 page faults and a third of the throughput. Reset in place, the same tables serve the
//! thread's next response: no allocation, no fault.
//!
//! The pool is per thread (no lock, no atomics on the request path) and bounded: a thread
//! keeps at most [`MAX_IDLE`] idle compressors; more in flight at once are made and dropped
//! as before. A body dropped on another thread than it was made on gives its compressor to
//! that thread's pool.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Idle compressors one thread keeps, per kind (DEFLATE, zstd): enough for the responses a
/// worker thread streams at once in a typical API, ~1 MiB of tables at most per thread.
pub(crate) const MAX_IDLE: usize = 4;

/// A thread's idle compressors of one kind, each with the setting it was made for.
pub(crate) type Idle<T> = RefCell<Vec<(<T as Reusable>::Setting, T)>>;

/// Compressor state that can be made for a setting and reset to a fresh stream.
pub(crate) trait Reusable: Sized + 'static {
    /// What a compressor is made for (its level, its framing): only a compressor made for the
    /// same setting is reused.
    type Setting: Copy + PartialEq + 'static;

    /// This kind's idle compressors on the current thread.
    fn idle() -> &'static LocalKey<Idle<Self>>;

    /// A fresh compressor, or `None` if the codec could not make one (out of memory in C).
    fn make(setting: Self::Setting) -> Option<Self>;

    /// Back to the start of a new stream; `false` if it could not be (then it is dropped).
    fn reset(&mut self) -> bool;
}

/// A compressor taken from the thread's pool (or made), given back when dropped.
pub(crate) struct Pooled<T: Reusable> {
    setting: T::Setting,
    state: Option<T>,
}

impl<T: Reusable> Pooled<T> {
    /// An idle compressor for `setting` from this thread's pool, or a new one.
    pub(crate) fn take(setting: T::Setting) -> Option<Self> {
        let reused = T::idle()
            .try_with(|idle| {
                let mut idle = idle.try_borrow_mut().ok()?;
                let at = idle.iter().rposition(|(s, _)| *s == setting)?;
                Some(idle.swap_remove(at).1)
            })
            .ok()
            .flatten();
        let state = match reused {
            Some(state) => state,
            None => T::make(setting)?,
        };
        Some(Self {
            setting,
            state: Some(state),
        })
    }

    /// The compressor (always there until the drop).
    pub(crate) fn get(&mut self) -> Option<&mut T> {
        self.state.as_mut()
    }
}

impl<T: Reusable> Drop for Pooled<T> {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        // Reset now, not when taken: the next response starts at once, and a compressor
        // dropped mid-stream (its client gone) is never handed on dirty.
        if !state.reset() {
            return;
        }
        let setting = self.setting;
        // During thread teardown the pool may be gone: then the state is simply dropped.
        let _ = T::idle().try_with(|idle| {
            if let Ok(mut idle) = idle.try_borrow_mut() {
                if idle.len() < MAX_IDLE {
                    idle.push((setting, state));
                }
            }
        });
    }
}

impl<T: Reusable> std::fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled").finish_non_exhaustive()
    }
}

/// How many idle compressors of `T` the current thread holds (for tests).
#[cfg(test)]
pub(crate) fn idle_count<T: Reusable>() -> usize {
    T::idle().with(|idle| idle.borrow().len())
}
