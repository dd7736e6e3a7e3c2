//! What the resident-key tests share: kes with `master_keys: resident` in front of the
//! CipherTrust stand-in, in the stand-in's default mode or in its strict mode (only the
//! forms proven against a live CipherTrust Manager), and the API calls they make.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::common::{Client, Credential, KES, Kes, Pki, Resp};
use crate::ctm_sim::{CtmSim, REFRESH_TOKEN};

/// How the CipherTrust stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lenient: also the forms no public source proves (decrypt by name and version).
    Default,
    /// Only the proven forms (tests/common/ctm_keys.rs).
    Strict,
}

/// Runs each named test function (`fn name(mode: Mode)`) once per stand-in mode, as
/// `default_mode::name` and `strict_mode::name`.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod default_mode {
            $( #[test] fn $name() { super::$name($crate::resident::Mode::Default) } )*
        }
        mod strict_mode {
            $( #[test] fn $name() { super::$name($crate::resident::Mode::Strict) } )*
        }
    };
}

pub struct Setup {
    pub pki: Pki,
    pub app: Credential,
    pub sim: CtmSim,
}

impl Setup {
    pub fn new(mode: Mode) -> Setup {
        let pki = Pki::new();
        let app = pki.client("app");
        let sim = CtmSim::start();
        sim.set_strict(mode == Mode::Strict);
        Setup { pki, app, sim }
    }

    /// A config whose app policy allows `allow`, with the CipherTrust keystore under
    /// `section` (`ciphertrust` or `gemalto.keysecure`) and `master_keys` if given.
    pub fn config(
        &self,
        name: &str,
        section: &str,
        master_keys: Option<&str>,
        allow: &[&str],
    ) -> PathBuf {
        self.config_with(name, section, master_keys, allow, &[], "")
    }

    /// [`Setup::config`] with `keystore_lines` added to the keystore section (indented
    /// to its fields) and `top` (top-level sections) at the end.
    pub fn config_with(
        &self,
        name: &str,
        section: &str,
        master_keys: Option<&str>,
        allow: &[&str],
        keystore_lines: &[&str],
        top: &str,
    ) -> PathBuf {
        let mut body =
            String::from("address: 0.0.0.0:7373\nroot: disabled\npolicy:\n  my-app:\n    allow:\n");
        for path in allow {
            body.push_str(&format!("    - {path}\n"));
        }
        body.push_str("    identities:\n    - ${APP_IDENTITY}\n");
        let (head, pad) = match section {
            "ciphertrust" => ("keystore:\n  ciphertrust:\n", "    "),
            _ => ("keystore:\n  gemalto:\n    keysecure:\n", "      "),
        };
        body.push_str(head);
        body.push_str(&format!(
            "{pad}endpoint: {}\n{pad}credentials:\n{pad}  token: ${{CTM_REFRESH_TOKEN}}\n{pad}tls:\n{pad}  ca: {}\n",
            self.sim.endpoint(),
            self.sim.ca_file().display()
        ));
        if let Some(mode) = master_keys {
            body.push_str(&format!("{pad}master_keys: {mode}\n"));
        }
        for line in keystore_lines {
            body.push_str(&format!("{pad}{line}\n"));
        }
        body.push_str(top);
        self.pki.config(name, &body)
    }

    pub fn try_start(&self, config: &PathBuf, args: &[&str]) -> Result<Kes, String> {
        // The kernel picks the port: no other socket can take it first.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut cmd = Command::new(KES);
        cmd.arg("server")
            .arg("--config")
            .arg(config)
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--auth=off")
            .args(args)
            .env("APP_IDENTITY", &self.app.identity)
            .env("CTM_REFRESH_TOKEN", REFRESH_TOKEN);
        Kes::spawn(cmd, addr, self.pki.ca_path.clone())
    }

    /// kes with `master_keys: resident` under `section`, the app allowed every key route.
    pub fn resident(&self, section: &str) -> Kes {
        self.start(&self.config("config.yml", section, Some("resident"), ALL_KEY_ROUTES))
    }

    pub fn start(&self, config: &PathBuf) -> Kes {
        self.try_start(config, &[])
            .unwrap_or_else(|e| panic!("kes did not start: {e}"))
    }
}

pub const ALL_KEY_ROUTES: &[&str] = &["/v1/key/*", "/v1/status"];

pub fn generate(c: &mut Client, name: &str, context: &str) -> Result<(String, Vec<u8>), Resp> {
    let r = c.post(
        &format!("/v1/key/generate/{name}"),
        json!({ "context": B64.encode(context) })
            .to_string()
            .as_bytes(),
    );
    if r.status != 200 {
        return Err(r);
    }
    let v = r.json();
    Ok((
        v["plaintext"].as_str().unwrap().to_string(),
        B64.decode(v["ciphertext"].as_str().unwrap()).unwrap(),
    ))
}

pub fn decrypt(c: &mut Client, name: &str, ciphertext: &[u8], context: &str) -> Resp {
    c.post(
        &format!("/v1/key/decrypt/{name}"),
        json!({ "ciphertext": B64.encode(ciphertext), "context": B64.encode(context) })
            .to_string()
            .as_bytes(),
    )
}

/// The CipherTrust key version an envelope names (docs/resident-keys.md).
pub fn envelope_version(ciphertext: &[u8]) -> u32 {
    assert_eq!(&ciphertext[..4], &[0xC7, b'K', b'R', 1], "not an envelope");
    u32::from_be_bytes(ciphertext[4..8].try_into().unwrap())
}
