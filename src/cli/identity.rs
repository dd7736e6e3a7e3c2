//! `kes identity …` (current generation) and `kes tool identity new|of` (releases
//! v0.13 … v0.18).
//!
//! Where the generations differ:
//! * `identity new` always makes an API key; with `--key/--cert` it also writes a
//!   certificate for that key usable by clients *and* servers (clientAuth + serverAuth),
//!   valid for `--expiry` (default 720h). Without a subject the CN is the identity.
//! * `tool identity new` always writes a key (default `./private.key`) and a certificate
//!   (default `./public.crt`) valid for `-t/--time` (default 720h), for a client, or for a
//!   server with `--server`; the CN is the optional subject. It prints nothing when the
//!   output is not a terminal.
//! * `tool identity of` reads the certificate from a file or standard input and prints
//!   the bare identity when the output is not a terminal.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use sha2::Digest;

use super::args::{self, COLOR, ENCLAVE, Flag, INSECURE, JSON, Parsed};
use super::client::{Client, Method};
use super::ls::{ListKind, run_group_ls};
use super::output::{self, Paint};
use super::{Exit, Outcome, path_segment, subcommand};
use crate::apikey::{ApiKey, CertificateSpec, Usage};

const USAGE: &str = "Usage:
    kes identity <command>
    kes identity [KEY | FILE]

Commands:
    new                      Create a new KES identity.
    of                       Compute a KES identity from an API key or certificate.
    info                     Get information about a KES identity.
    ls                       List KES identities.

Without a command, prints a new API key and its identity; with an API key or a
certificate file, prints its identity; with an Ed25519 private key file, prints
its API key.

Options:
    -h, --help               Print command line options.

Examples:
    $ kes identity
    $ kes identity kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
    $ kes identity client.crt
";

const DEFAULT_VALIDITY: Duration = Duration::from_secs(720 * 3600);

/// `kes identity …`.
pub fn run(raw: Vec<OsString>) -> Outcome {
    if let Some((command, rest)) = subcommand(&raw) {
        match command.as_str() {
            "new" => return new(rest),
            "of" => return of(rest),
            "info" => return info(rest),
            "ls" | "list" => return ls(rest, &command),
            "rm" | "assign" | "forget" => {
                return Err(Exit::Error(format!(
                    "'kes identity {command}' changed identities at runtime on older or stateful \
                     servers: here identities are assigned to policies in the server's config file"
                )));
            }
            _ => {}
        }
    }
    let parsed = args::parse("kes identity", USAGE, &[], raw)?;
    match parsed.positionals.as_slice() {
        [] => print_new_api_key(),
        [argument] => print_identity_of(argument),
        _ => Err(Exit::Error(
            "too many arguments. See 'kes identity --help'".into(),
        )),
    }
}

fn print_new_api_key() -> Outcome {
    let key =
        ApiKey::generate().map_err(|e| Exit::Error(format!("failed to generate API key: {e}")))?;
    let text = key.to_text();
    if !output::stdout_is_terminal() {
        return output::print(&text);
    }
    let paint = Paint {
        enabled: !output::no_color_requested(),
    };
    let message = zeroize::Zeroizing::new(format!(
        "\nYour API key:\n\n   {}\n\nThis is the only time it is shown. Keep it secret and secure!\n\n\
         Your API key's identity:\n\n   {}\n\nThe identity is not a secret and can be shared securely.\n\
         Peers need your identity in order to verify your API key.\n\n\
         This identity can be re-computed again via:\n\n   $ kes identity {}\n\n",
        paint.bold(&text),
        paint.bold(&key.identity()),
        text.as_str()
    ));
    output::print(&message)
}

/// What a `KEY | FILE` argument turned out to be.
enum Recognized {
    Identity(String),
    ApiKey(ApiKey),
}

/// An API key → its identity; a PEM file → the identity of its first certificate, or the
/// API key of its Ed25519 private key.
fn recognize(argument: &str) -> Result<Recognized, Exit> {
    if argument.starts_with(crate::apikey::PREFIX) {
        let key = ApiKey::parse(argument).map_err(|e| Exit::Error(e.to_string()))?;
        return Ok(Recognized::Identity(key.identity()));
    }
    let pem = match std::fs::read(argument) {
        Ok(pem) => zeroize::Zeroizing::new(pem),
        Err(e) => {
            // Not a file: maybe an API key without its prefix.
            if let Ok(key) = ApiKey::parse(argument) {
                return Ok(Recognized::Identity(key.identity()));
            }
            return Err(Exit::Error(format!("cannot read '{argument}': {e}")));
        }
    };
    recognize_pem(&pem, argument)
}

