//! Microbenchmarks of the request hot path's building blocks.
//!
//! Run: `cargo bench --bench crypto` (see docs/BENCHMARKS.md for the numbers).
//! `baseline/*` is the physical limit the key operations are compared with: one
//! HMAC-SHA256 (key derivation) plus one AES-256-GCM seal of 32 bytes.

use std::hint::black_box;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use kes::crypto::{Cipher, KeyVersion, random_dek};
use kes::policy::{Policy, Rule};
use serde_json::Value;
use sha2::Sha256;

fn vectors(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn b64(v: &Value) -> Vec<u8> {
    v.as_str()
        .map(|s| B64.decode(s).unwrap())
        .unwrap_or_default()
}

fn cipher(v: &Value) -> Cipher {
    Cipher::parse(v["key_type"].as_str().unwrap()).unwrap()
}

/// (key, ciphertext, context, plaintext) of one vector case.
fn case(v: &Value) -> (KeyVersion, Vec<u8>, Vec<u8>, Vec<u8>) {
    let key = KeyVersion::import(&b64(&v["master_key_b64"]), cipher(v), "bench").unwrap();
    (
        key,
        b64(&v["ciphertext_b64"]),
        b64(&v["context_b64"]),
        b64(&v["plaintext_b64"]),
    )
}

fn find(list: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    list.as_array().unwrap().iter().find(|c| pred(c)).unwrap()
}

fn crypto(c: &mut Criterion) {
    let key = KeyVersion::generate(Cipher::Aes256, "bench");
    let dek = [7u8; 32];
    let context = br#"{"MinIO":"bucket/object"}"#;

    c.bench_function("encrypt/aes256/32B", |b| {
        b.iter(|| black_box(&key).encrypt(black_box(&dek), black_box(context)))
    });
    let chacha = KeyVersion::generate(Cipher::ChaCha20, "bench");
    c.bench_function("encrypt/chacha20/32B", |b| {
        b.iter(|| black_box(&chacha).encrypt(black_box(&dek), black_box(context)))
    });
    // What the generate route does for its crypto: a fresh DEK, then seal it.
    c.bench_function("generate/random_dek+encrypt", |b| {
        b.iter(|| {
            let dek = random_dek();
            black_box(&key).encrypt(&dek[..], black_box(context))
        })
    });
    c.bench_function("random_dek", |b| b.iter(random_dek));

    let current = vectors("ciphertext-current.json");
    let legacy = vectors("ciphertext-legacy.json");
    let cases = [
        (
            "decrypt/current/aes256",
            find(&current["cases"], |c| c["name"] == "aes-with-context"),
        ),
        (
            "decrypt/current/chacha20",
            find(&current["cases"], |c| c["name"] == "chacha-with-context"),
        ),
        (
            "decrypt/legacy-msgpack/aes256",
            find(&legacy["msgpack"], |c| {
                c["algorithm_string"] == "AES256-GCM_SHA256"
            }),
        ),
        (
            "decrypt/legacy-json/aes256",
            find(&legacy["json"], |c| c["key_type"] == "AES256"),
        ),
    ];
    for (name, v) in cases {
        let (key, ciphertext, context, plaintext) = case(v);
        assert_eq!(
            *key.decrypt(&ciphertext, &context).unwrap(),
            plaintext,
            "{name}"
        );
        c.bench_function(name, |b| {
            b.iter(|| {
                black_box(&key)
                    .decrypt(black_box(&ciphertext), black_box(&context))
                    .unwrap()
            })
        });
    }
    // A 32-byte DEK sealed now, as generate returns it.
    let sealed = key.encrypt(&dek, context);
    c.bench_function("decrypt/current/aes256/32B", |b| {
        b.iter(|| {
            black_box(&key)
                .decrypt(black_box(&sealed), black_box(context))
                .unwrap()
        })
    });

    // The physical limit: HMAC-SHA256 key derivation + AES-256-GCM of 32 bytes,
    // without randomness, allocation or framing.
    let master = [9u8; 32];
    let iv = [1u8; 16];
    let nonce = [2u8; 12];
    c.bench_function("baseline/hmac-sha256+aes256gcm/32B", |b| {
        b.iter(|| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(black_box(&master)).unwrap();
            mac.update(black_box(&iv));
            let aead_key = mac.finalize().into_bytes();
            let mut buf = [0u8; 32];
            buf.copy_from_slice(black_box(&dek));
            let tag = Aes256Gcm::new(&aead_key)
                .encrypt_in_place_detached(&nonce.into(), black_box(context), &mut buf)
                .unwrap();
            black_box((buf, tag))
        })
    });
    c.bench_function("baseline/getrandom/28B", |b| {
        b.iter(|| {
            let mut r = [0u8; 28];
            getrandom::getrandom(&mut r).unwrap();
            black_box(r)
        })
    });
}

fn identity(c: &mut Criterion) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench-client");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    c.bench_function("identity/of_cert_der", |b| {
        b.iter(|| kes::identity::of_cert_der(black_box(&der)).unwrap())
    });
}

fn policy(c: &mut Criterion) {
    c.bench_function("policy/rule_parse", |b| {
        b.iter(|| Rule::parse(black_box("/v1/key/generate/my-app*")).unwrap())
    });
    let rule = Rule::parse("/v1/key/generate/my-app*").unwrap();
    c.bench_function("policy/rule_matches", |b| {
        b.iter(|| black_box(&rule).matches(black_box("/v1/key/generate/my-app-42")))
    });
    let rules =
        |list: &[&str]| -> Vec<Rule> { list.iter().map(|r| Rule::parse(r).unwrap()).collect() };
    // The MinIO policy of the KES docs plus one deny rule.
    let minio = Policy {
        name: "minio".into(),
        allow: rules(&[
            "/v1/key/create/*",
            "/v1/key/generate/*",
            "/v1/key/decrypt/*",
            "/v1/key/bulk/decrypt",
            "/v1/key/list/*",
            "/v1/status",
            "/v1/metrics",
            "/v1/log/audit",
            "/v1/log/error",
        ]),
        deny: rules(&["/v1/key/generate/minio-internal*"]),
    };
    c.bench_function("policy/allows/minio-9-allow-1-deny", |b| {
        b.iter(|| black_box(&minio).allows(black_box("/v1/key/decrypt/my-key")))
    });
}

criterion_group!(benches, crypto, identity, policy);
criterion_main!(benches);
