//! The `kes` client commands against the real `kes server`, over mTLS, with identities
//! made by the CLI itself as the CipherTrust tutorial makes them.

mod cli_support;

use cli_support::{
    Server, TUTORIAL_APP_IDENTITY, TUTORIAL_SERVER_IDENTITY, TempDir, fails, kes_in, ok,
    start_server,
};

/// The identities of one test setup, made with the CLI in `dir`.
struct Setup {
    dir: TempDir,
    admin_identity: String,
    admin_api_key: String,
    app_identity: String,
    minio_identity: String,
}

fn setup(label: &str) -> Setup {
    let dir = TempDir::new(label);
    // The tutorial's identity steps, verbatim.
    ok(kes_in(&dir.0, TUTORIAL_SERVER_IDENTITY, &[]));
    ok(kes_in(&dir.0, TUTORIAL_APP_IDENTITY, &[]));
    let app_identity = ok(kes_in(&dir.0, ["tool", "identity", "of", "app.cert"], &[]));
    // An admin with both an API key and a certificate for the same key.
    let text = ok(kes_in(
        &dir.0,
        [
            "identity",
            "new",
            "--key",
            "admin.key",
            "--cert",
            "admin.cert",
            "admin",
        ],
        &[],
    ));
    let admin_api_key = text
        .split_whitespace()
        .find(|w| w.starts_with("kes:v1:"))
        .unwrap()
        .to_owned();
    let admin_identity = ok(kes_in(&dir.0, ["identity", "of", &admin_api_key], &[]));
    ok(kes_in(
        &dir.0,
        [
            "identity",
            "new",
            "--key",
            "minio.key",
            "--cert",
            "minio.cert",
            "minio",
        ],
        &[],
    ));
    let minio_identity = ok(kes_in(&dir.0, ["identity", "of", "minio.cert"], &[]));
    Setup {
        dir,
        admin_identity,
        admin_api_key,
        app_identity,
        minio_identity,
    }
}

/// Writes `server-config.yml` (the tutorial's shape: `root:`, a `my-app` policy for
/// `${APP_IDENTITY}`, plus a MinIO-style policy; keys in a directory) and starts
/// `kes server --config=server-config.yml --auth=off`.
fn start(setup: &Setup) -> Server {
    let config = format!(
        r#"address: 127.0.0.1:0
root: {admin}
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
  minio-server:
    allow:
    - /v1/key/create/*
    - /v1/key/generate/*
    - /v1/key/decrypt/*
    - /v1/key/list/*
    deny:
    - /v1/key/*/my-app-internal*
    identities:
    - {minio}
keystore:
  fs:
    path: ./keys
"#,
        admin = setup.admin_identity,
        minio = setup.minio_identity
    );
    std::fs::write(setup.dir.path("server-config.yml"), config).unwrap();
    // Verbatim from the tutorial.
    start_server(
        &setup.dir.0,
        &["server", "--config=server-config.yml", "--auth=off"],
        &[("APP_IDENTITY", &setup.app_identity)],
    )
}

/// The environment of a client using a certificate and key file.
fn cert_env<'a>(server: &'a Server, cert: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("KES_SERVER", server.address.as_str()),
        ("KES_CLIENT_CERT", cert),
        ("KES_CLIENT_KEY", key),
    ]
}