fn recognize_pem(pem: &[u8], filename: &str) -> Result<Recognized, Exit> {
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(der)) => {
                let identity = crate::identity::of_cert_der(&der).map_err(|e| {
                    Exit::Error(format!("failed to parse certificate in '{filename}': {e}"))
                })?;
                return Ok(Recognized::Identity(identity));
            }
            Ok(rustls_pemfile::Item::Pkcs8Key(der)) => {
                return ApiKey::from_pkcs8_der(der.secret_pkcs8_der())
                    .map(Recognized::ApiKey)
                    .ok_or_else(|| unsupported_key(filename));
            }
            Ok(rustls_pemfile::Item::Pkcs1Key(_) | rustls_pemfile::Item::Sec1Key(_)) => {
                return Err(unsupported_key(filename));
            }
            _ => {}
        }
    }
    Err(Exit::Error(format!(
        "'{filename}' contains no valid PEM certificate or private key"
    )))
}

fn unsupported_key(filename: &str) -> Exit {
    Exit::Error(format!(
        "'{filename}' contains unsupported private key. Only ed25519 private keys are supported"
    ))
}

fn print_identity_of(argument: &str) -> Outcome {
    let terminal = output::stdout_is_terminal();
    let paint = Paint {
        enabled: terminal && !output::no_color_requested(),
    };
    match recognize(argument)? {
        Recognized::Identity(identity) if terminal => {
            output::print(&format!("\nIdentity:\n\n   {}\n\n", paint.bold(&identity)))
        }
        Recognized::Identity(identity) => output::print(&identity),
        Recognized::ApiKey(key) if terminal => {
            let text = key.to_text();
            let message = zeroize::Zeroizing::new(format!(
                "\nYour API key:\n\n   {}\n\nIt corresponds to the private key in: {argument}.\nKeep it secret and secure!\n\n",
                paint.bold(&text)
            ));
            output::print(&message)
        }
        Recognized::ApiKey(key) => output::print(&key.to_text()),
    }
}

const OF_USAGE: &str = "Usage:
    kes identity of <api-key>
    kes identity of <certificate>

Options:
    -h, --help               Print command line options.

Prints the identity of an API key or of a PEM certificate file (for an Ed25519
private key file: its API key). Only the identity is printed when the output is
not a terminal.

Examples:
    $ kes identity of kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
    $ kes identity of client.crt
";

fn of(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes identity of", OF_USAGE, &[], raw)?;
    match parsed.positionals.as_slice() {
        [] => Err(Exit::Error(
            "no API key or certificate specified. See 'kes identity of --help'".into(),
        )),
        [argument] => print_identity_of(argument),
        _ => Err(Exit::Error(
            "too many arguments. See 'kes identity of --help'".into(),
        )),
    }
}

const NEW_USAGE: &str = "Usage:
    kes identity new [options] [<subject>]

Options:
    --key <PATH>             Optional path for the private key.
    --cert <PATH>            Optional path for the certificate.

    --ip <IP>                Add <IP> as subject alternative name (SAN). Repeatable.
                             Requires the --key and --cert flags.
    --dns <DOMAIN>           Add <DOMAIN> as subject alternative name (SAN). Repeatable.
                             Requires the --key and --cert flags.
    --expiry <DURATION>      Duration until the certificate expires. (default: 720h)
                             Requires the --key and --cert flags.
    -f, --force              Overwrite an existing private key and/or certificate.

    -h, --help               Print command line options.

Creates an API key. With --key and --cert, also writes its Ed25519 private key and a
self-signed certificate usable by KES clients and servers.

Examples:
    $ kes identity new
    $ kes identity new --ip \"192.168.0.182\" --ip \"10.0.0.92\" --key private.key --cert public.crt localhost
    $ kes identity new --key server.key --cert server.crt --expiry 8760h kes-server.local
";

const NEW_FLAGS: &[Flag] = &[
    args::option("key", None),
    args::option("cert", None),
    args::option("ip", None),
    args::option("dns", None),
    args::option("expiry", None),
    args::switch("encrypt", None),
    args::switch("force", Some('f')),
];

