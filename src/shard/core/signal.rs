//! A one-shot, shard-local event that any number of tasks can wait for (drain).
//!
//! Owns: the waiters' wakers in a slab; a waiting future removes its entry when dropped, so a
//! task that waits in a `select!` many times never grows the list.
//! Must not: cross threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Signal {
    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: self,
            key: None,
        }
    }
}

pub struct Wait<'a> {
    signal: &'a Signal,
    key: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut w = self.signal.waiters.borrow_mut();
        match self.key {
            Some(k) if w.contains(k) => w[k].clone_from(cx.waker()),
            _ => {
                let k = w.insert(cx.waker().clone());
                drop(w);
                self.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.signal.waiters.borrow_mut().try_remove(k);
        }
    }
}
