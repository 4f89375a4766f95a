//! Key wakers: a `Waker` whose data is a number (a slab key), not a pointer, so making,
//! cloning and dropping one allocates and frees nothing.
//!
//! Owns: the `RawWakerVTable` behind such wakers and the one `unsafe` call that builds them.
//! What waking does is the user's [`KeyWake`] implementation, a plain safe function.
//! Must not: dereference the data pointer (it is a key cast to a pointer) or allocate.

use std::task::{RawWaker, RawWakerVTable, Waker};

/// What waking a key waker of kind `Self` does with its key.
pub trait KeyWake: 'static {
    fn wake(key: usize);
}

/// A waker that calls `W::wake(key)` when woken (by value or by reference).
pub fn key_waker<W: KeyWake>(key: usize) -> Waker {
    // Clone copies the key, drop has nothing to free, and wake calls a safe function with it:
    // no shared memory is touched through the pointer, so the waker is as thread-safe as
    // `W::wake`, which is safe Rust.
    // SAFETY: the vtable's functions never dereference the data pointer (it is `key`, cast).
    unsafe { Waker::from_raw(raw::<W>(key)) }
}

fn raw<W: KeyWake>(key: usize) -> RawWaker {
    RawWaker::new(key as *const (), vtable::<W>())
}

/// One vtable per kind of key waker (`RawWakerVTable::new` is promotable, so this is static).
fn vtable<W: KeyWake>() -> &'static RawWakerVTable {
    &RawWakerVTable::new(clone::<W>, wake::<W>, wake::<W>, drop)
}

/// Clones a key waker: the key is copied.
///
/// # Safety
///
/// Called only by `Waker` through the vtable of [`key_waker`]. `p` is never dereferenced, so
/// any value is sound.
unsafe fn clone<W: KeyWake>(p: *const ()) -> RawWaker {
    raw::<W>(p as usize)
}

/// Wakes a key waker (by value or by reference): `W::wake(key)`.
///
/// # Safety
///
/// Called only by `Waker` through the vtable of [`key_waker`]. `p` is never dereferenced, so
/// any value is sound.
unsafe fn wake<W: KeyWake>(p: *const ()) {
    W::wake(p as usize)
}

/// Drops a key waker: there is nothing to free.
///
/// # Safety
///
/// Called only by `Waker` through the vtable of [`key_waker`]; the argument is never used.
unsafe fn drop(_: *const ()) {}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        static WOKEN: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }

    struct Record;

    impl KeyWake for Record {
        fn wake(key: usize) {
            WOKEN.with(|w| w.borrow_mut().push(key));
        }
    }

    #[test]
    fn a_key_waker_wakes_with_its_key_through_clones() {
        let w = key_waker::<Record>(7);
        let c = w.clone();
        assert!(w.will_wake(&c));
        assert!(!w.will_wake(&key_waker::<Record>(8)));
        w.wake_by_ref();
        c.wake();
        w.wake();
        key_waker::<Record>(usize::MAX).wake();
        WOKEN.with(|k| assert_eq!(*k.borrow(), [7, 7, 7, usize::MAX]));
    }
}
