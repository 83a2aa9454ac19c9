//! The one crossing between tokio's async workers and blocking code (see "The runtime rule"
//! in the crate's documentation): every `spawn_blocking`, `block_on`, `block_in_place` and
//! `Handle::current` of the engine is here, so where the engine crosses is visible in one
//! place.
//!
//! - [`blocking`]: async code hands blocking work (a `Source`, a `Target`, the cache, CPU
//!   work) to a blocking thread and awaits it; a panicked task is an [`Error::Bug`].
//! - [`handle`]: the runtime that blocking code will wait on, taken while still in async code.
//! - [`wait`]: blocking code awaits the store (or a semaphore) through that handle.
//! - [`in_place`]: async code runs blocking code on its own worker, telling tokio to move
//!   the worker's other tasks elsewhere meanwhile.
//!
//! [`Error::Bug`]: crate::Error::Bug

use std::future::Future;

use tokio::runtime::Handle;

use crate::error::{Joined, Result};

/// Runs `f` on a blocking thread; `what` names it when it panicked. The task is spawned at
/// once, when this is called (as `spawn_blocking` does), not when the result is first
/// awaited: work started before other awaits runs beside them.
pub(crate) fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T>> {
    let task = tokio::task::spawn_blocking(f);
    async move { task.await.joined(what) }
}

/// The runtime this is called from, for blocking code to [`wait`] on. Call from within the
/// runtime (async code, or a thread it spawned).
pub(crate) fn handle() -> Handle {
    Handle::current()
}

/// Waits for `future` on `rt` from blocking code (a blocking thread, or code under
/// [`in_place`]); never from an async task.
pub(crate) fn wait<F: Future>(rt: &Handle, future: F) -> F::Output {
    rt.block_on(future)
}

/// Runs blocking `f` on this async worker (the multi-threaded runtime moves its other tasks
/// meanwhile), for blocking code that borrows from the caller.
pub(crate) fn in_place<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panicked_blocking_task_is_a_bug_named_by_what_it_did() {
        let e = blocking("the test worker", || -> u32 { panic!("boom") })
            .await
            .expect_err("panicked");
        assert_eq!(e.kind(), ErrorKind::Bug);
        assert!(e.to_string().contains("the test worker"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn blocking_code_waits_on_the_runtime() {
        let rt = handle();
        let got = blocking("the test worker", move || wait(&rt, async { 7 }))
            .await
            .expect("joined");
        assert_eq!(got, 7);
        let rt = handle();
        assert_eq!(in_place(|| wait(&rt, async { 8 })), 8);
    }
}