/// Every `--ip` value (comma-separated lists allowed), parsed.
fn ip_addresses(parsed: &Parsed) -> Result<Vec<IpAddr>, Exit> {
    let mut ips = Vec::new();
    for value in parsed.values("ip") {
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip = item
                .parse()
                .map_err(|_| Exit::Error(format!("{item:?} is not a valid IP address")))?;
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// Every `--dns` value (comma-separated lists allowed).
fn dns_names(parsed: &Parsed) -> Vec<String> {
    parsed
        .values("dns")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn new(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes identity new", NEW_USAGE, NEW_FLAGS, raw)?;
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes identity new --help'".into(),
        ));
    }
    let (key_path, cert_path) = (parsed.value("key"), parsed.value("cert"));
    match (key_path, cert_path) {
        (Some(_), None) => {
            return Err(Exit::Error(
                "private key file specified but no certificate file. Set the '--cert' flag".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(Exit::Error(
                "certificate file specified but no private key file. Set the '--key' flag".into(),
            ));
        }
        (None, None) => {
            for flag in ["encrypt", "force", "expiry", "ip", "dns"] {
                if parsed.has(flag) {
                    return Err(Exit::Error(format!(
                        "'--{flag}' requires a private key and certificate file. Set the '--cert' and '--key' flag"
                    )));
                }
            }
        }
        (Some(_), Some(_)) => {}
    }
    if parsed.has("encrypt") {
        return Err(Exit::Error(
            "'--encrypt' (password-protected private keys) is not supported yet: keep the key \
             file private (it is written with mode 0600)"
                .into(),
        ));
    }
    let valid_for = match parsed.value("expiry") {
        Some(text) => args::parse_duration(text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Exit::Error(format!(
                    "invalid --expiry {text:?}: use a duration such as 720h or 8760h"
                ))
            })?,
        None => DEFAULT_VALIDITY,
    };
    let spec = CertificateSpec {
        common_name: parsed.arg(0).map(str::to_owned),
        dns_names: dns_names(&parsed),
        ip_addresses: ip_addresses(&parsed)?,
        valid_for,
        usages: vec![Usage::Client, Usage::Server],
    };

    let key =
        ApiKey::generate().map_err(|e| Exit::Error(format!("failed to generate API key: {e}")))?;
    if let (Some(key_path), Some(cert_path)) = (key_path, cert_path) {
        let cert = key
            .certificate(&spec)
            .map_err(|e| Exit::Error(format!("failed to generate certificate: {e}")))?;
        write_key_and_certificate(&key, &cert.pem, key_path, cert_path, parsed.has("force"))?;
    }

    let paint = Paint {
        enabled: output::stdout_is_terminal() && !output::no_color_requested(),
    };
    let text = key.to_text();
    let mut message = zeroize::Zeroizing::new(format!(
        "Your API key:\n\n   {}\n\nThis is the only time it is shown. Keep it secret and secure!\n\n\
         Your Identity:\n\n   {}\n\nThe identity is not a secret. It can be shared. Any peer\n\
         needs this identity in order to verify your API key.\n",
        paint.bold(&text),
        paint.bold(&key.identity())
    ));
    if let (Some(key_path), Some(cert_path)) = (key_path, cert_path) {
        message.push_str(&format!(
            "\nThe generated TLS private key is stored at: {key_path}\n\
             The generated TLS certificate is stored at: {cert_path}\n"
        ));
    }
    message.push_str(&format!(
        "\nThe identity can be computed again via:\n\n    kes identity of {}\n",
        text.as_str()
    ));
    if let Some(cert_path) = cert_path {
        message.push_str(&format!("    kes identity of {cert_path}\n"));
    }
    output::print(&message)
}

/// Writes the private key (mode 0600) and the certificate (mode 0644). Without `force`
/// existing files are left alone and reported.
fn write_key_and_certificate(
    key: &ApiKey,
    cert_pem: &str,
    key_path: &str,
    cert_path: &str,
    force: bool,
) -> Outcome {
    if !force {
        if std::path::Path::new(key_path).exists() {
            return Err(Exit::Error(format!(
                "private key {key_path:?} already exists. Use --force to overwrite it"
            )));
        }
        if std::path::Path::new(cert_path).exists() {
            return Err(Exit::Error(format!(
                "certificate {cert_path:?} already exists. Use --force to overwrite it"
            )));
        }
    }
    write_file(key_path, key.pkcs8_pem().as_bytes(), 0o600, force)
        .map_err(|e| Exit::Error(format!("failed to create private key {key_path:?}: {e}")))?;
    if let Err(e) = write_file(cert_path, cert_pem.as_bytes(), 0o644, force) {
        let _ = std::fs::remove_file(key_path);
        return Err(Exit::Error(format!(
            "failed to create certificate {cert_path:?}: {e}"
        )));
    }
    Ok(())
}

fn write_file(path: &str, contents: &[u8], mode: u32, overwrite: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if overwrite {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

const TOOL_NEW_USAGE: &str = "Usage:
    kes tool identity new [options] [<subject>]

Options:
    --key <PATH>           Path to the private key (default: ./private.key)
    --cert <PATH>          Path to the certificate (default: ./public.crt)

    --server               Create a certificate for a TLS server instead of a TLS client.
    --ip <IP>              Add <IP> as subject alternative name (SAN). Repeatable.
    --dns <DOMAIN>         Add <DOMAIN> as subject alternative name (SAN). Repeatable.

    -t, --time <DURATION>  Duration until the certificate will expire (default: 720h)
    --expiry <DURATION>    The same as --time (the name 'kes identity new' uses)
    -f, --force            Overwrite the private key and/or certificate, if it exists
    -h, --help             Show list of command-line options

Creates a new Ed25519 private key and a self-signed certificate. If a subject is
given, it becomes the certificate's common name (and, for a --server certificate
without --dns or --ip, its DNS name).

Examples:
    $ kes tool identity new --server --key server.key --cert server.cert --ip \"127.0.0.1\" --dns localhost
    $ kes tool identity new --key=app.key --cert=app.cert app
";

const TOOL_NEW_FLAGS: &[Flag] = &[
    args::option("key", None),
    args::option("cert", None),
    args::switch("server", None),
    args::option("ip", None),
    args::option("dns", None),
    args::option("time", Some('t')),
    args::option("expiry", None),
    args::switch("force", Some('f')),
];

/// The certificate `kes tool identity new` makes for these arguments.
fn tool_new_spec(parsed: &Parsed) -> Result<CertificateSpec, Exit> {
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes tool identity new --help'".into(),
        ));
    }
    let duration_text = parsed.value("time").or(parsed.value("expiry"));
    let valid_for = match duration_text {
        Some(text) => args::parse_duration(text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Exit::Error(format!("invalid duration {text:?}: use e.g. 720h or 2160h"))
            })?,
        None => DEFAULT_VALIDITY,
    };
    let server = parsed.has("server");
    let subject = parsed.arg(0).map(str::to_owned);
    let mut dns = dns_names(parsed);
    let ips = ip_addresses(parsed)?;
    if server && dns.is_empty() && ips.is_empty() {
        if let Some(subject) = subject.as_ref().filter(|s| is_dns_name(s)) {
            dns.push(subject.clone());
        }
    }
    Ok(CertificateSpec {
        common_name: Some(subject.unwrap_or_default()),
        dns_names: dns,
        ip_addresses: ips,
        valid_for,
        usages: vec![if server { Usage::Server } else { Usage::Client }],
    })
}