#[test]
fn status_identities_policies_and_listings_over_mtls() {
    let setup = setup("server-read");
    let server = start(&setup);
    let dir = &setup.dir.0;
    let admin = cert_env(&server, "admin.cert", "admin.key");

    // status: JSON (stdout is a pipe) in the SDK's State shape.
    let status: serde_json::Value =
        serde_json::from_str(&ok(kes_in(dir, ["status", "-k"], &admin))).unwrap();
    assert!(
        status["version"].is_string() && status["os"].is_string(),
        "{status}"
    );
    let apis: serde_json::Value =
        serde_json::from_str(&ok(kes_in(dir, ["status", "--api", "-k"], &admin))).unwrap();
    assert!(
        apis.as_array()
            .unwrap()
            .iter()
            .any(|api| api["path"] == "/v1/key/create/"),
        "{apis}"
    );

    // The same admin through its API key, in every variable generation.
    for var in ["KES_API_KEY", "MINIO_KES_API_KEY", "MINIO_KMS_KES_API_KEY"] {
        let env = [
            ("KES_SERVER", server.address.as_str()),
            (var, setup.admin_api_key.as_str()),
        ];
        let me: serde_json::Value =
            serde_json::from_str(&ok(kes_in(dir, ["identity", "info", "-k"], &env))).unwrap();
        assert_eq!(me["identity"], setup.admin_identity.as_str());
        assert_eq!(me["admin"], true);
    }

    // Trusting the server certificate instead of -k, by name and by IP.
    let port = server.address.rsplit(':').next().unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let address = format!("{host}:{port}");
        let env = [
            ("KES_SERVER", address.as_str()),
            ("KES_API_KEY", setup.admin_api_key.as_str()),
            ("KES_CAPATH", "server.cert"),
        ];
        ok(kes_in(dir, ["status"], &env));
    }
    // Without -k or a CA the error says what to do.
    let message = fails(kes_in(dir, ["status"], &admin));
    assert!(
        message.contains("--insecure") && message.contains("KES_CAPATH"),
        "{message}"
    );

    // A comma-separated server list fails over past a dead endpoint.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let list = format!("{dead},https://{}", server.address);
    let env = [
        ("KES_SERVER", list.as_str()),
        ("KES_API_KEY", setup.admin_api_key.as_str()),
    ];
    ok(kes_in(dir, ["status", "-k", "--json"], &env));

    // Identities and policies.
    let ids: Vec<String> =
        serde_json::from_str(&ok(kes_in(dir, ["identity", "ls", "-k"], &admin))).unwrap();
    assert!(ids.contains(&setup.app_identity), "{ids:?}");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&ok(kes_in(dir, ["ls", "-k", "-i"], &admin))).unwrap(),
        ids
    );
    // `kes ls` takes the server and API key from flags, too.
    let flagged = ok(kes_in(
        dir,
        [
            "ls",
            "-i",
            "-k",
            "-s",
            &server.address,
            "-a",
            &setup.admin_api_key,
        ],
        &[],
    ));
    assert_eq!(serde_json::from_str::<Vec<String>>(&flagged).unwrap(), ids);
    let policies: Vec<String> =
        serde_json::from_str(&ok(kes_in(dir, ["policy", "ls", "-k"], &admin))).unwrap();
    assert_eq!(policies, ["minio-server", "my-app"]);
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&ok(kes_in(dir, ["ls", "-p", "-k", "my*"], &admin)))
            .unwrap(),
        ["my-app"]
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(kes_in(dir, ["policy", "info", "my-app", "-k"], &admin))).unwrap();
    assert_eq!(info["name"], "my-app");
    let shown: serde_json::Value = serde_json::from_str(&ok(kes_in(
        dir,
        ["policy", "show", "-k", "minio-server"],
        &admin,
    )))
    .unwrap();
    assert!(shown["allow"]["/v1/key/create/*"].is_object(), "{shown}");
    assert!(
        shown["deny"]["/v1/key/*/my-app-internal*"].is_object(),
        "{shown}"
    );
    let message = fails(kes_in(dir, ["policy", "show", "-k", "nope"], &admin));
    assert!(message.contains("policy does not exist"), "{message}");
    let described: serde_json::Value = serde_json::from_str(&ok(kes_in(
        dir,
        ["identity", "info", "-k", &setup.app_identity],
        &admin,
    )))
    .unwrap();
    assert_eq!(described["policy"], "my-app");

    // The app's own view, and what it may not do.
    let app = cert_env(&server, "app.cert", "app.key");
    let me: serde_json::Value =
        serde_json::from_str(&ok(kes_in(dir, ["identity", "info", "-k"], &app))).unwrap();
    assert_eq!(me["identity"], setup.app_identity.as_str());
    assert_eq!(me["policy"], "my-app");
    // The server answers the 2023 shape (rules as lists under `policy`); the CLI shows
    // them as the last release's rule objects.
    assert!(me["allow"]["/v1/key/create/my-app*"].is_object(), "{me}");
    let message = fails(kes_in(dir, ["status", "-k"], &app));
    assert!(
        message.contains("not authorized") && message.contains(&setup.app_identity),
        "{message}"
    );
}

