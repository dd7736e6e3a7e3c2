//! Build facts for `kes --version`: the target triple and the commit built from.
//!
//! The commit comes from `KES_COMMIT` when set (packaging/build.sh sets it, so builds
//! from a source tarball without `.git` name their commit too), else from `git`, else it
//! is `unknown`. Nothing here depends on the time or the build directory, so the
//! binary stays reproducible (docs/release.md).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=KES_BUILD_TARGET={target}");
    println!("cargo:rerun-if-env-changed=KES_COMMIT");
    let commit = match std::env::var("KES_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => git_commit().unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=KES_BUILD_COMMIT={commit}");
}

/// `git rev-parse HEAD` of the source directory, when it is a git checkout. Asks cargo
/// to run this again when HEAD or the branch it points to moves.
fn git_commit() -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    // Only a checkout of this very directory counts, not one that happens to enclose it
    // (a tarball unpacked inside some other repository).
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != PathBuf::from(&dir).canonicalize().ok()? {
        return None;
    }
    for path in ["HEAD", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", path]));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &branch]));
    }
    let commit = git(&["rev-parse", "HEAD"])?;
    commit
        .chars()
        .all(|c| c.is_ascii_hexdigit())
        .then_some(commit)
}

/// Only files that exist: cargo would take a missing one as changed on every build.
fn watch(path: Option<String>) {
    let Some(path) = path else { return };
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join(path);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
