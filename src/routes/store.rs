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
}

impl AutoFailure {
    /// ERANGE: no hop limit in range (unknown, or an empty range); EIO when the route or the
    /// file could not be read.
    pub fn errno(&self) -> i32 {
        match self {
            AutoFailure::None(_) => libc::ERANGE,
            AutoFailure::Route(e) => e.errno(),
            AutoFailure::Store(_) => libc::EIO,
        }
    }
}

/// Reads the table at `path`; a missing file is an empty table.
pub fn load(path: &Path) -> Result<Table, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Table::from_text(&text).map_err(|source| StoreError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::default()),
        Err(source) => Err(StoreError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
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
    let lock_path = path.with_extension("lock");
    // Read-only is enough for flock, and opens a lock file another user made (root's `hops`,
    // the daemon's user) as long as it is readable.
    let lock = match File::open(&lock_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path),
        other => other,
    }
    .map_err(io("opening the lock", &lock_path))?;
    // SAFETY: flock on a descriptor open for the call; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io("locking", &lock_path)(std::io::Error::last_os_error()));
    }
    let mut table = load(path)?;
    change(&mut table);
    let tmp = path.with_extension(format!("new.{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
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

/// The hop limit "auto" uses toward `peer` in this process (a privileged program): the route the
/// kernel picks, looked up in the state file.
pub fn auto_for(peer: SocketAddrV6) -> Result<HopLimit, AutoFailure> {
    let key =
        crate::net::route::route_key(*peer.ip(), peer.scope_id()).map_err(AutoFailure::Route)?;
    let table = load(&path()).map_err(AutoFailure::Store)?;
    auto_in(&table, &key, *peer.ip())
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
            t.learn_refusal(&k, 5, crate::routes::Source::Reset, 2);
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