#[test]
fn tutorial_key_steps_verbatim_and_key_commands() {
    let setup = setup("server-keys");
    let server = start(&setup);
    let dir = &setup.dir.0;
    // export KES_CLIENT_CERT=app.cert KES_CLIENT_KEY=app.key
    let app = cert_env(&server, "app.cert", "app.key");

    // kes key create -k my-app-key
    assert_eq!(
        ok(kes_in(dir, ["key", "create", "-k", "my-app-key"], &app)),
        ""
    );
    // kes key derive -k my-app-key
    let dek: serde_json::Value = serde_json::from_str(&ok(kes_in(
        dir,
        ["key", "derive", "-k", "my-app-key"],
        &app,
    )))
    .unwrap();
    let plaintext = dek["plaintext"].as_str().unwrap().to_owned();
    let ciphertext = dek["ciphertext"].as_str().unwrap().to_owned();
    // kes key decrypt -k my-app-key <ciphertext>
    let out = ok(kes_in(
        dir,
        ["key", "decrypt", "-k", "my-app-key", &ciphertext],
        &app,
    ));
    assert_eq!(out, format!("{{\"plaintext\":\"{plaintext}\"}}"));

    // Outside the app's policy: refused with a hint.
    let message = fails(kes_in(dir, ["key", "create", "-k", "other-key"], &app));
    assert!(message.contains("not authorized"), "{message}");
    let message = fails(kes_in(dir, ["key", "create", "-k", "my-app-key"], &app));
    assert!(message.contains("key already exists"), "{message}");

    // The admin's full set of key commands.
    let admin = cert_env(&server, "admin.cert", "admin.key");
    ok(kes_in(
        dir,
        [
            "key",
            "import",
            "-k",
            "imported",
            "Xlnr/nOgAWE5cA7GAsl3L2goCvmfs6KE0gNgB1T93wE=",
        ],
        &admin,
    ));
    // The oldest form of import.
    ok(kes_in(
        dir,
        [
            "key",
            "create",
            "-k",
            "imported-old",
            "Xlnr/nOgAWE5cA7GAsl3L2goCvmfs6KE0gNgB1T93wE=",
        ],
        &admin,
    ));
    let names: Vec<String> =
        serde_json::from_str(&ok(kes_in(dir, ["key", "ls", "-k"], &admin))).unwrap();
    assert_eq!(names, ["imported", "imported-old", "my-app-key"]);
    let names: Vec<String> =
        serde_json::from_str(&ok(kes_in(dir, ["ls", "-k", "imp*"], &admin))).unwrap();
    assert_eq!(names, ["imported", "imported-old"]);
    let info: serde_json::Value = serde_json::from_str(&ok(kes_in(
        dir,
        ["key", "info", "-k", "my-app-key"],
        &admin,
    )))
    .unwrap();
    assert_eq!(info["name"], "my-app-key");
    assert_eq!(info["created_by"], setup.app_identity.as_str());
    let described = ok(kes_in(dir, ["key", "describe", "-k", "my-app-key"], &admin));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&described).unwrap(),
        info
    );

    let encrypted: serde_json::Value = serde_json::from_str(&ok(kes_in(
        dir,
        ["key", "encrypt", "-k", "imported", "Hello World"],
        &admin,
    )))
    .unwrap();
    let out = ok(kes_in(
        dir,
        [
            "key",
            "decrypt",
            "-k",
            "imported",
            encrypted["ciphertext"].as_str().unwrap(),
        ],
        &admin,
    ));
    assert_eq!(out, "{\"plaintext\":\"SGVsbG8gV29ybGQ=\"}");
    // With a context, which must match.
    let dek: serde_json::Value = serde_json::from_str(&ok(kes_in(
        dir,
        ["key", "dek", "-k", "imported", "Y3R4"],
        &admin,
    )))
    .unwrap();
    let ciphertext = dek["ciphertext"].as_str().unwrap();
    ok(kes_in(
        dir,
        ["key", "decrypt", "-k", "imported", ciphertext, "Y3R4"],
        &admin,
    ));
    let message = fails(kes_in(
        dir,
        ["key", "decrypt", "-k", "imported", ciphertext],
        &admin,
    ));
    assert!(message.contains("ciphertext is not authentic"), "{message}");

    ok(kes_in(
        dir,
        ["key", "rm", "-k", "imported", "imported-old"],
        &admin,
    ));
    let message = fails(kes_in(dir, ["key", "info", "-k", "imported"], &admin));
    assert!(message.contains("key does not exist"), "{message}");

    // A MinIO-style identity under the seed's minio-server policy: create, generate,
    // decrypt and list, but nothing under my-app-internal.
    let minio = cert_env(&server, "minio.cert", "minio.key");
    ok(kes_in(dir, ["key", "create", "-k", "minio-key"], &minio));
    let dek: serde_json::Value =
        serde_json::from_str(&ok(kes_in(dir, ["key", "dek", "-k", "minio-key"], &minio))).unwrap();
    ok(kes_in(
        dir,
        [
            "key",
            "decrypt",
            "-k",
            "minio-key",
            dek["ciphertext"].as_str().unwrap(),
        ],
        &minio,
    ));
    let names: Vec<String> =
        serde_json::from_str(&ok(kes_in(dir, ["key", "ls", "-k"], &minio))).unwrap();
    assert!(names.contains(&"minio-key".to_owned()), "{names:?}");
    let message = fails(kes_in(
        dir,
        ["key", "create", "-k", "my-app-internal-1"],
        &minio,
    ));
    assert!(message.contains("not authorized"), "{message}");
    let message = fails(kes_in(dir, ["key", "rm", "-k", "minio-key"], &minio));
    assert!(message.contains("not authorized"), "{message}");
}

