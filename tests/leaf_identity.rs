//! Who a caller is: always the leaf certificate's identity, the one whose key signed the
//! handshake. Extra certificates a client appends after its leaf (the admin's public
//! certificate, a forged one carrying the admin's public key) never decide identity,
//! policy or audit, with `tls.auth` off and on, and across TLS session resumption.

mod common;

use std::time::{Duration, Instant};

use common::{Credential, Kes, Pki};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    PublicKeyData,
};

/// A certificate for `subject_key`'s public key, self-signed or issued by `issuer`.
fn cert(
    name: &str,
    subject_key: &impl PublicKeyData,
    ca: bool,
    issuer: Option<(&rcgen::Certificate, &KeyPair)>,
    self_key: Option<&KeyPair>,
) -> rcgen::Certificate {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    match (issuer, self_key) {
        (Some((issuer, issuer_key)), _) => params.signed_by(subject_key, issuer, issuer_key),
        (None, Some(key)) => params.self_signed(key),
        (None, None) => unreachable!("a certificate is self-signed or issued"),
    }
    .unwrap()
}

/// An attacker's credential: its own key signs the handshake, its certificate file holds
/// its leaf followed by `appended` (public certificates of other clients).
fn attacker(
    pki: &Pki,
    name: &str,
    leaf: &rcgen::Certificate,
    key: &KeyPair,
    appended: &[&str],
) -> Credential {
    let mut chain = leaf.pem();
    for pem in appended {
        chain.push_str(pem);
    }
    pki.save(name, &chain, &key.serialize_pem())
}

/// Two clients of one test: the admin and an app whose policy allows generating with
/// `app-*` keys. Both carry their private keys; attackers get only their certificates.
struct Victims {
    admin: Credential,
    app: Credential,
    admin_key: KeyPair,
}

fn victims(pki: &Pki, signed_by_ca: bool) -> Victims {
    let (admin, app) = if signed_by_ca {
        (pki.client_signed("admin"), pki.client_signed("app"))
    } else {
        (pki.client("admin"), pki.client("app"))
    };
    let admin_key = KeyPair::from_pem(&std::fs::read_to_string(&admin.key_path).unwrap()).unwrap();
    Victims {
        admin,
        app,
        admin_key,
    }
}

fn pem_of(cred: &Credential) -> String {
    std::fs::read_to_string(&cred.cert_path).unwrap()
}

