//! Where the command-line tool finds its server and credentials (cli.md §2). For each
//! setting the first variable of its list that is *set* wins, even when it is empty:
//!
//! | setting | variables |
//! |---|---|
//! | server(s) | `MINIO_KES_SERVER`, `KES_SERVER`, `MINIO_KMS_KES_ENDPOINT` (default `127.0.0.1:7373`) |
//! | API key | `MINIO_KES_API_KEY`, `KES_API_KEY`, `MINIO_KMS_KES_API_KEY` |
//! | client private key | `MINIO_KES_KEY_FILE`, `KES_CLIENT_KEY`, `MINIO_KES_CLIENT_KEY` |
//! | client certificate | `MINIO_KES_CERT_FILE`, `KES_CLIENT_CERT`, `MINIO_KES_CLIENT_CERT` |
//! | trusted CA (file or directory of PEM certificates) | `MINIO_KES_CAPATH`, `KES_CAPATH`, `MINIO_KMS_KES_CAPATH` (default: system roots) |
//!
//! The server value is a comma-separated list; each entry is trimmed, a leading `http://`
//! is dropped and `https://` added when missing. On a connection failure the next entry is
//! tried. The CA variables are an addition of this implementation (Go KES only uses the
//! system roots); `SSL_CERT_FILE` / `SSL_CERT_DIR` choose the system roots as with OpenSSL.

pub const SERVER_VARS: [&str; 3] = ["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"];
pub const API_KEY_VARS: [&str; 3] = ["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"];
pub const KEY_FILE_VARS: [&str; 3] = [
    "MINIO_KES_KEY_FILE",
    "KES_CLIENT_KEY",
    "MINIO_KES_CLIENT_KEY",
];
pub const CERT_FILE_VARS: [&str; 3] = [
    "MINIO_KES_CERT_FILE",
    "KES_CLIENT_CERT",
    "MINIO_KES_CLIENT_CERT",
];
pub const CA_PATH_VARS: [&str; 3] = ["MINIO_KES_CAPATH", "KES_CAPATH", "MINIO_KMS_KES_CAPATH"];

pub const DEFAULT_SERVER: &str = "127.0.0.1:7373";

/// Where the first set variable of `names` came from, and its value.
pub fn first_set_var(names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().map(|value| (*name, value)))
}

/// Command-line overrides of the environment.
#[derive(Debug, Default, Clone)]
pub struct ConnectOptions {
    /// `-k/--insecure`: do not verify the server certificate.
    pub insecure: bool,
    /// `-s/--server` of `kes ls`.
    pub server: Option<String>,
    /// `-a/--api-key` of `kes ls`.
    pub api_key: Option<String>,
}

/// Turns the server setting into `https://host:port` base URLs.
pub fn parse_endpoints(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = entry.strip_prefix("http://").unwrap_or(entry);
            let entry = entry.trim_end_matches('/');
            if entry.starts_with("https://") {
                entry.to_owned()
            } else {
                format!("https://{entry}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            parse_endpoints("127.0.0.1:7373"),
            ["https://127.0.0.1:7373"]
        );
        assert_eq!(
            parse_endpoints(" http://a:1 , https://b:2/ ,c:3"),
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        assert!(parse_endpoints(" , ").is_empty());
    }
}