/// Runs `kes ARGS` in the background, runs `then`, and returns the first line of
/// output that `wanted` accepts; stops the command.
fn line_from(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    then: impl FnOnce(),
    wanted: impl Fn(&str) -> bool,
) -> String {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kes"));
    command
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped());
    for var in cli_support::CLIENT_VARS {
        command.env_remove(var);
    }
    let mut child = command.envs(env.iter().copied()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // Give the command time to connect (a log stream only carries later events).
    std::thread::sleep(std::time::Duration::from_millis(500));
    then();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) if wanted(&line) => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|| {
        panic!("kes {args:?} printed no wanted line in time; it printed {seen:?}")
    })
}

#[test]
fn log_and_metric_against_the_server() {
    let setup = setup("server-log");
    let server = start(&setup);
    let dir = &setup.dir.0;
    let admin = cert_env(&server, "admin.cert", "admin.key");

    let event = line_from(
        dir,
        &["log", "-k"],
        &admin,
        || {
            ok(kes_in(dir, ["key", "create", "-k", "logged-key"], &admin));
        },
        |line| line.contains("/v1/key/create/logged-key"),
    );
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(
        event["request"]["path"], "/v1/key/create/logged-key",
        "{event}"
    );
    assert_eq!(event["request"]["identity"], setup.admin_identity.as_str());
    assert_eq!(event["response"]["code"], 200);

    let scrape = line_from(
        dir,
        &["metric", "-k", "--rate", "100ms"],
        &admin,
        || {},
        |_| true,
    );
    let metric: serde_json::Value = serde_json::from_str(&scrape).unwrap();
    assert!(
        metric["kes_http_request_success"].as_u64().unwrap() >= 1,
        "{metric}"
    );
    assert!(
        metric["kes_system_num_cpu"].as_u64().unwrap() >= 1,
        "{metric}"
    );
}