fn is_dns_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `kes tool identity new`.
pub fn tool_new(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes tool identity new", TOOL_NEW_USAGE, TOOL_NEW_FLAGS, raw)?;
    let spec = tool_new_spec(&parsed)?;
    let key_path = parsed.value("key").unwrap_or("./private.key");
    let cert_path = parsed.value("cert").unwrap_or("./public.crt");
    let key = ApiKey::generate()
        .map_err(|e| Exit::Error(format!("failed to generate private key: {e}")))?;
    let cert = key
        .certificate(&spec)
        .map_err(|e| Exit::Error(format!("failed to create certificate: {e}")))?;
    write_key_and_certificate(&key, &cert.pem, key_path, cert_path, parsed.has("force"))?;
    if output::stdout_is_terminal() {
        output::print(&format!(
            "\n  Private key:  {key_path}\n  Certificate:  {cert_path}\n  Identity:     {}\n",
            key.identity()
        ))?;
    }
    Ok(())
}

const TOOL_OF_USAGE: &str = "Usage:
    kes tool identity of [options] [<certificate>]

Options:
    --hash <HASH>          The hash function used to compute the
                           identity. (SHA-256, SHA-384 or SHA-512)
    -h, --help             Show list of command-line options

Computes the identity of a TLS certificate: the hash of its public key.
Without a certificate argument (or with '-') it is read from standard input.

