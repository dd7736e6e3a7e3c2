//! The filesystem keystore: one file per key in one directory, named exactly like the
//! key and holding the stored value, as Go KES's `fs` keystore lays it out, so either
//! server can use the other's directory.
//!
//! Unlike the original, a key file appears whole or not at all: it is written under a
//! temporary name, flushed to disk, and then hard-linked to its real name. `link(2)`
//! fails if the name exists, so of two concurrent creates exactly one wins, and a
//! crash leaves at most a temporary file, which is never listed or read and is removed
//! the next time the keystore is opened.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{KeyStore, KeyStoreError, ListPage, StoredValue, page_of};

/// The largest key file read, as in the original; a stored key is a few hundred bytes.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// The longest key name the API accepts; longer names never reach the disk.
const MAX_NAME_LEN: usize = 80;

/// Temporary files start with a dot, which no key name contains.
const TEMP_PREFIX: &str = ".kes-tmp-";

/// A keystore in a local directory.
#[derive(Debug)]
pub struct FsKeyStore {
    dir: PathBuf,
}

impl FsKeyStore {
    /// Opens the keystore in directory `path`, creating it (and missing parents) with
    /// mode 0700 if it does not exist, and removes temporary files that a crash left
    /// behind. Fails if `path` exists but is not a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<FsKeyStore, String> {
        let dir = path.as_ref().to_path_buf();
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "fs keystore: '{}' is not a directory",
                    dir.display()
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("fs keystore: cannot create '{}': {e}", dir.display()))?,
            Err(e) => return Err(format!("fs keystore: cannot open '{}': {e}", dir.display())),
        }
        let store = FsKeyStore { dir };
        store.remove_leftover_temp_files()?;
        Ok(store)
    }

    fn remove_leftover_temp_files(&self) -> Result<(), String> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| format!("fs keystore: cannot read '{}': {e}", self.dir.display()))?;
        for entry in entries.flatten() {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(TEMP_PREFIX));
            if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                if let Err(e) = fs::remove_file(entry.path()) {
                    log::warn!(
                        "fs keystore: cannot remove temporary file '{}': {e}",
                        entry.path().display()
                    );
                }
            }
        }
        Ok(())
    }

    /// The path of key `name`, after checking that the name cannot leave the directory
    /// or collide with a temporary file.
    fn key_path(&self, name: &str) -> Result<PathBuf, KeyStoreError> {
        if !is_allowed_name(name) {
            return Err(KeyStoreError::Other(format!(
                "fs keystore: key name '{}' is empty, too long or contains '/', '\\' or '.'",
                name.escape_debug()
            )));
        }
        Ok(self.dir.join(name))
    }

    /// A fresh name for a temporary file: unique within this process by the counter,
    /// and across processes sharing the directory by the pid and random suffix.
    fn temp_path(&self) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut random = [0u8; 8];
        // Uniqueness does not depend on the random part, so a failure is harmless.
        let _ = getrandom::getrandom(&mut random);
        let name = format!(
            "{TEMP_PREFIX}{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            crate::identity::hex(&random)
        );
        self.dir.join(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn io_error(&self, action: &str, name: &str, error: &io::Error) -> KeyStoreError {
        KeyStoreError::Other(format!(
            "fs keystore: cannot {action} key '{name}' in '{}': {error}",
            self.dir.display()
        ))
    }
}

/// Whether `name` is safe as a file name in the key directory: 1 to 80 bytes and no
/// path separator or dot (so no `..`, and no clash with temporary files).
fn is_allowed_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.contains(['/', '\\', '.', '\0'])
}

/// Writes `value` to a new file at `path` with mode 0600 and flushes it to disk.
fn write_new_synced(path: &Path, value: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(value)?;
    file.sync_all()
}

/// Reads all of `file`, refusing more than [`MAX_VALUE_LEN`] bytes. Every buffer that
/// held part of the value is wiped.
fn read_limited(file: &mut File, size_hint: u64) -> io::Result<StoredValue> {
    let hint = usize::try_from(size_hint)
        .unwrap_or(MAX_VALUE_LEN)
        .min(MAX_VALUE_LEN);
    // One byte more than expected, to see the end of the file without growing.
    let mut buffer = Zeroizing::new(vec![0u8; hint + 1]);
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            if buffer.len() > MAX_VALUE_LEN {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("key file is larger than {MAX_VALUE_LEN} bytes"),
                ));
            }
            // The file grew since it was measured; the old buffer is wiped on drop.
            let mut larger = Zeroizing::new(vec![0u8; (buffer.len() * 2).min(MAX_VALUE_LEN + 1)]);
            larger[..filled].copy_from_slice(&buffer[..filled]);
            buffer = larger;
        }
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}

