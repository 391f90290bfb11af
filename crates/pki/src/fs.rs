//! Writing files the way a CA must: to a temporary file in the same directory, flushed to disk,
//! then renamed into place, so a reader never sees half a file and a crash never leaves one.
//! Private keys are created 0600; nothing is overwritten unless the caller says `force`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::PkiError;

/// Who may read a file we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Certificates, CRLs: 0644.
    Public,
    /// Private keys, PKCS#12 bundles, inventories: 0600.
    Secret,
}

/// Whether an existing file at the destination may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Force,
}

impl Overwrite {
    pub fn from_force(force: bool) -> Self {
        if force { Overwrite::Force } else { Overwrite::Refuse }
    }
}

/// Writes `contents` to `path` atomically with the given mode.
///
/// Fails with [`PkiError::Exists`] when `path` exists and `overwrite` is `Refuse`; the check and
/// the rename are one step (a hard link that fails on an existing name), so two writers cannot
/// both win.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: Mode,
    overwrite: Overwrite,
) -> Result<(), PkiError> {
    let dir = parent_dir(path);
    let write_err = |source| PkiError::Write { path: path.to_path_buf(), source };
    let mut tmp = tempfile::Builder::new()
        .prefix(".certgate-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| write_err(without_temp_path(e)))?;
    set_mode(tmp.as_file(), mode).map_err(write_err)?;
    tmp.write_all(contents).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    match overwrite {
        Overwrite::Force => {
            tmp.persist(path).map_err(|e| write_err(e.error))?;
        }
        Overwrite::Refuse => {
            tmp.persist_noclobber(path).map_err(|e| {
                if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    PkiError::Exists { path: path.to_path_buf() }
                } else {
                    write_err(e.error)
                }
            })?;
        }
    }
    sync_dir(&dir);
    Ok(())
}

/// The OS error of a failed temporary file, without the name tempfile adds to it ("... at path
/// \"dir/.certgate-XXXX.tmp\""): the error already names the file the user asked for, who has
/// never heard of the temporary one. tempfile's wrapper is private, so its text is cut.
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.rsplit_once(" at path \"") {
        Some((os_error, _)) => std::io::Error::new(e.kind(), os_error.to_string()),
        None => e,
    }
}

/// Fails with [`PkiError::Exists`] for the first path that exists, unless `overwrite` is
/// `Force`. Called before any work is done, so a refused command changes nothing.
pub fn ensure_absent<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    overwrite: Overwrite,
) -> Result<(), PkiError> {
    if overwrite == Overwrite::Force {
        return Ok(());
    }
    for path in paths {
        if path.exists() {
            return Err(PkiError::Exists { path: path.to_path_buf() });
        }
    }
    Ok(())
}

/// A set of files written together: if one write fails, the files this set created are removed
/// again, so a failed command leaves the directory as it found it.
#[derive(Debug, Default)]
pub struct FileSet {
    created: Vec<PathBuf>,
}

impl FileSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one file of the set (see [`write_atomic`]).
    pub fn write(
        &mut self,
        path: &Path,
        contents: &[u8],
        mode: Mode,
        overwrite: Overwrite,
    ) -> Result<(), PkiError> {
        let existed = path.exists();
        if let Err(e) = write_atomic(path, contents, mode, overwrite) {
            self.roll_back();
            return Err(e);
        }
        if !existed {
            self.created.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Removes the files this set created (used when a later step fails).
    pub fn roll_back(&mut self) {
        for path in self.created.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Keeps the files: the operation succeeded.
    pub fn commit(mut self) {
        self.created.clear();
    }
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read { path: path.to_path_buf(), source })
}

/// Reads a password file: its first line, without the line ending. An empty password is an
/// error (a PKCS#12 without a password is asked for explicitly).
pub fn read_password(path: &Path) -> Result<Vec<u8>, PkiError> {
    let bytes = read(path)?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(PkiError::EmptyPassword { path: path.to_path_buf() });
    }
    Ok(line.to_vec())
}

/// `file` in `dir`, written as a user would: `api.crt` rather than `./api.crt` for the current
/// directory (the default of `--out-dir` and `--dir`), so messages name it that way.
pub fn in_dir(dir: &Path, file: &str) -> PathBuf {
    if dir == Path::new(".") { PathBuf::from(file) } else { dir.join(file) }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: Mode) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bits = match mode {
        Mode::Public => 0o644,
        Mode::Secret => 0o600,
    };
    file.set_permissions(std::fs::Permissions::from_mode(bits))
}

#[cfg(not(unix))]
fn set_mode(_file: &std::fs::File, _mode: Mode) -> std::io::Result<()> {
    Ok(())
}

/// Makes a rename (or a new entry) in `dir` durable. Best effort: some filesystems refuse to
/// fsync a directory.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is written 0600 and replaces nothing without force.
    #[test]
    fn secret_file_is_0600_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        write_atomic(&path, b"one", Mode::Secret, Overwrite::Refuse).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let err = write_atomic(&path, b"two", Mode::Secret, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"three", Mode::Secret, Overwrite::Force).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }

    /// A failed set of writes removes what it created.
    #[test]
    fn file_set_rolls_back_created_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.crt");
        let b = dir.path().join("missing-dir/b.key");
        let mut set = FileSet::new();
        set.write(&a, b"a", Mode::Public, Overwrite::Refuse).unwrap();
        assert!(set.write(&b, b"b", Mode::Secret, Overwrite::Refuse).is_err());
        assert!(!a.exists());
    }

    #[test]
    fn password_file_first_line_and_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\nignored\n").unwrap();
        assert_eq!(read_password(&p).unwrap(), b"s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(read_password(&p), Err(PkiError::EmptyPassword { .. })));
    }
}
