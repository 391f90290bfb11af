//! A certificate and key that change together (a rekey), kept in the Kubernetes atomic-writer
//! layout so no reader ever finds a certificate next to another certificate's key:
//!
//! ```text
//! DIR/.NAME.versions/<stamp>/NAME.crt, NAME.key   one directory per version, never changed
//! DIR/.NAME.data -> .NAME.versions/<stamp>        the current version
//! DIR/NAME.crt   -> .NAME.data/NAME.crt
//! DIR/NAME.key   -> .NAME.data/NAME.key
//! ```
//!
//! A new version is written in full, then one `rename` of a new `.NAME.data` link over the
//! old one switches both files at once. Plain files are converted first by moving the current
//! pair into a version of its own (so there is no moment with a mismatched pair). Versions
//! older than the previous one are removed. A reader that opens `.NAME.data` once and the two
//! files relative to it always gets a matching pair; one that opens the two paths one after
//! the other should check that the key is the certificate's and retry, as certgate's own
//! reload does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use certgate_pki::fs::{Mode, Overwrite};

use super::{CertFiles, RenewalError};

/// The versioned layout of one [`CertFiles`] pair.
#[derive(Debug, Clone)]
pub struct Versioned {
    dir: PathBuf,
    name: String,
    cert: OsString,
    key: OsString,
}

