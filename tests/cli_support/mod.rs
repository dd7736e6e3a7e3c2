//! Helpers shared by the command-line integration tests.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("kes-cli-test-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tutorial's server identity command line, verbatim (after `kes`).
pub const TUTORIAL_SERVER_IDENTITY: &[&str] = &[
    "tool",
    "identity",
    "new",
    "--server",
    "--key",
    "server.key",
    "--cert",
    "server.cert",
    "--ip",
    "127.0.0.1",
    "--dns",
    "localhost",
];

/// The tutorial's app identity command line, verbatim (after `kes`).
pub const TUTORIAL_APP_IDENTITY: &[&str] = &[
    "tool",
    "identity",
    "new",
    "--key=app.key",
    "--cert=app.cert",
    "app",
];

/// Every variable the client reads, so the caller's environment cannot leak in.
pub const CLIENT_VARS: &[&str] = &[
    "MINIO_KES_SERVER",
    "KES_SERVER",
    "MINIO_KMS_KES_ENDPOINT",
    "MINIO_KES_API_KEY",
    "KES_API_KEY",
    "MINIO_KMS_KES_API_KEY",
    "MINIO_KES_KEY_FILE",
    "KES_CLIENT_KEY",
    "MINIO_KES_CLIENT_KEY",
    "MINIO_KES_CERT_FILE",
    "KES_CLIENT_CERT",
    "MINIO_KES_CLIENT_CERT",
    "MINIO_KES_CAPATH",
    "KES_CAPATH",
    "MINIO_KMS_KES_CAPATH",
    "NO_COLOR",
];

/// `kes ARGS` run in `dir` with a clean client environment plus `env`. Standard output
/// is a pipe, so commands print for scripts.
pub fn kes_in<I, S>(dir: &Path, args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_kes"));
    command.current_dir(dir).args(args);
    for var in CLIENT_VARS {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the kes binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns standard output.
#[track_caller]
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "kes failed with {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts exit code 1 with `Error: …` on stderr and returns the message.
#[track_caller]
pub fn fails(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let err = stderr(&output);
    assert!(
        err.starts_with("Error: "),
        "stderr does not start with 'Error: ': {err}"
    );
    err.trim_start_matches("Error: ").trim_end().to_owned()
}

/// The DER of the first certificate of a PEM file.
pub fn cert_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    block.contents
}

/// A running `kes server`, stopped on drop.
pub struct Server {
    child: Child,
    /// `127.0.0.1:port`, from the startup banner.
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kes ARGS` (a `server` command line) in `dir` and waits for its banner's
/// `listening on https://ADDRESS` line.
pub fn start_server(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kes server starts");
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut seen = String::new();
    loop {
        match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on https://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap().to_owned();
                    // Keep draining the server's output in the background.
                    std::thread::spawn(move || for _ in receiver {});
                    return Server { child, address };
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kes server did not start:\n{seen}");
            }
        }
    }
}
