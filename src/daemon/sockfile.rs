//! The daemon's listening socket: taken from systemd (socket activation, sd_listen_fds(3)), or
//! created at a path safely — a parent directory nobody else may write to (or a sticky one), no
//! link followed, the mode set at bind time through the umask, the group set without following
//! links, no second daemon on the same path — and removed on exit by a tiny janitor process that
//! keeps uid 0 but no capability (the daemon itself runs unprivileged by then). Does I/O.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the listening socket could not be set up.
#[derive(Debug, Error)]
pub enum SocketFileError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("another daemon answers on {0}; stop it first (refusing to take its socket over)")]
    InUse(PathBuf),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SocketFileError {
    let path = path.to_path_buf();
    move |source| SocketFileError::Io { op, path, source }
}

fn last(op: &'static str, path: &Path) -> SocketFileError {
    io_err(op, path)(std::io::Error::last_os_error())
}

/// The listening socket and what removes its file at the end.
pub struct Listening {
    pub listener: UnixListener,
    /// None under socket activation: systemd owns the file.
    pub janitor: Option<Janitor>,
    pub how: String,
}

/// The child process that removes the socket file once the daemon is gone (its pipe closes).
pub struct Janitor {
    pid: libc::pid_t,
    pipe: OwnedFd,
}

impl Janitor {
    /// Closes the pipe and waits for the janitor to remove the file.
    pub fn finish(self) {
        drop(self.pipe);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// The socket systemd passed (LISTEN_PID is ours, LISTEN_FDS is 1), if any.
fn activated() -> Result<Option<UnixListener>, SocketFileError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let bad = |why: &str| SocketFileError::Unsafe {
        path: "LISTEN_FDS".into(),
        why: why.to_string(),
    };
    if fds != "1" {
        return Err(bad("socket activation must pass exactly one socket"));
    }
    // SAFETY: single-threaded start-up; the variables are ours to remove.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    // SAFETY: fd 3 is ours by the socket-activation protocol, open for this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(SD_LISTEN_FDS_START) };
    let sock = socket2::SockRef::from(&fd);
    let listening_unix = sock.domain().is_ok_and(|d| d == socket2::Domain::UNIX)
        && sock.is_listener().unwrap_or(false);
    if !listening_unix {
        return Err(bad("the passed descriptor is not a listening Unix socket"));
    }
    // SAFETY: as above; set close-on-exec and own it from here on.
    unsafe { libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: as above.
    Ok(Some(unsafe {
        UnixListener::from_raw_fd(SD_LISTEN_FDS_START)
    }))
}

fn fstatat(dir: RawFd, name: &CString) -> std::io::Result<Option<libc::stat>> {
    // SAFETY: a zeroed stat buffer filled by fstatat on a NUL-terminated name.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0 {
            Ok(Some(st))
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Opens the parent directory and checks that nobody but root (or us) can change what is in it.
fn open_parent(path: &Path) -> Result<(OwnedFd, CString), SocketFileError> {
    let unsafe_path = |why: String| SocketFileError::Unsafe {
        path: path.to_path_buf(),
        why,
    };
    let name = path
        .file_name()
        .ok_or_else(|| unsafe_path("the socket path names no file".into()))?;
    let name = CString::new(name.as_bytes()).map_err(|_| unsafe_path("NUL in the path".into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err("creating", &dir))?;
    }
    let cdir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| unsafe_path("NUL".into()))?;
    // SAFETY: opening a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last("opening the directory", &dir));
    }
    // SAFETY: just opened, owned by nothing else.
    let dirfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fstat into a zeroed buffer.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(dirfd.as_raw_fd(), &mut st) != 0 {
            return Err(last("stat", &dir));
        }
        st
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != 0 && st.st_uid != me {
        return Err(unsafe_path(format!(
            "its directory {} belongs to uid {}, not to root",
            dir.display(),
            st.st_uid
        )));
    }
    let others_write = st.st_mode & 0o022 != 0;
    let sticky = st.st_mode & 0o1000 != 0;
    if others_write && !sticky {
        return Err(unsafe_path(format!(
            "its directory {} can be written by others (mode {:o}) and is not sticky",
            dir.display(),
            st.st_mode & 0o7777
        )));
    }
    Ok((dirfd, name))
}

/// `/proc/self/fd/N/NAME`: the name inside the directory opened as `dir`, whatever its path
/// becomes meanwhile.
fn in_dir(dir: &OwnedFd, name: &CString) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .join(std::ffi::OsStr::from_bytes(name.as_bytes()))
}