impl Versioned {
    /// The layout for `files`, named after the certificate file's stem; both files must be
    /// in one directory.
    pub fn of(files: &CertFiles) -> Result<Versioned, RenewalError> {
        let parts = |p: &Path| match (p.parent(), p.file_name()) {
            (Some(dir), Some(file)) => Some((dir.to_path_buf(), file.to_os_string())),
            _ => None,
        };
        let bad = |reason: &str| RenewalError::Files {
            path: files.cert.clone(),
            reason: reason.to_string(),
        };
        let (dir, cert) = parts(&files.cert).ok_or_else(|| bad("not a file name"))?;
        let (key_dir, key) = parts(&files.key).ok_or_else(|| bad("not a file name"))?;
        if key_dir != dir {
            return Err(bad("a rekey needs the certificate and its key in one directory"));
        }
        let name = Path::new(&cert)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| bad("not a file name"))?;
        Ok(Versioned { dir, name, cert, key })
    }

    /// `DIR/.NAME.data`, the link to the current version.
    pub fn data_link(&self) -> PathBuf {
        self.dir.join(format!(".{}.data", self.name))
    }

    /// `DIR/.NAME.versions`, one directory per version.
    pub fn versions_dir(&self) -> PathBuf {
        self.dir.join(format!(".{}.versions", self.name))
    }

    /// Whether both files are links through `.NAME.data` (the layout is in place).
    pub fn in_place(&self) -> bool {
        let linked = |file: &OsString| {
            let expected = Path::new(&format!(".{}.data", self.name)).join(file);
            std::fs::read_link(self.dir.join(file)).is_ok_and(|target| target == expected)
        };
        linked(&self.cert) && linked(&self.key)
    }

    /// Makes `cert` and `key` (PEM) the current pair: a new version, then one swap of
    /// `.NAME.data`; plain files are first converted. Returns the new version's directory.
    pub fn publish(&self, cert: &[u8], key: &[u8]) -> Result<PathBuf, RenewalError> {
        if !self.in_place() {
            self.convert()?;
        }
        let previous = std::fs::read_link(self.data_link()).ok();
        let (version, target) = self.write_version(cert, key)?;
        self.swap(&self.data_link(), &target)?;
        self.prune(&[Some(target), previous]);
        Ok(version)
    }

    /// Plain files (or a layout left half-converted) into the layout: the pair as it is on
    /// disk becomes a version, `.NAME.data` points at it, then each file is replaced by its
    /// link, one rename each; each step leaves a matching pair.
    fn convert(&self) -> Result<(), RenewalError> {
        let read = |file: &OsString| {
            let path = self.dir.join(file);
            std::fs::read(&path).map_err(|e| files_err(&path, e))
        };
        let (cert, key) = (read(&self.cert)?, read(&self.key)?);
        let (_, target) = self.write_version(&cert, &key)?;
        self.swap(&self.data_link(), &target)?;
        for file in [&self.cert, &self.key] {
            let link = Path::new(&format!(".{}.data", self.name)).join(file);
            self.swap(&self.dir.join(file), &link)?;
        }
        Ok(())
    }

    /// Writes a new version directory holding `cert` (0644) and `key` (0600); returns it
    /// and its path relative to DIR (the link target).
    fn write_version(&self, cert: &[u8], key: &[u8]) -> Result<(PathBuf, PathBuf), RenewalError> {
        let versions = self.versions_dir();
        std::fs::create_dir_all(&versions).map_err(|e| files_err(&versions, e))?;
        let stamp = stamp(time::OffsetDateTime::now_utc());
        let mut n = 0;
        let (version, name) = loop {
            let name = if n == 0 { stamp.clone() } else { format!("{stamp}-{n}") };
            let version = versions.join(&name);
            match std::fs::create_dir(&version) {
                Ok(()) => break (version, name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(files_err(&version, e)),
            }
        };
        certgate_pki::fs::write_atomic(
            &version.join(&self.key),
            key,
            Mode::Secret,
            Overwrite::Refuse,
        )?;
        certgate_pki::fs::write_atomic(
            &version.join(&self.cert),
            cert,
            Mode::Public,
            Overwrite::Refuse,
        )?;
        certgate_pki::fs::sync_dir(&versions);
        let target = Path::new(&format!(".{}.versions", self.name)).join(name);
        Ok((version, target))
    }

    /// Points `link` at `target` in one step: a new link renamed over the old name.
    fn swap(&self, link: &Path, target: &Path) -> Result<(), RenewalError> {
        let mut tmp = link.as_os_str().to_os_string();
        tmp.push(".tmp-link");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| files_err(&tmp, e))?;
        std::fs::rename(&tmp, link).map_err(|e| files_err(link, e))?;
        certgate_pki::fs::sync_dir(&self.dir);
        Ok(())
    }

    /// Removes the versions other than `keep` (link targets relative to DIR). A version that
    /// cannot be removed stays: it costs disk space, nothing else.
    fn prune(&self, keep: &[Option<PathBuf>]) {
        let Ok(entries) = std::fs::read_dir(self.versions_dir()) else { return };
        let kept: Vec<&PathBuf> = keep.iter().flatten().collect();
        for entry in entries.flatten() {
            let relative = Path::new(&format!(".{}.versions", self.name)).join(entry.file_name());
            if !kept.contains(&&relative) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// `2026-11-23T21-40-13.123456789Z`: a version's name, sorted by time.
fn stamp(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

fn files_err(path: &Path, e: std::io::Error) -> RenewalError {
    RenewalError::Files { path: path.to_path_buf(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_become_a_version_and_each_publish_swaps_both_and_keeps_the_previous() {
        let tmp = tempfile::tempdir().unwrap();
        let files = CertFiles::in_dir(tmp.path(), "api");
        std::fs::write(&files.cert, "cert 0").unwrap();
        std::fs::write(&files.key, "key 0").unwrap();
        let v = Versioned::of(&files).unwrap();
        assert!(!v.in_place());
        let mut made = Vec::new();
        for i in 1..=3 {
            made.push(
                v.publish(format!("cert {i}").as_bytes(), format!("key {i}").as_bytes()).unwrap(),
            );
            assert!(v.in_place());
            assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), format!("cert {i}"));
            assert_eq!(std::fs::read_to_string(&files.key).unwrap(), format!("key {i}"));
        }
        let mut left: Vec<PathBuf> =
            std::fs::read_dir(v.versions_dir()).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(left, made[1..].to_vec(), "the current and the previous version");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(made[2].join("api.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("tmp"))
        );
    }

    #[test]
    fn files_in_two_directories_are_refused() {
        let files =
            CertFiles { cert: PathBuf::from("/a/api.crt"), key: PathBuf::from("/b/api.key") };
        assert!(Versioned::of(&files).is_err());
    }
}
