//! Closing what callers passed without letting a close hold anything up. The last close of a TCP
//! socket with SO_LINGER waits for its send queue (tcp(7)), for as long as the socket's owner
//! likes. A `Watchdog` interrupts any close that takes longer than `STUCK_AFTER` with a signal (the
//! linger wait ends on a pending signal): a thread registers with `Watchdog::guard` for as long
//! as it closes. Callers' threads close their own connection and descriptors that way; the
//! `Closer` thread closes the connections of refused callers. Does I/O (threads, signals).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A close running longer than this is interrupted.
pub const STUCK_AFTER: Duration = Duration::from_millis(50);

/// The signal that interrupts a stuck close (a no-op handler, installed without SA_RESTART).
const WAKE: libc::c_int = libc::SIGUSR1;

extern "C" fn nothing(_: libc::c_int) {}

/// The threads now closing something, and since when.
pub struct Watchdog {
    closing: Mutex<HashMap<u64, Instant>>,
    /// Signalled when a thread registers: with none registered the watchdog sleeps until then,
    /// so that an idle daemon does not wake.
    registered: std::sync::Condvar,
}

/// A thread's registration with the watchdog, for as long as it lives.
pub struct Guard<'a> {
    dog: &'a Watchdog,
    thread: u64,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.dog.lock().remove(&self.thread);
    }
}

impl Watchdog {
    /// Installs the no-op handler for the wake-up signal and starts the watchdog thread.
    pub fn start() -> std::io::Result<Arc<Watchdog>> {
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
        let dog = Arc::new(Watchdog {
            closing: Mutex::new(HashMap::new()),
            registered: std::sync::Condvar::new(),
        });
        let d = Arc::clone(&dog);
        std::thread::Builder::new()
            .name("close-watchdog".into())
            .spawn(move || {
                // It only watches; capabilities are per thread.
                if let Err(e) = crate::net::privilege::drop_all() {
                    log::error!(
                        "the close watchdog could not give up its capabilities: {}",
                        crate::with_causes(&e)
                    );
                    std::process::exit(1);
                }
                loop {
                    {
                        let mut closing = d.lock();
                        while closing.is_empty() {
                            closing = d
                                .registered
                                .wait(closing)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    std::thread::sleep(STUCK_AFTER / 2);
                    // Under the lock: a registered thread is alive until it has unregistered.
                    let closing = d.lock();
                    for (&thread, since) in closing.iter() {
                        if since.elapsed() > STUCK_AFTER {
                            log::debug!(
                                "interrupting a close that has taken {} ms",
                                since.elapsed().as_millis()
                            );
                            // SAFETY: the thread is registered, so it is alive (see above).
                            unsafe { libc::pthread_kill(thread as libc::pthread_t, WAKE) };
                        }
                    }
                }
            })?;
        Ok(dog)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.closing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers this thread: a close it starts before the guard is dropped is interrupted once it
    /// has taken `STUCK_AFTER`. (A close that ignores signals, a FUSE flush, is not.)
    pub fn guard(&self) -> Guard<'_> {
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() } as u64;
        self.lock().insert(thread, Instant::now());
        self.registered.notify_one();
        Guard { dog: self, thread }
    }
}

/// The closer thread's inbox.
pub struct Closer {
    tx: mpsc::Sender<Box<dyn Send>>,
}

impl Closer {
    pub fn start(dog: Arc<Watchdog>) -> std::io::Result<Closer> {
        let (tx, rx) = mpsc::channel::<Box<dyn Send>>();
        std::thread::Builder::new()
            .name("closer".into())
            .spawn(move || {
                // It only closes; capabilities are per thread.
                if let Err(e) = crate::net::privilege::drop_all() {
                    log::error!(
                        "the closer could not give up its capabilities: {}",
                        crate::with_causes(&e)
                    );
                    std::process::exit(1);
                }
                for item in rx {
                    let _guard = dog.guard();
                    drop(item);
                }
            })?;
        Ok(Closer { tx })
    }

    /// Hands `item` (a refused caller's connection) to the closer thread, which drops it.
    pub fn close(&self, item: Box<dyn Send>) {
        let _ = self.tx.send(item);
    }
}
