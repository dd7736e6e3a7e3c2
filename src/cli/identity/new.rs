//! `kes identity new` (an API key, and with `--key/--cert` its certificate) and
//! `kes tool identity new` (a key and a certificate, for a client or a server).

use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use crate::apikey::{ApiKey, CertificateSpec, Usage};
use crate::cli::args::{self, Flag, Parsed};
use crate::cli::output::{self, Paint};
use crate::cli::{Exit, Outcome};

const DEFAULT_VALIDITY: Duration = Duration::from_secs(720 * 3600);

pub(super) fn print_new_api_key() -> Outcome {
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

pub(super) fn new(raw: Vec<OsString>) -> Outcome {
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
}
