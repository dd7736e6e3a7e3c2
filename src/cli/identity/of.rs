//! `kes identity of` and `kes tool identity of`: the identity of an API key or a
//! certificate (and the API key of an Ed25519 private key file).

use std::ffi::OsString;
use std::io::Read;

use sha2::Digest;

use crate::apikey::ApiKey;
use crate::cli::args;
use crate::cli::output::{self, Paint};
use crate::cli::{Exit, Outcome};

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

pub(super) fn print_identity_of(argument: &str) -> Outcome {
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

pub(super) fn of(raw: Vec<OsString>) -> Outcome {
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