/// Sets up the listening socket: systemd's, or a new one at `path` owned by root (the caller) with
/// group `gid` and permissions `mode`.
pub fn listen(path: &Path, gid: Option<u32>, mode: u32) -> Result<Listening, SocketFileError> {
    if let Some(listener) = activated()? {
        return Ok(Listening {
            listener,
            janitor: None,
            how: "the socket systemd passed".into(),
        });
    }
    let (dir, name) = open_parent(path)?;
    let here = in_dir(&dir, &name);
    if let Some(st) = fstatat(dir.as_raw_fd(), &name).map_err(io_err("stat", path))? {
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(SocketFileError::Unsafe {
                path: path.to_path_buf(),
                why: "exists and is not a socket (a link or a file); not touching it".into(),
            });
        }
        if UnixStream::connect(&here).is_ok() {
            return Err(SocketFileError::InUse(path.to_path_buf()));
        }
        // SAFETY: geteuid has no preconditions.
        if st.st_uid != unsafe { libc::geteuid() } {
            return Err(SocketFileError::Unsafe {
                path: path.to_path_buf(),
                why: format!(
                    "a stale socket of uid {} is there; not removing it",
                    st.st_uid
                ),
            });
        }
        // SAFETY: unlinking a NUL-terminated name in the directory we checked.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
            return Err(last("removing the stale socket", path));
        }
    }
    // The mode is set when the file is made (bind honours the umask): no window with a wider mode.
    // SAFETY: umask is process-wide; start-up is single-threaded.
    let old = unsafe { libc::umask((0o777 & !mode) as libc::mode_t) };
    let bound = UnixListener::bind(&here);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io_err("listening on", path))?;
    if let Some(gid) = gid {
        // SAFETY: changing the group of the name in the checked directory, not following links.
        let rc = unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                u32::MAX,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(last("setting the group of", path));
        }
    }
    let st = fstatat(dir.as_raw_fd(), &name)
        .map_err(io_err("stat", path))?
        .ok_or_else(|| SocketFileError::Unsafe {
            path: path.to_path_buf(),
            why: "vanished right after it was made".into(),
        })?;
    let janitor = spawn_janitor(dir, name, st.st_dev, st.st_ino)?;
    Ok(Listening {
        listener,
        janitor: Some(janitor),
        how: format!("{} (mode {:o})", path.display(), st.st_mode & 0o777),
    })
}

/// Forks the janitor. It keeps the directory and a pipe, closes everything else, ignores the
/// terminal's signals, drops every capability and sets no-new-privs; when the pipe closes (the
/// daemon ended, however it ended) it removes the file if it is still the one made here.
fn spawn_janitor(
    dir: OwnedFd,
    name: CString,
    dev: libc::dev_t,
    ino: libc::ino_t,
) -> Result<Janitor, SocketFileError> {
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last("making the janitor's pipe", Path::new("pipe")));
    }
    // SAFETY: the daemon is single-threaded here, so the child may run ordinary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last("forking the janitor", Path::new("fork")));
    }
    if pid == 0 {
        // SAFETY: the child: only its own descriptors and process state are changed.
        unsafe {
            // Out of the way first, so that neither lands on the other's number.
            let pr = libc::fcntl(p[0], libc::F_DUPFD, 100);
            let dr = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD, 100);
            libc::dup2(pr, 3);
            libc::dup2(dr, 4);
            libc::close_range(5, u32::MAX, 0);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(s, libc::SIG_IGN);
            }
            if crate::net::privilege::drop_everything().is_err() {
                libc::_exit(1);
            }
            let mut b = [0u8; 16];
            loop {
                let n = libc::read(3, b.as_mut_ptr().cast(), b.len());
                if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                    break;
                }
            }
            if let Ok(Some(st)) = fstatat(4, &name)
                && st.st_dev == dev
                && st.st_ino == ino
            {
                libc::unlinkat(4, name.as_ptr(), 0);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the read end is the child's; the write end is ours.
    unsafe { libc::close(p[0]) };
    drop(dir);
    Ok(Janitor {
        pid,
        // SAFETY: p[1] was made above and is owned by nothing else.
        pipe: unsafe { OwnedFd::from_raw_fd(p[1]) },
    })
}
