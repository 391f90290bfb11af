//! Reload when a file the configuration names changes.
//!
//! The watcher watches the **directories** of those files, not the files: editors save by
//! writing a new file and renaming it over the old one, and Kubernetes updates a mounted Secret
//! or ConfigMap by swapping its `..data` symlink, and a watch on the file itself goes silent
//! after either. Any event in a watched directory starts a short debounce; then the files'
//! contents are compared with what was seen last, and only a real change asks for a reload
//! (an unrelated file changing next to a certificate reloads nothing).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long events are gathered before the files are compared: a rename-based save or a
/// symlink swap is several events.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The files to watch, replaced after each successful reload.
#[derive(Clone, Default)]
pub struct WatchList(Arc<Mutex<(u64, Vec<PathBuf>)>>);

impl WatchList {
    pub fn set(&self, files: Vec<PathBuf>) {
        let mut list = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        list.0 += 1;
        list.1 = files;
    }

    fn get(&self) -> (u64, Vec<PathBuf>) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Starts watching `list` on a thread of its own; each change asks `reload` for a reload.
/// Fails when the system cannot watch files (no inotify); the gateway then reloads on SIGHUP
/// only.
pub fn spawn(list: WatchList, reload: mpsc::Sender<()>) -> Result<(), notify::Error> {
    let (events_tx, events) = channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = events_tx.send(event);
    })?;
    let mut state = Files::default();
    state.sync(&list, &mut watcher);
    std::thread::Builder::new()
        .name("certgate-watch".into())
        .spawn(move || {
            loop {
                match events.recv_timeout(Duration::from_secs(1)) {
                    Ok(Ok(_event)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "file watch error");
                        continue;
                    }
                    // The list may have changed with a reload: watch its directories.
                    Err(RecvTimeoutError::Timeout) => {
                        state.sync(&list, &mut watcher);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                std::thread::sleep(DEBOUNCE);
                while events.try_recv().is_ok() {}
                if let Some(changed) = state.changed() {
                    tracing::info!(file = %changed.display(), "changed on disk: reloading");
                    // A full queue already holds a reload that will read the newest files.
                    let _ = reload.try_send(());
                }
                state.sync(&list, &mut watcher);
            }
        })
        .map_err(notify::Error::io)?;
    Ok(())
}

/// The watched directories and the last-seen contents of each file.
#[derive(Default)]
struct Files {
    version: u64,
    dirs: HashSet<PathBuf>,
    /// A hash of each file's contents (`None`: unreadable or absent).
    seen: HashMap<PathBuf, Option<u64>>,
}

impl Files {
    /// Follows the list: watches new directories, forgets files no longer named.
    fn sync(&mut self, list: &WatchList, watcher: &mut impl Watcher) {
        let (version, files) = list.get();
        if version == self.version && !files.is_empty() {
            return;
        }
        self.version = version;
        let dirs: HashSet<PathBuf> = files.iter().map(|f| directory(f)).collect();
        for dir in dirs.difference(&self.dirs) {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch; reload with SIGHUP");
            }
        }
        for dir in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(dir);
        }
        self.dirs = dirs;
        self.seen = files.into_iter().map(|f| (f.clone(), digest(&f))).collect();
    }

    /// The first file whose contents differ from what was seen, remembering the new contents
    /// of all of them.
    fn changed(&mut self) -> Option<PathBuf> {
        let mut first = None;
        for (path, seen) in &mut self.seen {
            let now = digest(path);
            if now != *seen {
                *seen = now;
                first.get_or_insert_with(|| path.clone());
            }
        }
        first
    }
}

fn directory(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A hash of the file's contents, following symlinks (Kubernetes' `..data` links).
fn digest(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a change of contents counts: rewriting the same bytes, or touching a neighbour,
    /// does not.
    #[test]
    fn only_changed_contents_count() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("server.crt");
        std::fs::write(&cert, "one").unwrap();
        let list = WatchList::default();
        list.set(vec![cert.clone()]);
        let mut files = Files::default();
        let mut watcher = notify::recommended_watcher(|_| {}).unwrap();
        files.sync(&list, &mut watcher);
        std::fs::write(&cert, "one").unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        assert_eq!(files.changed(), None);
        std::fs::write(&cert, "two").unwrap();
        assert_eq!(files.changed(), Some(cert.clone()));
        assert_eq!(files.changed(), None, "remembered");
        std::fs::remove_file(&cert).unwrap();
        assert_eq!(files.changed(), Some(cert));
    }
}