Examples:
    $ kes tool identity of app.cert
    $ cat app.cert | kes tool identity of
";

/// `kes tool identity of`.
pub fn tool_of(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse(
        "kes tool identity of",
        TOOL_OF_USAGE,
        &[args::option("hash", None)],
        raw,
    )?;
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes tool identity of --help'".into(),
        ));
    }
    let hash = parsed
        .value("hash")
        .unwrap_or("SHA256")
        .to_ascii_uppercase()
        .replace('-', "");
    let source = parsed.arg(0).filter(|a| *a != "-");
    let pem = match source {
        Some(path) => std::fs::read(path)
            .map_err(|e| Exit::Error(format!("failed to read certificate from {path:?}: {e}")))?,
        None => {
            let mut buffer = Vec::new();
            std::io::stdin().read_to_end(&mut buffer).map_err(|e| {
                Exit::Error(format!(
                    "failed to read certificate from standard input: {e}"
                ))
            })?;
            buffer
        }
    };
    let where_from = source
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "standard input".into());
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .find_map(Result::ok)
        .ok_or_else(|| {
            Exit::Error(format!(
                "failed to read certificate from {where_from}: no PEM CERTIFICATE found"
            ))
        })?;
    let (_, cert) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<
        _,
    >>::from_der(&der)
    .map_err(|e| Exit::Error(format!("failed to read certificate from {where_from}: {e}")))?;
    let spki = cert.public_key().raw;
    let identity = match hash.as_str() {
        "SHA256" => crate::identity::hex(&sha2::Sha256::digest(spki)),
        "SHA384" => crate::identity::hex(&sha2::Sha384::digest(spki)),
        "SHA512" => crate::identity::hex(&sha2::Sha512::digest(spki)),
        _ => {
            return Err(Exit::Error(format!(
                "invalid --hash: {:?}: use SHA-256, SHA-384 or SHA-512",
                parsed.value("hash").unwrap_or("")
            )));
        }
    };
    if output::stdout_is_terminal() {
        output::print(&format!("\n  Identity:  {identity}\n"))
    } else {
        output::print(&identity)
    }
}

const INFO_USAGE: &str = "Usage:
    kes identity info [options] [<identity>]

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print identity information in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Without an identity, describes the identity of the client's own credentials.

Examples:
    $ kes identity info
    $ kes identity info 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22
";

fn info(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse(
        "kes identity info",
        INFO_USAGE,
        &[INSECURE, JSON, COLOR, ENCLAVE],
        raw,
    )?;
    if parsed.positionals.len() > 1 {
        return Err(Exit::Error(
            "too many arguments. See 'kes identity info --help'".into(),
        ));
    }
    let paint = Paint {
        enabled: output::colorize(parsed.value("color"))?,
    };
    let client = Client::for_command(&parsed)?;
    let path = match parsed.arg(0) {
        Some(identity) => format!("/v1/identity/describe/{}", path_segment(identity)),
        None => "/v1/identity/self/describe".to_owned(),
    };
    let reply = client
        .call(Method::Get, &path, None)
        .map_err(|e| Exit::Error(format!("failed to describe identity: {e}")))?;
    let mut value: Value = reply.json().map_err(|e| Exit::Error(e.to_string()))?;
    if value.get("identity").is_none() {
        let identity = parsed.arg(0).unwrap_or(client.identity()).to_owned();
        if let Value::Object(map) = &mut value {
            map.insert("identity".into(), Value::String(identity));
        }
    }
    if parsed.has("json") || !output::stdout_is_terminal() {
        return output::print(&output::json_line(&normalized_description(&value)));
    }
    output::print(&describe_identity_text(&value, paint))
}