fn start(pki: &Pki, v: &Victims, auth: &str) -> Kes {
    let ca = if auth == "on" {
        format!("  ca: {}\n", pki.ca_path.display())
    } else {
        String::new()
    };
    let config = pki.config(
        "config.yml",
        &format!(
            "tls:\n  auth: {auth}\n{ca}admin:\n  identity: {}\npolicy:\n  app:\n    allow: [/v1/key/generate/app-*, /v1/key/create/app-*]\n    identities: [{}]\nlog:\n  audit: on\nkeystore:\n  fs:\n    path: {}\n",
            v.admin.identity,
            v.app.identity,
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(pki, &config, &[]);
    let mut admin = kes.client(&v.admin);
    assert_eq!(admin.post("/v1/key/create/app-key", b"").status, 200);
    kes
}

/// The caller `who` is treated as `identity`, an identity with no policy: it is not the
/// admin, not the app, may neither create keys nor use the app's key, and the audit log
/// names it for every request it made.
fn assert_stranger(kes: &Kes, who: &Credential, v: &Victims) {
    assert_ne!(who.identity, v.admin.identity);
    assert_ne!(who.identity, v.app.identity);
    let mut c = kes.client(who);
    let me = c.get("/v1/identity/self/describe");
    assert_eq!(
        me.status,
        404,
        "a stranger has no identity entry: {}",
        me.text()
    );
    assert_eq!(me.message(), "identity does not exist");
    let create = c.post("/v1/key/create/app-stolen", b"");
    assert_eq!(create.status, 403, "{}", create.text());
    assert_eq!(create.message(), "not authorized: insufficient permissions");
    let generate = c.post("/v1/key/generate/app-key", b"{}");
    assert_eq!(generate.status, 403, "{}", generate.text());
    let delete = c.request("DELETE", "/v1/key/delete/app-key", b"");
    assert_eq!(delete.status, 403, "{}", delete.text());
    // The admin still finds the key: nothing was deleted.
    let mut admin = kes.client(&v.admin);
    assert_eq!(admin.get("/v1/key/describe/app-key").status, 200);
    assert_eq!(admin.get("/v1/key/describe/app-stolen").status, 404);
    assert_audited_as(kes, "/v1/key/delete/app-key", &who.identity, 403);
    assert_audited_as(kes, "/v1/key/create/app-stolen", &who.identity, 403);
}

/// The console audit log has a line for `path` with `identity` and `status`, and no line
/// for `path` with any other identity.
fn assert_audited_as(kes: &Kes, path: &str, identity: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = kes.stdout.lock().unwrap().clone();
        let events: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["request"]["path"] == path)
            .collect();
        if !events.is_empty() {
            for e in &events {
                assert_eq!(e["request"]["identity"], identity, "audit event {e}");
                assert_eq!(e["response"]["code"], status, "audit event {e}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no audit line for {path} on stdout: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server refuses the handshake: a TLS 1.3 client learns it only when it reads, so
/// the request must fail, not just the connect.
fn assert_refused(kes: &Kes, who: &Credential) {
    let mut c = kes.client(who);
    match c.try_request("GET", "/v1/identity/self/describe", b"") {
        Err(_) => {}
        Ok(resp) => panic!(
            "the handshake must fail, got {} {}",
            resp.status,
            resp.text()
        ),
    }
}

/// The attack of issue 19: a CA-flagged self-signed leaf made with a fresh key, followed
/// by the admin's (or the app's) public certificate.
fn ca_flagged_leaf_then(pki: &Pki, victim: &Credential, name: &str) -> Credential {
    let key = KeyPair::generate().unwrap();
    let leaf = cert(name, &key, true, None, Some(&key));
    attacker(pki, name, &leaf, &key, &[&pem_of(victim)])
}

#[test]
fn auth_off_a_ca_flagged_leaf_followed_by_the_admins_certificate_is_not_the_admin() {
    let pki = Pki::new();
    let v = victims(&pki, false);
    let kes = start(&pki, &v, "off");
    let mallory = ca_flagged_leaf_then(&pki, &v.admin, "mallory");
    assert_stranger(&kes, &mallory, &v);
}

#[test]
fn auth_off_a_ca_flagged_leaf_followed_by_an_apps_certificate_is_not_the_app() {
    let pki = Pki::new();
    let v = victims(&pki, false);
    let kes = start(&pki, &v, "off");
    let mallory = ca_flagged_leaf_then(&pki, &v.app, "mallory");
    assert_stranger(&kes, &mallory, &v);
    // The real app may do what the attacker may not, so the policy was in force.
    let mut app = kes.client(&v.app);
    assert_eq!(app.post("/v1/key/generate/app-key", b"{}").status, 200);
}

#[test]
fn auth_off_a_normal_leaf_followed_by_the_admins_certificate_is_the_leaf() {
    let pki = Pki::new();
    let v = victims(&pki, false);
    let kes = start(&pki, &v, "off");
    let key = KeyPair::generate().unwrap();
    let leaf = cert("mallory", &key, false, None, Some(&key));
    let mallory = attacker(&pki, "mallory", &leaf, &key, &[&pem_of(&v.admin)]);
    assert_stranger(&kes, &mallory, &v);
}

#[test]
fn auth_off_a_forged_certificate_with_the_admins_key_after_the_leaf_is_ignored() {
    let pki = Pki::new();
    let v = victims(&pki, false);
    let kes = start(&pki, &v, "off");
    // The attacker's own CA issues a certificate carrying the admin's public key.
    let ca_key = KeyPair::generate().unwrap();
    let ca = cert("mallory CA", &ca_key, true, None, Some(&ca_key));
    let forged = cert("admin", &v.admin_key, false, Some((&ca, &ca_key)), None);
    assert_eq!(
        kes::identity::of_cert_der(forged.der()).unwrap(),
        v.admin.identity,
        "the forged certificate carries the admin's identity"
    );
    let key = KeyPair::generate().unwrap();
    let leaf = cert("mallory", &key, false, Some((&ca, &ca_key)), None);
    let mallory = attacker(&pki, "mallory", &leaf, &key, &[&forged.pem(), &ca.pem()]);
    assert_stranger(&kes, &mallory, &v);
}

#[test]
fn auth_off_a_ca_flagged_leaf_alone_is_its_own_identity() {
    // A self-signed certificate marked as a CA (as some older tools make) is a usable
    // client certificate: its holder proved it has the key.
    let pki = Pki::new();
    let key = KeyPair::generate().unwrap();
    let leaf = cert("admin", &key, true, None, Some(&key));
    let admin = pki.save("ca-admin", &leaf.pem(), &key.serialize_pem());
    let app = pki.client("app");
    let config = pki.config(
        "config.yml",
        &format!(
            "tls:\n  auth: off\nadmin:\n  identity: {}\npolicy:\n  app:\n    allow: [/v1/key/generate/app-*]\n    identities: [{}]\nkeystore:\n  fs:\n    path: {}\n",
            admin.identity,
            app.identity,
            pki.path("keys").display()
        ),
    );
    let kes = Kes::start(&pki, &config, &[]);
    let mut c = kes.client(&admin);
    let me = c.get("/v1/identity/self/describe");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["identity"], admin.identity.as_str());
    assert_eq!(me.json()["admin"], true);
    assert_eq!(c.post("/v1/key/create/app-key", b"").status, 200);
}

#[test]
fn auth_on_a_ca_flagged_self_signed_leaf_with_the_admins_certificate_is_refused() {
    let pki = Pki::new();
    let v = victims(&pki, true);
    let kes = start(&pki, &v, "on");
    let mallory = ca_flagged_leaf_then(&pki, &v.admin, "mallory");
    assert_refused(&kes, &mallory);
    // The same with the app's certificate.
    let mallory = ca_flagged_leaf_then(&pki, &v.app, "mallory2");
    assert_refused(&kes, &mallory);
}

#[test]
fn auth_on_a_verified_leaf_followed_by_the_admins_certificate_is_the_leaf() {
    // The app is a legitimate client of the CA; it appends the admin's certificate.
    let pki = Pki::new();
    let v = victims(&pki, true);
    let kes = start(&pki, &v, "on");
    let app_key = KeyPair::from_pem(&std::fs::read_to_string(&v.app.key_path).unwrap()).unwrap();
    let chain = format!("{}{}", pem_of(&v.app), pem_of(&v.admin));
    let sneaky = pki.save("sneaky-app", &chain, &app_key.serialize_pem());
    assert_eq!(sneaky.identity, v.app.identity);
    let mut c = kes.client(&sneaky);
    let me = c.get("/v1/identity/self/describe");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["identity"], v.app.identity.as_str());
    assert_ne!(me.json()["admin"], true);
    // The app's policy applies, not the admin's powers.
    assert_eq!(c.post("/v1/key/generate/app-key", b"{}").status, 200);
    assert_eq!(c.post("/v1/key/create/other", b"").status, 403);
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/app-key", b"").status,
        403
    );
    assert_audited_as(&kes, "/v1/key/create/other", &v.app.identity, 403);
    assert_audited_as(&kes, "/v1/key/delete/app-key", &v.app.identity, 403);
}

#[test]
fn auth_on_a_forged_admin_key_certificate_after_a_verified_leaf_is_ignored() {
    let pki = Pki::new();
    let v = victims(&pki, true);
    let kes = start(&pki, &v, "on");
    let ca_key = KeyPair::generate().unwrap();
    let ca = cert("mallory CA", &ca_key, true, None, Some(&ca_key));
    let forged = cert("admin", &v.admin_key, false, Some((&ca, &ca_key)), None);
    let app_key = KeyPair::from_pem(&std::fs::read_to_string(&v.app.key_path).unwrap()).unwrap();
    let chain = format!("{}{}{}", pem_of(&v.app), forged.pem(), ca.pem());
    let sneaky = pki.save("sneaky-app", &chain, &app_key.serialize_pem());
    let mut c = kes.client(&sneaky);
    let me = c.get("/v1/identity/self/describe");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["identity"], v.app.identity.as_str());
    assert_eq!(c.post("/v1/key/create/other", b"").status, 403);
    assert_audited_as(&kes, "/v1/key/create/other", &v.app.identity, 403);
}

#[test]
fn auth_on_a_ca_flagged_leaf_issued_by_the_trusted_ca_is_refused() {
    // Even a leaf the trusted CA issued cannot be used when it is itself a CA: chain
    // verification refuses a CA certificate as the end entity.
    let pki = Pki::new();
    let v = victims(&pki, true);
    let kes = start(&pki, &v, "on");
    let ca_pem = std::fs::read_to_string(&pki.ca_path).unwrap();
    let (real_ca_key, real_ca) = pki.ca();
    let key = KeyPair::generate().unwrap();
    let leaf = cert("sub CA", &key, true, Some((real_ca, real_ca_key)), None);
    let mallory = attacker(&pki, "mallory", &leaf, &key, &[&pem_of(&v.admin), &ca_pem]);
    assert_refused(&kes, &mallory);
}

/// A resumed TLS session keeps the identity of the leaf verified when it was made, in
/// both TLS versions.
#[test]
fn a_resumed_session_keeps_the_leafs_identity() {
    for auth in ["off", "on"] {
        let pki = Pki::new();
        let v = victims(&pki, auth == "on");
        let kes = start(&pki, &v, auth);
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut c = kes.client(&v.app).with_versions(&[version]);
            for round in 0..3 {
                let me = c.get("/v1/identity/self/describe");
                assert_eq!(me.status, 200, "{}", me.text());
                assert_eq!(me.json()["identity"], v.app.identity.as_str());
                let kind = c.stream().conn.handshake_kind();
                let want = if round == 0 {
                    rustls::HandshakeKind::Full
                } else {
                    rustls::HandshakeKind::Resumed
                };
                assert_eq!(kind, Some(want), "auth {auth}, {version:?}, round {round}");
                assert_eq!(c.post("/v1/key/create/other", b"").status, 403);
                c = c.reconnected();
            }
        }
    }
}
