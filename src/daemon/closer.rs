//! Closing what callers passed, off the serving path. The last close of a TCP socket with
//! SO_LINGER waits for its send queue (tcp(7)); a caller could make the daemon's close of its
//! descriptor block for as long as it likes. Every received descriptor and connection is closed on
//! one closer thread instead, and a watchdog interrupts a close that takes longer than
//! `STUCK_AFTER` with a signal (the linger wait ends on a pending signal), so closes never pile
//! up. Does I/O (threads, signals).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A close running longer than this is interrupted.
pub const STUCK_AFTER: Duration = Duration::from_millis(50);

/// The signal that interrupts a stuck close (a no-op handler, installed without SA_RESTART).
const WAKE: libc::c_int = libc::SIGUSR1;

extern "C" fn nothing(_: libc::c_int) {}

/// The closer thread's inbox.
pub struct Closer {
    tx: mpsc::Sender<Box<dyn Send>>,
}

impl Closer {
    pub fn start() -> std::io::Result<Closer> {
        // SAFETY: installing a handler that does nothing, for WAKE only.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            if libc::sigaction(WAKE, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let (tx, rx) = mpsc::channel::<Box<dyn Send>>();
        let epoch = Instant::now();
        // Milliseconds since `epoch` + 1 while a close runs, 0 when idle.
        let busy = Arc::new(AtomicU64::new(0));
        let thread_id = Arc::new(AtomicU64::new(0));
        let (b, t) = (Arc::clone(&busy), Arc::clone(&thread_id));
        std::thread::Builder::new()
            .name("closer".into())
            .spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                t.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
                for item in rx {
                    b.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
                    drop(item);
                    b.store(0, Ordering::SeqCst);
                }
            })?;
        std::thread::Builder::new()
            .name("close-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(STUCK_AFTER / 2);
                    let since = busy.load(Ordering::SeqCst);
                    let now = epoch.elapsed().as_millis() as u64 + 1;
                    let tid = thread_id.load(Ordering::SeqCst);
                    if since != 0
                        && tid != 0
                        && now.saturating_sub(since) > STUCK_AFTER.as_millis() as u64
                    {
                        log::debug!("interrupting a close that has taken {} ms", now - since);
                        // SAFETY: the closer thread lives as long as the process.
                        unsafe { libc::pthread_kill(tid as libc::pthread_t, WAKE) };
                    }
                }
            })?;
        Ok(Closer { tx })
    }

    /// Hands `item` (a connection, descriptors) to the closer thread, which drops it.
    pub fn close(&self, item: Box<dyn Send>) {
        let _ = self.tx.send(item);
    }
}