/// One JSON shape for an identity description from any server generation:
/// `identity`, `admin` (only when true), `policy` (the name), `allow`/`deny` (rule
/// objects), `created_at`, `created_by`.
fn normalized_description(value: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let text = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(identity) = text("identity") {
        out.insert("identity".into(), identity.into());
    }
    if value.get("admin").and_then(Value::as_bool) == Some(true) {
        out.insert("admin".into(), true.into());
    }
    let policy = match value.get("policy") {
        Some(Value::String(name)) if !name.is_empty() => Some(name.clone()),
        _ => text("policy_name").map(str::to_owned),
    };
    if let Some(policy) = policy {
        out.insert("policy".into(), policy.into());
    }
    let rules_source = match value.get("policy") {
        Some(policy @ Value::Object(_)) => policy,
        _ => value,
    };
    for name in ["allow", "deny"] {
        let rules = rule_list(rules_source.get(name));
        if !rules.is_empty() {
            let object = rules
                .into_iter()
                .map(|r| (r, Value::Object(serde_json::Map::new())))
                .collect();
            out.insert(name.into(), Value::Object(object));
        }
    }
    for name in ["created_at", "created_by"] {
        if let Some(v) = text(name) {
            out.insert(name.into(), v.into());
        }
    }
    Value::Object(out)
}

/// The human description of an identity-describe response (either generation).
fn describe_identity_text(value: &Value, paint: Paint) -> String {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let label = |text: &str| paint.faint(&format!("{text:<11}"));
    let mut text = String::new();
    text.push_str(&format!(
        "{} {}\n",
        label("Identity"),
        paint.blue(&field("identity"))
    ));
    let policy_name = match value.get("policy") {
        Some(Value::String(name)) => name.clone(),
        _ => field("policy_name"),
    };
    if !policy_name.is_empty() {
        text.push_str(&format!(
            "{} {}\n",
            label("Policy"),
            paint.yellow(&policy_name)
        ));
    }
    text.push_str(&format!(
        "{} {}\n",
        label("Created At"),
        output::short_date(&field("created_at"))
    ));
    let admin = value.get("admin").and_then(Value::as_bool).unwrap_or(false);
    text.push_str(&format!(
        "{} {}\n",
        label("Role"),
        if admin { "Admin" } else { "User" }
    ));
    let created_by = field("created_by");
    if !created_by.is_empty() {
        text.push_str(&format!("{} {created_by}\n", label("Created By")));
    }
    // Rules: top-level allow/deny (current) or inside a policy object (2023).
    let rules_source = match value.get("policy") {
        Some(policy @ Value::Object(_)) => policy,
        _ => value,
    };
    for (name, dot) in [("allow", paint.green("·")), ("deny", paint.red("·"))] {
        let rules = rule_list(rules_source.get(name));
        if !rules.is_empty() {
            let title = if name == "allow" { "Allow" } else { "Deny" };
            text.push_str(&format!("{}\n", label(title)));
            for rule in rules {
                text.push_str(&format!("{:<11} {dot} {rule}\n", ""));
            }
        }
    }
    text
}

