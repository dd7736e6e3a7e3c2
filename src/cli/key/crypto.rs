//! `kes key encrypt`, `decrypt` and `dek` (`derive`): the cryptographic operations of a
//! key, asked of the server.

use std::ffi::OsString;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cli::args::{self, BASIC_FLAGS};
use crate::cli::client::{Client, Method};
use crate::cli::output;
use crate::cli::{Exit, Outcome, path_segment};

const ENCRYPT_USAGE: &str = "Usage:
    kes key encrypt [options] <name> <message>

Options:
    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Encrypts the message (its text as given) with the key and prints the ciphertext in base64.

Examples:
    $ kes key encrypt my-key \"Hello World\"
";

/// A request or response body with base64 byte fields; the plaintext is zeroized on drop.
#[derive(Serialize, Deserialize, Default)]
struct CryptoBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

pub(super) fn encrypt(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes key encrypt", ENCRYPT_USAGE, BASIC_FLAGS, raw)?;
    let (name, message) = match parsed.positionals.as_slice() {
        [] => {
            return Err(Exit::Error(
                "no key name specified. See 'kes key encrypt --help'".into(),
            ));
        }
        [_] => {
            return Err(Exit::Error(
                "no message specified. See 'kes key encrypt --help'".into(),
            ));
        }
        [name, message] => (name, message),
        _ => {
            return Err(Exit::Error(
                "too many arguments. See 'kes key encrypt --help'".into(),
            ));
        }
    };
    let request = CryptoBody {
        plaintext: Some(BASE64.encode(message.as_bytes())),
        ciphertext: None,
        context: None,
    };
    let client = Client::for_command(&parsed)?;
    let reply = send_crypto(&client, "encrypt", name, &request)
        .map_err(|e| Exit::Error(format!("failed to encrypt message: {e}")))?;
    let ciphertext = reply.ciphertext.clone().unwrap_or_default();
    if output::stdout_is_terminal() {
        output::print(&format!("\nciphertext: {ciphertext}\n"))
    } else {
        output::print(&format!("{{\"ciphertext\":\"{ciphertext}\"}}"))
    }
}

impl Drop for CryptoBody {
    fn drop(&mut self) {
        if let Some(plaintext) = self.plaintext.as_mut() {
            zeroize::Zeroize::zeroize(plaintext);
        }
    }
}

fn send_crypto(
    client: &Client,
    operation: &str,
    name: &str,
    request: &CryptoBody,
) -> Result<CryptoBody, String> {
    let body = Zeroizing::new(serde_json::to_vec(request).expect("the request serializes"));
    let reply = client
        .call(
            Method::Post,
            &format!("/v1/key/{operation}/{}", path_segment(name)),
            Some(&body),
        )
        .map_err(|e| e.to_string())?;
    let reply = Zeroizing::new(reply.body);
    serde_json::from_slice(&reply)
        .map_err(|e| format!("the server sent an unexpected response: {e}"))
}

/// Checks that `text` is standard base64 and returns it unchanged.
fn base64_argument(text: &str, what: &str, command: &str) -> Result<String, Exit> {
    let decoded = Zeroizing::new(BASE64.decode(text).map_err(|e| {
        Exit::Error(format!(
            "invalid {what}: {e}. It must be base64. See 'kes key {command} --help'"
        ))
    })?);
    drop(decoded);
    Ok(text.to_owned())
}

pub(super) const DECRYPT_USAGE: &str = "Usage:
    kes key decrypt [options] <name> <ciphertext> [<context>]

Options:
    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Decrypts a base64 ciphertext with the key, with the base64 context it was made with, if any.

Examples:
    $ CIPHERTEXT=$(kes key dek my-key | jq -r .ciphertext)
    $ kes key decrypt my-key \"$CIPHERTEXT\"
";

pub(super) fn decrypt(raw: Vec<OsString>) -> Outcome {
    let parsed = args::parse("kes key decrypt", DECRYPT_USAGE, BASIC_FLAGS, raw)?;
    let (name, ciphertext, context) = match parsed.positionals.as_slice() {
        [] => {
            return Err(Exit::Error(
                "no key name specified. See 'kes key decrypt --help'".into(),
            ));
        }
        [_] => {
            return Err(Exit::Error(
                "no ciphertext specified. See 'kes key decrypt --help'".into(),
            ));
        }
        [name, ciphertext] => (name, ciphertext, None),
        [name, ciphertext, context] => (name, ciphertext, Some(context)),
        _ => {
            return Err(Exit::Error(
                "too many arguments. See 'kes key decrypt --help'".into(),
            ));
        }
    };
    let request = CryptoBody {
        plaintext: None,
        ciphertext: Some(base64_argument(ciphertext, "ciphertext", "decrypt")?),
        context: context
            .map(|c| base64_argument(c, "context", "decrypt"))
            .transpose()?,
    };
    let client = Client::for_command(&parsed)?;
    let reply = send_crypto(&client, "decrypt", name, &request)
        .map_err(|e| Exit::Error(format!("failed to decrypt ciphertext: {e}")))?;
    let plaintext = Zeroizing::new(reply.plaintext.clone().unwrap_or_default());
    let text = if output::stdout_is_terminal() {
        Zeroizing::new(format!("\nplaintext: {}\n", plaintext.as_str()))
    } else {
        Zeroizing::new(format!("{{\"plaintext\":\"{}\"}}", plaintext.as_str()))
    };
    output::print(&text)
}

pub(super) const DEK_USAGE: &str = "Usage:
    kes key dek [options] <name> [<context>]

Options:
    -k, --insecure           Skip TLS certificate validation.
    -h, --help               Print command line options.

Generates a new data encryption key and prints its plaintext and its ciphertext under
the named key; 'kes key decrypt' turns the ciphertext back into the plaintext. An optional
base64 context is bound to the ciphertext. 'kes key derive' is the older name.

Examples:
    $ kes key dek my-key
    $ kes key derive -k my-app-key
";

pub(super) fn dek(raw: Vec<OsString>, command: &str) -> Outcome {
    let name_of_command = format!("kes key {command}");
    let parsed = args::parse(&name_of_command, DEK_USAGE, BASIC_FLAGS, raw)?;
    let (name, context) = match parsed.positionals.as_slice() {
        [] => {
            return Err(Exit::Error(format!(
                "no key name specified. See '{name_of_command} --help'"
            )));
        }
        [name] => (name, None),
        [name, context] => (name, Some(context)),
        _ => {
            return Err(Exit::Error(format!(
                "too many arguments. See '{name_of_command} --help'"
            )));
        }
    };
    let request = CryptoBody {
        plaintext: None,
        ciphertext: None,
        context: context
            .map(|c| base64_argument(c, "context", command))
            .transpose()?,
    };
    let client = Client::for_command(&parsed)?;
    let reply = send_crypto(&client, "generate", name, &request)
        .map_err(|e| Exit::Error(format!("failed to derive key: {e}")))?;
    let plaintext = Zeroizing::new(reply.plaintext.clone().unwrap_or_default());
    let ciphertext = reply.ciphertext.clone().unwrap_or_default();
    let text = if output::stdout_is_terminal() {
        Zeroizing::new(format!(
            "\nplaintext:  {}\nciphertext: {ciphertext}\n",
            plaintext.as_str()
        ))
    } else {
        Zeroizing::new(format!(
            "{{\"plaintext\":\"{}\",\"ciphertext\":\"{ciphertext}\"}}",
            plaintext.as_str()
        ))
    };
    output::print(&text)
}
