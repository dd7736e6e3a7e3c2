//! The CipherTrust tutorial's KES steps, verbatim, against the CipherTrust Manager
//! simulator: server and app identities with `kes tool identity`, the tutorial's
//! `server-config.yml` (`root: disabled`, the `my-app` policy for `${APP_IDENTITY}`,
//! `keystore.gemalto.keysecure`), `kes server --config=server-config.yml --auth=off`, then
//! `kes key create -k`, `kes key derive -k` and `kes key decrypt -k` as the app.

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
    identities:
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
"#,
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
}
