//! The history indexer's place in the CPU queue: below intake.
//!
//! Writing history rows into the indexed file is deferred work: nobody waits
//! for it, and history reads find unmoved rows in the queue file anyway. But
//! its index writes cost CPU, and at saturation every core is busy answering
//! webhooks: at normal priority the mover took that CPU from intake
//! (BENCHMARKS.md, "History recording"). So the thread that writes the index
//! runs as `SCHED_IDLE`: it gets the cores intake leaves free, and catches up
//! after a burst.
//!
//! That thread touches nothing intake needs: no lock and no snapshot of the
//! queue file (see [`super::mover`]). It never asks to leave `SCHED_IDLE`
//! either, which an unprivileged process may not do under the default
//! `RLIMIT_NICE`; past [`YIELD_UP_TO`] rows waiting, the mover's own thread,
//! at normal priority, writes them instead. Elsewhere than Linux, the
//! indexer runs at normal priority.

use std::io;

/// Rows waiting to be moved up to which their index writes yield to intake:
/// about 100 MB of unindexed rows, which a history read scans in well under
/// a second; at 40,000 history rows a second (20,000 webhooks a second, each
/// also a duplicate), a burst of 25 s.
pub(super) const YIELD_UP_TO: i64 = 1_000_000;

/// Schedules the calling thread only on CPU nothing else wants.
#[cfg(target_os = "linux")]
pub(super) fn make_current_thread_idle() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call;
    // pid 0 is the calling thread (Linux schedules threads, not processes),
    // and SCHED_IDLE needs neither a privilege nor a static priority.
    let status = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn make_current_thread_idle() -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_make_itself_idle() {
        std::thread::spawn(|| {
            // SAFETY: no arguments but the calling thread's pid 0.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
            make_current_thread_idle().expect("SCHED_IDLE needs no privilege");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .expect("the test thread ran");
    }
}
