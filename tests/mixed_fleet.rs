//! A mixed fleet during a rolling migration: two kes servers on one keystore (a shared
//! directory, or the CipherTrust stand-in), one at `compat.oldest_reader: 2023`, one at
//! `current`, with MinIO's traffic spread over both.

mod common;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use common::{Client, Credential, Kes, Pki};
use ctm_sim::{CtmSim, REFRESH_TOKEN};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Fs,
    CipherTrust,
}

struct Fleet {
    _pki: Pki,
    admin: Credential,
    /// The node at `2023` (index 0) and the one at `current` (index 1).
    nodes: [Kes; 2],
    old_config: PathBuf,
    keys_dir: PathBuf,
    sim: Option<CtmSim>,
}

impl Fleet {
    fn start(store: Store) -> Fleet {
        let pki = Pki::new();
        let admin = pki.client("admin");
        let keys_dir = pki.path("keys");
        let sim = (store == Store::CipherTrust).then(CtmSim::start);
        let keystore = match &sim {
            None => format!("keystore:\n  fs:\n    path: {}\n", keys_dir.display()),
            Some(sim) => format!(
                "keystore:\n  gemalto:\n    keysecure:\n      endpoint: {}\n      credentials:\n        token: {REFRESH_TOKEN}\n        domain: \"\"\n        retry: 15s\n      tls:\n        ca: {}\n",
                sim.endpoint(),
                sim.ca_file().display()
            ),
        };
        let config = |name: &str, level: &str| {
            pki.config(
                name,
                &format!(
                    "admin:\n  identity: {}\n{keystore}compat:\n  oldest_reader: {level}\n",
                    admin.identity
                ),
            )
        };
        let old_config = config("old.yml", "2023");
        let new_config = config("new.yml", "current");
        let nodes = [
            Kes::start(&pki, &old_config, &[]),
            Kes::start(&pki, &new_config, &[]),
        ];
        Fleet {
            _pki: pki,
            admin,
            nodes,
            old_config,
            keys_dir,
            sim,
        }
    }

    fn clients(&self) -> [Client; 2] {
        [
            self.nodes[0].client(&self.admin),
            self.nodes[1].client(&self.admin),
        ]
    }

    /// The value the keystore holds for `name`.
    fn stored(&self, name: &str) -> String {
        match &self.sim {
            None => std::fs::read_to_string(self.keys_dir.join(name)).unwrap(),
            Some(sim) => sim.secret(name).unwrap(),
        }
    }

    /// Switches the `2023` node to `current` with a SIGHUP.
    fn switch_old_node_to_current(&self) {
        let text = std::fs::read_to_string(&self.old_config).unwrap();
        let text = text.replace("oldest_reader: 2023", "oldest_reader: current");
        std::fs::write(&self.old_config, text).unwrap();
        self.nodes[0].signal(libc::SIGHUP);
    }
}

fn post(c: &mut Client, path: &str, body: &Value) -> common::Resp {
    c.post(path, body.to_string().as_bytes())
}

/// Whether a DEK's ciphertext is in the msgpack form of 2022-2023 (a binary one is the
/// 32-byte DEK plus 44 bytes, and may start with any byte).
fn is_msgpack(ciphertext: &[u8]) -> bool {
    let msgpack = ciphertext.starts_with(b"\x95\xb1AES256-GCM_SHA256")
        || ciphertext.starts_with(b"\x95\xb2XCHACHA20-POLY1305");
    assert!(msgpack || ciphertext.len() == 32 + 44, "neither form");
    msgpack
}

