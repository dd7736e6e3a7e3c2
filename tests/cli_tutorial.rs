//! The CipherTrust tutorial's KES steps, verbatim, against the CipherTrust Manager
//! simulator: server and app identities with `kes tool identity`, the tutorial's
//! `server-config.yml` (`root: disabled`, the `my-app` policy for `${APP_IDENTITY}`,
//! `keystore.gemalto.keysecure`), `kes server --config=server-config.yml --auth=off`, then
//! `kes key create -k`, `kes key derive -k` and `kes key decrypt -k` as the app; then
//! the same with `master_keys: resident` (the keys never leave CipherTrust), plus
//! `kes key rotate`.

mod cli_support;
#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use cli_support::{
    TUTORIAL_APP_IDENTITY, TUTORIAL_SERVER_IDENTITY, TempDir, fails, kes_in, ok, start_server,
};
use ctm_sim::{CtmSim, REFRESH_TOKEN};

#[test]
fn ciphertrust_tutorial_runs_as_written() {
    let sim = CtmSim::start();
    tutorial(&sim, "", "", |_, _| {});
    assert_eq!(sim.secret_type("my-app-key").as_deref(), Some("seed"));
}

#[test]
fn ciphertrust_tutorial_with_resident_master_keys() {
    resident_tutorial(false);
}

/// The same against a stand-in that accepts only the forms proven against a live
/// CipherTrust Manager (tests/common/ctm_keys.rs).
#[test]
fn ciphertrust_tutorial_with_resident_master_keys_strict() {
    resident_tutorial(true);
}

fn resident_tutorial(strict: bool) {
    let sim = CtmSim::start();
    sim.set_strict(strict);
    let rotate = "    - /v1/key/rotate/my-app*\n    - /v1/key/describe/my-app*\n";
    tutorial(
        &sim,
        "      master_keys: resident\n",
        rotate,
        |run, ciphertext| {
            // A rotation: new data keys use version 1, the tutorial's still decrypts.
            let rotated = ok(run(&["key", "rotate", "-k", "--json", "my-app-key"]));
            assert_eq!(rotated.trim(), r#"{"name":"my-app-key","version":1}"#);
            let derived: serde_json::Value =
                serde_json::from_str(&ok(run(&["key", "derive", "-k", "my-app-key"]))).unwrap();
            assert_ne!(derived["ciphertext"].as_str(), Some(ciphertext));
            ok(run(&["key", "decrypt", "-k", "my-app-key", ciphertext]));
            let info: serde_json::Value =
                serde_json::from_str(&ok(run(&["key", "info", "-k", "--json", "my-app-key"])))
                    .unwrap();
            assert_eq!(
                (info["resident"].as_bool(), info["version"].as_u64()),
                (Some(true), Some(1)),
                "{info}"
            );
            assert!(fails(run(&["key", "rotate", "-k", "other"])).contains("not authorized"));
        },
    );
    // The key is CipherTrust's, never exported: no secret, two versions.
    assert_eq!(sim.secret_count(), 0);
    assert_eq!(sim.key_versions("my-app-key").len(), 2);
    assert_eq!(sim.export_count(), 0);
}

/// The tutorial's steps 2 to 6 with `keystore_extra` added to the keystore section and
/// `policy_extra` to the app's paths; `more` runs further `kes` commands as the app, given
/// the tutorial's ciphertext.
fn tutorial(
    sim: &CtmSim,
    keystore_extra: &str,
    policy_extra: &str,
    more: impl FnOnce(&dyn Fn(&[&str]) -> std::process::Output, &str),
) {
    let dir = TempDir::new("tutorial");
    let run = |args: &[&str], env: &[(&str, &str)]| kes_in(&dir.0, args, env);

    // Step 2 and 3, verbatim.
    ok(run(TUTORIAL_SERVER_IDENTITY, &[]));
    ok(run(TUTORIAL_APP_IDENTITY, &[]));
    let app_identity = ok(run(&["tool", "identity", "of", "app.cert"], &[]));

    // Step 4: the tutorial's config (on a free port instead of 7373).
    let config = format!(
        r#"address: 127.0.0.1:0
root: disabled
tls:
  key: server.key
  cert: server.cert
policy:
  my-app:
    paths:
    - /v1/key/create/my-app*
    - /v1/key/generate/my-app*
    - /v1/key/decrypt/my-app*
{policy_extra}    identities:
    - ${{APP_IDENTITY}}
keystore:
  gemalto:
    keysecure:
      endpoint: {endpoint}
      credentials:
        token: {token}
        domain: ""
        retry: 15s
      tls:
        ca: {ca}
{keystore_extra}"#,
        endpoint = sim.endpoint(),
        token = REFRESH_TOKEN,
        ca = sim.ca_file().display()
    );
    std::fs::write(dir.path("server-config.yml"), config).unwrap();

    // Step 5, verbatim.
    let server = start_server(
        &dir.0,
        &["server", "--config=server-config.yml", "--auth=off"],
        &[("APP_IDENTITY", &app_identity)],
    );

    // Step 6, verbatim, as the app.
    let app = [
        ("KES_SERVER", server.address.as_str()),
        ("KES_CLIENT_CERT", "app.cert"),
        ("KES_CLIENT_KEY", "app.key"),
    ];
    assert_eq!(ok(run(&["key", "create", "-k", "my-app-key"], &app)), "");
    let derived: serde_json::Value =
        serde_json::from_str(&ok(run(&["key", "derive", "-k", "my-app-key"], &app))).unwrap();
    let plaintext = derived["plaintext"].as_str().unwrap();
    let ciphertext = derived["ciphertext"].as_str().unwrap();
    assert_eq!(
        ok(run(
            &["key", "decrypt", "-k", "my-app-key", ciphertext],
            &app
        )),
        format!("{{\"plaintext\":\"{plaintext}\"}}")
    );
    // The policy holds: nothing outside my-app*, and no admin (root: disabled).
    assert!(fails(run(&["key", "create", "-k", "other"], &app)).contains("not authorized"));
    assert!(fails(run(&["status", "-k"], &app)).contains("not authorized"));
    more(&|args: &[&str]| run(args, &app), ciphertext);
}
