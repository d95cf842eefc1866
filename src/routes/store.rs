//! The route memory's state file: `$STATE_DIRECTORY/routes` (systemd's StateDirectory; not read
//! in setuid/setgid programs), else /var/lib/synergy-craft/routes. Every writer (the daemon, a
//! `hops` run) changes it under an exclusive lock on `routes.lock` beside it, re-reading the file
//! first and replacing it whole by rename, so that readers never see half a file and no writer
//! loses another's rows. Does I/O.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{AutoError, ParseError, Table};
use crate::net::NetError;
use crate::param::HopLimit;

/// Where the state file is kept when $STATE_DIRECTORY is not set.
pub const DEFAULT_DIR: &str = "/var/lib/synergy-craft";

/// The state file's path: the first directory of `$STATE_DIRECTORY` (systemd may list several,
/// separated by colons), else [`DEFAULT_DIR`]; `routes` in it.
pub fn path() -> PathBuf {
    let dir = crate::daemon::client::secure_env("STATE_DIRECTORY")
        .and_then(|d| d.split(':').next().map(str::to_string))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_DIR.to_string());
    Path::new(&dir).join("routes")
}

/// Why the state file could not be read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// Why "auto" gave no hop limit.
#[derive(Debug, Error)]
pub enum AutoFailure {
    #[error("hop limit auto")]
    Route(#[source] NetError),
    #[error("hop limit auto: the route memory")]
    Store(#[source] StoreError),
    #[error("hop limit auto")]
    None(#[source] AutoError),
    #[error(
        "hop limit auto: the route memory says {0}, more than a program's own auto sends ({max})", max = MAX_IN_PROCESS
    )]
    TooHigh(u8),
}

impl AutoFailure {
    /// ERANGE: no hop limit in range (unknown, or an empty range); EIO when the route or the
    /// file could not be read.
    pub fn errno(&self) -> i32 {
        match self {
            AutoFailure::None(_) | AutoFailure::TooHigh(_) => libc::ERANGE,
            AutoFailure::Route(e) => e.errno(),
            AutoFailure::Store(_) => libc::EIO,
        }
    }
}

/// How often a writer tries the lock, 20 ms apart (a second in all).
const LOCK_TRIES: u32 = 50;

/// The largest state file read (about 10,000 routes); a larger one is refused.
const MAX_FILE: u64 = 1 << 20;

/// Reads the table at `path`; a missing file is an empty table. The file is opened without
/// following a symbolic link and without blocking, and must be a regular file of at most 1 MiB:
/// the directory belongs to the daemon's user, so whatever is there is checked, not trusted.
pub fn load(path: &Path) -> Result<Table, StoreError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op: &'static str| {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let f = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(e) => return Err(io("reading")(e)),
    };
    let meta = f.metadata().map_err(io("reading"))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(io("reading")(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a regular file of at most {MAX_FILE} bytes"),
        )));
    }
    let mut text = String::new();
    f.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(io("reading"))?;
    Table::from_text(&text).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Changes the table at `path` with `change` under the lock and writes it back whole (a new file
/// renamed over the old, mode 644); returns the table written.
pub fn update(path: &Path, change: impl FnOnce(&mut Table)) -> Result<Table, StoreError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io {
            op,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("making the directory of", path))?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = path.with_extension("lock");
    // Read-only is enough for flock, and opens a lock file another user made (root's `hops`,
    // the daemon's user) as long as it is readable. Never through a symbolic link, never a FIFO
    // that would block: the directory is the daemon's user's, and root's `hops` writes here too.
    let nofollow = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let lock = match File::options()
        .read(true)
        .custom_flags(nofollow)
        .open(&lock_path)
    {
        // 0600: a user who could read it could hold the lock and stall every writer.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::options()
            .write(true)
            .create_new(true)
            .custom_flags(nofollow)
            .mode(0o600)
            .open(&lock_path),
        other => other,
    }
    .map_err(io("opening the lock", &lock_path))?;
    if !lock
        .metadata()
        .map_err(io("opening the lock", &lock_path))?
        .is_file()
    {
        return Err(io("opening the lock", &lock_path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        )));
    }
    // Never waits long: another writer holds it for a moment; one that holds it longer is not
    // waited for (the caller's lesson is lost, said in its error).
    let mut tries = 0;
    // SAFETY: flock on a descriptor open for the call; released when `lock` is closed.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        tries += 1;
        if e.kind() != std::io::ErrorKind::WouldBlock || tries >= LOCK_TRIES {
            return Err(io("locking", &lock_path)(e));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut table = load(path)?;
    change(&mut table);
    // A new file of our own (O_EXCL: never one someone placed there, nor a link), renamed over
    // the old one: rename replaces the name, whatever it was, and follows nothing.
    let tmp = path.with_extension(format!(
        "new.{}.{:08x}",
        std::process::id(),
        crate::net::random_u32()
    ));
    let written = (|| {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(table.to_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", path)(e));
    }
    drop(lock);
    Ok(table)
}

/// The route memory as one process keeps it: the table, read again whenever the file changed
/// (another process learnt something).
pub struct Memory {
    path: PathBuf,
    table: Table,
    stamp: Option<(i64, i64, u64, u64)>,
}

fn stamp(path: &Path) -> Option<(i64, i64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
}

impl Memory {
    pub fn open(path: PathBuf) -> Result<Self, StoreError> {
        let stamp = stamp(&path);
        let table = load(&path)?;
        Ok(Memory { path, table, stamp })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table, read again if the file changed since.
    pub fn table(&mut self) -> Result<&Table, StoreError> {
        let now = stamp(&self.path);
        if now != self.stamp {
            self.table = load(&self.path)?;
            self.stamp = now;
        }
        Ok(&self.table)
    }

    /// Changes the file (see [`update`]) and keeps what was written.
    pub fn update(&mut self, change: impl FnOnce(&mut Table)) -> Result<&Table, StoreError> {
        self.table = update(&self.path, change)?;
        self.stamp = stamp(&self.path);
        Ok(&self.table)
    }
}

/// The most a privileged program's own "auto" sends (the daemon's default `--max-hop`): the
/// state file is written by the daemon's user, so a program with privilege does not let it choose
/// a hop limit that reaches far.
pub const MAX_IN_PROCESS: u8 = 8;

/// The hop limit "auto" uses toward `peer` in this process (a privileged program): the route the
/// kernel picks, looked up in the state file; at most [`MAX_IN_PROCESS`].
pub fn auto_for(peer: SocketAddrV6) -> Result<HopLimit, AutoFailure> {
    let key =
        crate::net::route::route_key(*peer.ip(), peer.scope_id()).map_err(AutoFailure::Route)?;
    let table = load(&path()).map_err(AutoFailure::Store)?;
    let h = auto_in(&table, &key, *peer.ip())?;
    if h.0 > MAX_IN_PROCESS {
        return Err(AutoFailure::TooHigh(h.0));
    }
    Ok(h)
}

/// [`Table::auto`] as a hop limit.
pub fn auto_in(
    table: &Table,
    key: &super::RouteKey,
    dst: Ipv6Addr,
) -> Result<HopLimit, AutoFailure> {
    table
        .auto(key, dst)
        .map(HopLimit)
        .map_err(AutoFailure::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_keep_each_other_s_rows_and_readers_see_changes() {
        let dir = std::env::temp_dir().join(format!("synergy-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes");
        let k = crate::routes::RouteKey::Via {
            dev: "eth0".into(),
            gateway: "fe80::1".parse().unwrap(),
        };
        let b: Ipv6Addr = "2001:db8:2::5".parse().unwrap();
        let mut mem = Memory::open(path.clone()).unwrap();
        assert!(mem.table().unwrap().auto(&k, b).is_err());
        // Another process learns (the file changes under `mem`).
        update(&path, |t| t.learn_trace(&k, Some(2), None, 1)).unwrap();
        assert_eq!(mem.table().unwrap().auto(&k, b), Ok(2));
        mem.update(|t| {
            t.learn_refusal(&k, b, 5, crate::routes::Source::Reset, 2, 1);
        })
        .unwrap();
        let again = load(&path).unwrap();
        let r = again.range_for(&k, b);
        assert_eq!(r.min.map(|m| m.value), Some(2));
        assert_eq!(r.max.map(|m| m.value), Some(4));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(matches!(mem.table(), Err(StoreError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