/// MinIO's context: the JSON text of its key/value map.
fn context(bucket: &str, object: &str) -> String {
    B64.encode(format!(r#"{{"{bucket}":"{object}"}}"#))
}

fn every_key_and_dek_works_on_both_nodes(store: Store) {
    let fleet = Fleet::start(store);
    let mut clients = fleet.clients();
    let levels = ["2023", "current"];

    // Keys made on each node: created, and imported with each cipher.
    let mut keys = Vec::new();
    for (n, level) in levels.iter().enumerate() {
        let c = &mut clients[n];
        let created = format!("created-{level}");
        assert_eq!(
            c.post(&format!("/v1/key/create/{created}"), b"").status,
            200
        );
        keys.push((created, n));
        for (cipher, byte) in [("AES256", 1u8), ("ChaCha20", 2u8)] {
            let name = format!("imported-{cipher}-{level}");
            let r = post(
                c,
                &format!("/v1/key/import/{name}"),
                &json!({ "key": B64.encode([byte + n as u8; 32]), "cipher": cipher }),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            keys.push((name, n));
        }
    }
    for (name, writer) in &keys {
        let stored = fleet.stored(name);
        if *writer == 0 {
            assert!(stored.starts_with(r#"{"version":"v1""#), "{name}: {stored}");
        } else {
            assert!(!stored.starts_with('{'), "{name}: {stored}");
        }
    }

    // Every key: DEKs and ciphertexts from each node decrypt on both.
    for (name, key_writer) in &keys {
        let mut made = Vec::new();
        for (writer, client) in clients.iter_mut().enumerate() {
            let ctx = context("bucket", &format!("{name}/{writer}"));
            let dek = post(
                client,
                &format!("/v1/key/generate/{name}"),
                &json!({ "context": ctx }),
            );
            assert_eq!(dek.status, 200, "{}", dek.text());
            let dek = dek.json();
            let ciphertext = B64.decode(dek["ciphertext"].as_str().unwrap()).unwrap();
            assert_eq!(
                is_msgpack(&ciphertext),
                writer == 0,
                "{name}: node {writer}"
            );
            made.push((
                dek["ciphertext"].clone(),
                ctx.clone(),
                dek["plaintext"].clone(),
            ));

            let plaintext = B64.encode(format!("object data of {name}"));
            let sealed = post(
                client,
                &format!("/v1/key/encrypt/{name}"),
                &json!({ "plaintext": plaintext, "context": ctx }),
            )
            .json();
            made.push((sealed["ciphertext"].clone(), ctx, json!(plaintext)));
        }
        for reader in 0..2 {
            for (ciphertext, ctx, plaintext) in &made {
                let r = post(
                    &mut clients[reader],
                    &format!("/v1/key/decrypt/{name}"),
                    &json!({ "ciphertext": ciphertext, "context": ctx }),
                );
                assert_eq!(r.status, 200, "{name} on node {reader}: {}", r.text());
                assert_eq!(&r.json()["plaintext"], plaintext);
            }
            // Both nodes describe the key alike, and agree about its HMAC key.
            let info = clients[reader]
                .get(&format!("/v1/key/describe/{name}"))
                .json();
            let other = clients[1 - reader]
                .get(&format!("/v1/key/describe/{name}"))
                .json();
            assert_eq!(info, other);
            let hmac = clients[reader].request(
                "PUT",
                &format!("/v1/key/hmac/{name}"),
                br#"{"message":"aGk="}"#,
            );
            let expected = if *key_writer == 0 { 409 } else { 200 };
            assert_eq!(hmac.status, expected, "{name}: {}", hmac.text());
        }
    }
}

#[test]
fn fs_every_key_and_dek_works_on_both_nodes() {
    every_key_and_dek_works_on_both_nodes(Store::Fs);
}

#[test]
fn ciphertrust_every_key_and_dek_works_on_both_nodes() {
    every_key_and_dek_works_on_both_nodes(Store::CipherTrust);
}

/// 2,000 MinIO-style round trips (a generate on one node, the decrypt of its DEK on the
/// other), from four threads; halfway through, the `2023` node is switched to `current`
/// by SIGHUP. Not one call fails, and the switch shows in what the node writes.
fn sighup_under_load_loses_nothing(store: Store) {
    const THREADS: usize = 4;
    const ROUNDS: usize = 500;
    let fleet = Fleet::start(store);
    let [mut old, _] = fleet.clients();
    assert_eq!(old.post("/v1/key/create/minio-key", b"").status, 200);

    let done = Arc::new(AtomicUsize::new(0));
    let switched = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut clients = fleet.clients();
            let (done, switched) = (done.clone(), switched.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                // (node, switched already when sent, msgpack form)
                let mut forms = Vec::new();
                for i in 0..ROUNDS {
                    let writer = (t + i) % 2;
                    let ctx = context("bucket", &format!("object-{t}-{i}"));
                    let was_switched = switched.load(Ordering::SeqCst);
                    let dek = post(
                        &mut clients[writer],
                        "/v1/key/generate/minio-key",
                        &json!({ "context": ctx }),
                    );
                    if dek.status != 200 {
                        failures.push(format!("generate on {writer}: {}", dek.text()));
                        continue;
                    }
                    let dek = dek.json();
                    let ciphertext = dek["ciphertext"].as_str().unwrap();
                    forms.push((
                        writer,
                        was_switched,
                        is_msgpack(&B64.decode(ciphertext).unwrap()),
                    ));
                    let r = post(
                        &mut clients[1 - writer],
                        "/v1/key/decrypt/minio-key",
                        &json!({ "ciphertext": ciphertext, "context": ctx }),
                    );
                    if r.status != 200 || r.json()["plaintext"] != dek["plaintext"] {
                        failures.push(format!("decrypt on {}: {}", 1 - writer, r.text()));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                (failures, forms)
            })
        })
        .collect();

    // Halfway: switch the old node, and wait until it says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < THREADS * ROUNDS / 2 {
        assert!(Instant::now() < deadline, "load stalled");
        std::thread::sleep(Duration::from_millis(2));
    }
    fleet.switch_old_node_to_current();
    let at_switch = done.load(Ordering::SeqCst);
    loop {
        if old.get("/v1/status").json()["oldest_reader"] == "current" {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP not applied");
        std::thread::sleep(Duration::from_millis(2));
    }
    switched.store(true, Ordering::SeqCst);
    let after_switch = done.load(Ordering::SeqCst);

    let mut failures = Vec::new();
    let mut forms = Vec::new();
    for worker in workers {
        let (f, s) = worker.join().unwrap();
        failures.extend(f);
        forms.extend(s);
    }
    assert_eq!(failures, Vec::<String>::new(), "failed calls");
    assert_eq!(forms.len(), THREADS * ROUNDS);
    assert!(
        after_switch < THREADS * ROUNDS,
        "the switch came after the load ({at_switch}, {after_switch})"
    );
    // The 2023 node wrote msgpack before the switch and the binary form once it said
    // it had switched; the current node always wrote the binary form.
    let old_msgpack = forms.iter().filter(|f| f.0 == 0 && f.2).count();
    let old_after: Vec<_> = forms.iter().filter(|f| f.0 == 0 && f.1).collect();
    assert!(old_msgpack > 0 && !old_after.is_empty());
    assert!(old_after.iter().all(|f| !f.2));
    assert!(forms.iter().filter(|f| f.0 == 1).all(|f| !f.2));
}

#[test]
fn fs_sighup_from_2023_to_current_under_load_loses_nothing() {
    sighup_under_load_loses_nothing(Store::Fs);
}

#[test]
fn ciphertrust_sighup_from_2023_to_current_under_load_loses_nothing() {
    sighup_under_load_loses_nothing(Store::CipherTrust);
}