/// Policy rules given either as an object `{"rule":{}}` (current) or an array (2023).
pub fn rule_list(value: Option<&Value>) -> Vec<String> {
    let mut rules: Vec<String> = match value {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    rules.sort();
    rules
}

const LS_USAGE: &str = "Usage:
    kes identity ls [options] [<prefix>]

Options:
    -k, --insecure           Skip TLS certificate validation.
        --json               Print identities in JSON format.
        --color <when>       When to use colors: auto (default), never, always.
    -h, --help               Print command line options.

Examples:
    $ kes identity ls
    $ kes identity ls 'b804befd*'
";

fn ls(raw: Vec<OsString>, command: &str) -> Outcome {
    run_group_ls(
        ListKind::Identities,
        &format!("kes identity {command}"),
        LS_USAGE,
        raw,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn tutorial_server_identity_command_line() {
        // kes tool identity new --server --key server.key --cert server.cert --ip "127.0.0.1" --dns localhost
        let parsed = args::parse(
            "kes tool identity new",
            TOOL_NEW_USAGE,
            TOOL_NEW_FLAGS,
            os(&[
                "--server",
                "--key",
                "server.key",
                "--cert",
                "server.cert",
                "--ip",
                "127.0.0.1",
                "--dns",
                "localhost",
            ]),
        )
        .unwrap();
        assert_eq!(parsed.value("key"), Some("server.key"));
        assert_eq!(parsed.value("cert"), Some("server.cert"));
        let spec = tool_new_spec(&parsed).unwrap();
        assert_eq!(spec.usages, [Usage::Server]);
        assert_eq!(spec.dns_names, ["localhost"]);
        assert_eq!(spec.ip_addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(spec.valid_for, DEFAULT_VALIDITY);
        assert_eq!(spec.common_name.as_deref(), Some(""));
    }

    #[test]
    fn tutorial_app_identity_command_line() {
        // kes tool identity new --key=app.key --cert=app.cert app
        let parsed = args::parse(
            "kes tool identity new",
            TOOL_NEW_USAGE,
            TOOL_NEW_FLAGS,
            os(&["--key=app.key", "--cert=app.cert", "app"]),
        )
        .unwrap();
        assert_eq!(parsed.value("key"), Some("app.key"));
        assert_eq!(parsed.value("cert"), Some("app.cert"));
        let spec = tool_new_spec(&parsed).unwrap();
        assert_eq!(spec.usages, [Usage::Client]);
        assert_eq!(spec.common_name.as_deref(), Some("app"));
        assert!(spec.dns_names.is_empty());
    }

    #[test]
    fn old_time_flag_and_server_subject_san() {
        let parsed = args::parse(
            "kes tool identity new",
            TOOL_NEW_USAGE,
            TOOL_NEW_FLAGS,
            os(&["-t", "2160h", "--server", "kes.example.com"]),
        )
        .unwrap();
        let spec = tool_new_spec(&parsed).unwrap();
        assert_eq!(spec.valid_for, Duration::from_secs(2160 * 3600));
        assert_eq!(spec.dns_names, ["kes.example.com"]);
    }

    #[test]
    fn new_identity_flag_rules() {
        let error = |args: &[&str]| match new(os(args)) {
            Err(Exit::Error(message)) => message,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(error(&["--key", "a.key"]).contains("no certificate file"));
        assert!(error(&["--cert", "a.crt"]).contains("no private key file"));
        assert!(error(&["--ip", "1.2.3.4"]).starts_with("'--ip' requires"));
        assert!(error(&["--dns", "x"]).starts_with("'--dns' requires"));
        assert!(error(&["--expiry", "1h"]).starts_with("'--expiry' requires"));
        assert!(error(&["-f"]).starts_with("'--force' requires"));
        assert!(error(&["a", "b"]).starts_with("too many arguments"));
        assert!(matches!(new(os(&["-h"])), Err(Exit::Help(NEW_USAGE))));
    }

    #[test]
    fn ip_lists_and_bad_ips() {
        let parsed = args::parse(
            "x",
            "",
            NEW_FLAGS,
            os(&["--ip", "10.0.0.1,::1", "--ip=192.168.0.1"]),
        )
        .unwrap();
        assert_eq!(ip_addresses(&parsed).unwrap().len(), 3);
        let parsed = args::parse("x", "", NEW_FLAGS, os(&["--ip", "nope"])).unwrap();
        assert!(ip_addresses(&parsed).is_err());
    }

    #[test]
    fn descriptions_normalize_to_one_shape() {
        let current: Value = serde_json::from_str(
            r#"{"identity":"abc","policy_name":"p","allow":{"/v1/a":{}},"created_at":"t","created_by":""}"#,
        )
        .unwrap();
        assert_eq!(
            normalized_description(&current).to_string(),
            r#"{"allow":{"/v1/a":{}},"created_at":"t","identity":"abc","policy":"p"}"#
        );
        let old: Value = serde_json::from_str(
            r#"{"identity":"abc","policy_name":"p","policy":{"allow":["/v1/a"],"deny":[]},"created_at":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            normalized_description(&old),
            normalized_description(&current)
        );
        let admin: Value =
            serde_json::from_str(r#"{"identity":"x","admin":true,"created_at":"t"}"#).unwrap();
        assert_eq!(
            normalized_description(&admin).to_string(),
            r#"{"admin":true,"created_at":"t","identity":"x"}"#
        );
    }

    #[test]
    fn describe_text_of_both_generations() {
        let current: Value = serde_json::from_str(
            r#"{"identity":"abc","policy":"minio","allow":{"/v1/key/create/*":{}},"deny":{},"created_at":"2024-01-01T00:00:00Z","created_by":"ad"}"#,
        )
        .unwrap();
        let text = describe_identity_text(&current, Paint { enabled: false });
        assert!(text.contains("Policy      minio"));
        assert!(text.contains("· /v1/key/create/*"));
        let old: Value = serde_json::from_str(
            r#"{"identity":"abc","policy_name":"p","policy":{"allow":["/v1/status"],"deny":["/v1/key/delete/*"]},"created_at":"2023-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let text = describe_identity_text(&old, Paint { enabled: false });
        assert!(text.contains("Policy      p"));
        assert!(text.contains("· /v1/status"));
        assert!(text.contains("· /v1/key/delete/*"));
    }
}