impl KeyStore for FsKeyStore {
    fn describe(&self) -> String {
        format!("fs:{}", self.dir.display())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        let path = self.key_path(name)?;
        let temp = self.temp_path();
        let linked = write_new_synced(&temp, value).and_then(|()| fs::hard_link(&temp, &path));
        if let Err(e) = fs::remove_file(&temp) {
            if e.kind() != ErrorKind::NotFound {
                log::warn!(
                    "fs keystore: cannot remove temporary file '{}': {e}",
                    temp.display()
                );
            }
        }
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(KeyStoreError::Exists),
            Err(e) => return Err(self.io_error("create", name, &e)),
        }
        // The new name must be on disk before we report success; if it cannot be made
        // durable, take the key back rather than report a key that may vanish.
        if let Err(e) = self.sync_dir() {
            let _ = fs::remove_file(&path);
            return Err(self.io_error("create", name, &e));
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<StoredValue, KeyStoreError> {
        let path = self.key_path(name)?;
        // Non-blocking, so that a FIFO placed under a key's name cannot hang the read;
        // it is then refused as not a regular file.
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(KeyStoreError::NotFound),
            Err(e) => return Err(self.io_error("read", name, &e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| self.io_error("read", name, &e))?;
        if !meta.is_file() {
            return Err(KeyStoreError::NotFound);
        }
        read_limited(&mut file, meta.len()).map_err(|e| self.io_error("read", name, &e))
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let path = self.key_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(KeyStoreError::NotFound),
            Err(e) => return Err(self.io_error("delete", name, &e)),
        }
        // The key is gone either way; failing to persist that is worth a warning, not
        // a failed request that the client would retry into a 404.
        if let Err(e) = self.sync_dir() {
            log::warn!(
                "fs keystore: cannot sync '{}' after deleting '{name}': {e}",
                self.dir.display()
            );
        }
        Ok(())
    }

    fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, KeyStoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| {
            KeyStoreError::Other(format!(
                "fs keystore: cannot list '{}': {e}",
                self.dir.display()
            ))
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                KeyStoreError::Other(format!(
                    "fs keystore: cannot list '{}': {e}",
                    self.dir.display()
                ))
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_allowed_name(&name) || !name.starts_with(prefix) {
                continue;
            }
            // Symbolic links count if they lead to a regular file, as `get` follows them.
            let is_regular = match entry.file_type() {
                Ok(t) if t.is_symlink() => fs::metadata(entry.path()).is_ok_and(|m| m.is_file()),
                Ok(t) => t.is_file(),
                Err(_) => false,
            };
            if is_regular {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(page_of(&names, prefix, start, limit))
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let start = Instant::now();
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(start.elapsed()),
            Ok(_) => Err(KeyStoreError::Unreachable(format!(
                "'{}' is not a directory",
                self.dir.display()
            ))),
            Err(e) => Err(KeyStoreError::Unreachable(format!(
                "'{}': {e}",
                self.dir.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use super::*;
    use crate::crypto::{Cipher, KeyVersion};

    /// A directory under the system temp dir, removed with everything in it on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let name = format!(
                "kes-fs-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn create_get_list_delete() {
        let tmp = TempDir::new();
        let store = FsKeyStore::open(&tmp.0).unwrap();
        crate::keystore::contract::create_get_list_delete(&store);
        assert_eq!(fs::read(tmp.0.join("key-b")).unwrap(), b"B");
        // Nothing but the key files is left behind.
        assert_eq!(file_names(&tmp.0), ["key-b", "other"]);
        assert_eq!(store.describe(), format!("fs:{}", tmp.0.display()));
    }

    #[test]
    fn values_survive_reopening() {
        let tmp = TempDir::new();
        FsKeyStore::open(&tmp.0)
            .unwrap()
            .create("k", b"value")
            .unwrap();
        assert_eq!(
            *FsKeyStore::open(&tmp.0).unwrap().get("k").unwrap(),
            b"value"
        );
    }

    #[test]
    fn concurrent_creates_of_one_name_store_exactly_one() {
        let tmp = TempDir::new();
        let store = Arc::new(FsKeyStore::open(&tmp.0).unwrap());
        crate::keystore::contract::concurrent_creates_store_exactly_one(store);
        assert_eq!(file_names(&tmp.0), ["race"]);
    }

    #[test]
    fn new_directory_is_0700_and_key_files_are_0600() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("parent").join("keys");
        let store = FsKeyStore::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        store.create("k", b"v").unwrap();
        assert_eq!(mode(&dir.join("k")), 0o600);
    }

    #[test]
    fn opening_a_file_fails() {
        let tmp = TempDir::new();
        let file = tmp.0.join("file");
        fs::write(&file, b"").unwrap();
        let error = FsKeyStore::open(&file).unwrap_err();
        assert!(error.contains("not a directory"), "{error}");
    }

    #[test]
    fn temp_files_are_invisible_and_removed_at_open() {
        let tmp = TempDir::new();
        let store = FsKeyStore::open(&tmp.0).unwrap();
        store.create("k", b"v").unwrap();
        let leftover = format!("{TEMP_PREFIX}123-0-abcdef");
        fs::write(tmp.0.join(&leftover), b"half a key").unwrap();
        fs::write(tmp.0.join(".other-dotfile"), b"").unwrap();
        assert_eq!(store.list("", None, 10).unwrap().names, ["k"]);
        assert_eq!(
            store.list(".", None, 10).unwrap().names,
            Vec::<String>::new()
        );
        assert!(store.get(&leftover).is_err());

        drop(FsKeyStore::open(&tmp.0).unwrap());
        assert_eq!(file_names(&tmp.0), [".other-dotfile", "k"]);
    }

    #[test]
    fn directories_and_fifos_are_not_keys() {
        let tmp = TempDir::new();
        let store = FsKeyStore::open(&tmp.0).unwrap();
        fs::create_dir(tmp.0.join("subdir")).unwrap();
        let fifo = std::ffi::CString::new(tmp.0.join("fifo").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: `fifo` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink(tmp.0.join("target"), tmp.0.join("dangling")).unwrap();
        fs::write(tmp.0.join("real"), b"v").unwrap();
        std::os::unix::fs::symlink(tmp.0.join("real"), tmp.0.join("linked")).unwrap();

        assert_eq!(store.list("", None, 10).unwrap().names, ["linked", "real"]);
        assert_eq!(store.get("subdir").unwrap_err(), KeyStoreError::NotFound);
        assert_eq!(store.get("fifo").unwrap_err(), KeyStoreError::NotFound);
        assert_eq!(store.get("dangling").unwrap_err(), KeyStoreError::NotFound);
        assert_eq!(*store.get("linked").unwrap(), b"v");
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused_before_any_disk_access() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("keys");
        let store = FsKeyStore::open(&dir).unwrap();
        fs::write(tmp.0.join("outside"), b"secret").unwrap();
        let too_long = "a".repeat(81);
        for name in [
            "",
            ".",
            "..",
            "../outside",
            "a/b",
            "a\\b",
            "a.b",
            ".kes-tmp-1",
            "nul\0byte",
            too_long.as_str(),
        ] {
            assert!(
                matches!(store.create(name, b"v"), Err(KeyStoreError::Other(_))),
                "{name:?}"
            );
            assert!(
                matches!(store.get(name), Err(KeyStoreError::Other(_))),
                "{name:?}"
            );
            assert!(
                matches!(store.delete(name), Err(KeyStoreError::Other(_))),
                "{name:?}"
            );
        }
        assert_eq!(fs::read(tmp.0.join("outside")).unwrap(), b"secret");
        assert_eq!(file_names(&dir), Vec::<String>::new());
        store.create(&"a".repeat(80), b"v").unwrap();
    }

    #[test]
    fn reads_are_limited_to_one_mebibyte() {
        let tmp = TempDir::new();
        let store = FsKeyStore::open(&tmp.0).unwrap();
        fs::write(tmp.0.join("max"), vec![b'x'; MAX_VALUE_LEN]).unwrap();
        fs::write(tmp.0.join("over"), vec![b'x'; MAX_VALUE_LEN + 1]).unwrap();
        assert_eq!(store.get("max").unwrap().len(), MAX_VALUE_LEN);
        assert!(matches!(store.get("over"), Err(KeyStoreError::Other(_))));
    }

    #[test]
    fn reads_key_files_written_by_go_kes() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/stored-keys.json")).unwrap();
        let tmp = TempDir::new();
        let store = FsKeyStore::open(&tmp.0).unwrap();
        for (index, case) in vectors["cases"].as_array().unwrap().iter().enumerate() {
            // As Go's fs keystore writes it: the stored value, nothing else, mode 0600.
            let name = format!("go-key-{index}");
            let stored = case["stored_value"].as_str().unwrap();
            let path = tmp.0.join(&name);
            fs::write(&path, stored).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

            let key = KeyVersion::parse(&store.get(&name).unwrap()).unwrap();
            let parsed = &case["parsed"];
            assert_eq!(
                key.cipher(),
                Cipher::parse(parsed["key_type"].as_str().unwrap()).unwrap()
            );
            assert_eq!(
                key.created_at_rfc3339(),
                parsed["created_at"].as_str().unwrap()
            );
            assert_eq!(key.created_by(), parsed["created_by"].as_str().unwrap());
            assert_eq!(key.has_hmac(), parsed.get("hmac_key_b64").is_some());
        }
        // And what we write, Go reads: the same bytes.
        let key = KeyVersion::generate(Cipher::Aes256, "");
        store.create("ours", key.encode().as_bytes()).unwrap();
        assert_eq!(
            fs::read_to_string(tmp.0.join("ours")).unwrap(),
            key.encode()
        );
    }

    #[test]
    fn status_reports_a_missing_directory_as_unreachable() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("keys");
        let store = FsKeyStore::open(&dir).unwrap();
        assert!(store.status().is_ok());
        fs::remove_dir(&dir).unwrap();
        assert!(matches!(store.status(), Err(KeyStoreError::Unreachable(_))));
        assert!(store.create("k", b"v").is_err());
    }
}
