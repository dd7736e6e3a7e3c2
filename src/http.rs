//! HTTP/1.1 messages: request heads parsed by `httparse`, responses serialized.
//!
//! This module knows nothing about sockets or TLS: the connection code feeds it bytes
//! and writes out what it returns, so it can be tested and fuzzed on plain buffers.

pub mod client;
mod framing;
mod head;
mod response;

pub use framing::{
    BodyFraming, ChunkError, MAX_CHUNK_EXTRA, MAX_CHUNK_LINE, decode_chunked, decode_chunks,
};
pub use head::{HeadError, MAX_HEAD, Request, parse_head};
pub use response::{Response, ndjson_chunk, reason};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_head() {
        let raw =
            b"POST /v1/key/create/my%2Dkey?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let (req, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v1/key/create/my-key");
        assert_eq!(req.query, "x=1");
        assert_eq!(req.framing().unwrap(), BodyFraming::Length(3));
        assert_eq!(&raw[n..], b"abc");
        assert!(req.keep_alive());
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost:").unwrap().is_none());
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(parse_head(&big).unwrap_err(), HeadError::TooLarge);
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn error_bodies_are_json() {
        let r = Response::error(404, "key does not exist");
        assert_eq!(r.body, br#"{"message":"key does not exist"}"#);
        let bytes = r.to_bytes(false);
        assert!(bytes.starts_with(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"));
    }
}
