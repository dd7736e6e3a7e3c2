//! `kes keystore check`: the first thing a site runs, with the server's own config,
//! before it trusts a keystore with keys. It makes every call kes makes, the way kes
//! makes it, and says for each whether the answer has what kes relies on.
//!
//! A CipherTrust keystore gets the whole conversation on throw-away names
//! (`ciphertrust::check`); a directory is checked for what the fs keystore needs
//! (owner, mode, atomic rename, free space). Nothing that exists is touched, and what the
//! check made is removed again, also after a failure or Ctrl-C.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::report::{Report, Row, Verdict};
use crate::config::KeyStoreConfig;

/// Checks the keystore `config` describes. `stop` is set by Ctrl-C.
pub fn run(config: &KeyStoreConfig, stop: &AtomicBool) -> Report {
    match config {
        KeyStoreConfig::Memory => Report {
            keystore: "memory".into(),
            rows: vec![Row::new(
                "keystore",
                "none",
                Verdict::Info,
                "keys in memory (--dev): nothing to check",
            )],
            interrupted: false,
        },
        KeyStoreConfig::Fs { path } => Report {
            keystore: format!("fs:{}", path.display()),
            rows: check_dir(path),
            interrupted: false,
        },
        KeyStoreConfig::CipherTrust(settings) => {
            super::ciphertrust::check::run(super::ciphertrust_config(settings), stop)
        }
    }
}

/// Free space below which a directory gets a warning.
const LOW_SPACE: u64 = 64 << 20;

/// What the fs keystore needs of its directory: it exists (or can be made), belongs to
/// the user kes runs as, is closed to others, takes a new file and an atomic rename, and
/// has room.
pub fn check_dir(path: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let shown = path.display().to_string();
    let meta = match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => {
            rows.push(Row::new(
                "directory",
                &shown,
                Verdict::Fail,
                "exists but is not a directory",
            ));
            return rows;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let verdict = if parent.is_dir() {
                Verdict::Info
            } else {
                Verdict::Fail
            };
            rows.push(Row::new(
                "directory",
                &shown,
                verdict,
                "does not exist: the server creates it (mode 0700) at its first start, in an existing parent directory",
            ));
            return rows;
        }
        Err(err) => {
            rows.push(Row::new(
                "directory",
                &shown,
                Verdict::Fail,
                format!("cannot be read: {err}"),
            ));
            return rows;
        }
    };
    let euid = unsafe { libc::geteuid() };
    rows.push(Row::new(
        "owner",
        &shown,
        if meta.uid() == euid {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        format!(
            "owned by uid {} gid {}; this process runs as uid {euid}{}",
            meta.uid(),
            meta.gid(),
            if meta.uid() == euid {
                ""
            } else {
                ": run the check as the user the server runs as"
            }
        ),
    ));
    let mode = meta.permissions().mode() & 0o7777;
    rows.push(Row::new(
        "mode",
        &shown,
        if mode & 0o077 == 0 {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        if mode & 0o077 == 0 {
            format!("{mode:04o}: only its owner can enter it")
        } else {
            format!("{mode:04o}: others can reach the keys; chmod 0700 {shown}")
        },
    ));
    rows.push(rename_row(path, &shown));
    rows.push(space_row(path, &shown));
    rows
}

/// Writes, flushes and renames a file as the fs keystore writes a key, then removes it.
fn rename_row(dir: &Path, shown: &str) -> Row {
    let nonce = {
        let mut bytes = [0u8; 6];
        let _ = getrandom::getrandom(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let temp = dir.join(format!(".kes-check-{nonce}.tmp"));
    let target = dir.join(format!(".kes-check-{nonce}"));
    let attempt = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(b"kes keystore check")?;
        file.sync_all()?;
        fs::rename(&temp, &target)?;
        fs::File::open(dir)?.sync_all()?;
        if fs::read(&target)? != b"kes keystore check" {
            return Err(std::io::Error::other(
                "the renamed file does not hold what was written",
            ));
        }
        Ok(())
    };
    let outcome = attempt();
    let _ = fs::remove_file(&temp);
    let _ = fs::remove_file(&target);
    match outcome {
        Ok(()) => Row::new(
            "atomic rename",
            shown,
            Verdict::Ok,
            "a new file was written, flushed, renamed and read back",
        ),
        Err(err) => Row::new(
            "atomic rename",
            shown,
            Verdict::Fail,
            format!("the fs keystore cannot store keys here: {err}"),
        ),
    }
}

fn space_row(dir: &Path, shown: &str) -> Row {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return Row::new(
            "free space",
            shown,
            Verdict::Warn,
            "the path cannot be passed to statvfs",
        );
    };
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        let err = std::io::Error::last_os_error();
        return Row::new(
            "free space",
            shown,
            Verdict::Warn,
            format!("statvfs failed: {err}"),
        );
    }
    let free = stats.f_bavail as u64 * stats.f_frsize as u64;
    let inodes = stats.f_favail as u64;
    let (verdict, note) = if free == 0 || (stats.f_files > 0 && inodes == 0) {
        (Verdict::Fail, ": full, no key can be created")
    } else if free < LOW_SPACE {
        (Verdict::Warn, ": low")
    } else {
        (Verdict::Ok, "")
    };
    Row::new(
        "free space",
        shown,
        verdict,
        format!("{} MiB and {inodes} inodes free{note}", free >> 20),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_writable_directory_passes_and_is_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let rows = check_dir(dir.path());
        let verdicts: Vec<_> = rows.iter().map(|r| (r.step.as_str(), r.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("owner", Verdict::Ok),
                ("mode", Verdict::Ok),
                ("atomic rename", Verdict::Ok),
                ("free space", Verdict::Ok),
            ],
            "{rows:?}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn an_open_mode_warns_and_a_file_or_a_missing_parent_fails() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mode = check_dir(dir.path())
            .into_iter()
            .find(|r| r.step == "mode")
            .unwrap();
        assert_eq!(mode.verdict, Verdict::Warn);
        assert!(
            mode.detail.contains("0755") && mode.detail.contains("chmod 0700"),
            "{mode:?}"
        );

        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert_eq!(check_dir(&file)[0].verdict, Verdict::Fail);
        assert_eq!(check_dir(&dir.path().join("new"))[0].verdict, Verdict::Info);
        assert_eq!(
            check_dir(&dir.path().join("no/such"))[0].verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn a_directory_that_takes_no_file_fails() {
        // /proc takes no new file, not even from root.
        let rename = check_dir(Path::new("/proc"))
            .into_iter()
            .find(|r| r.step == "atomic rename")
            .unwrap();
        assert_eq!(rename.verdict, Verdict::Fail, "{rename:?}");
        assert!(
            rename.detail.contains("cannot store keys here"),
            "{rename:?}"
        );
    }
}
