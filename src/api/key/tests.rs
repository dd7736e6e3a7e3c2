//! Unit tests of the key handlers' request bodies and bulk-decrypt helpers.

use super::bulk::Helpers;
use super::decode_every_body;

#[test]
fn each_route_accepts_exactly_its_bodies() {
    let objects = [true, true, true, true, true, false];
    let nothing = [false; 6];
    let cases: [(&[u8], [bool; 6]); 9] = [
        (b"{}", objects),
        (b" \n{\"context\":\"\"}", objects),
        // Arrays are bulk decrypt's alone: serde would build a struct from one, Go not.
        (b"[]", [false, false, false, false, false, true]),
        (
            b"[{\"ciphertext\":\"AA==\"}]",
            [false, false, false, false, false, true],
        ),
        (b"{\"plaintext\":\"aGk=\"}", objects),
        // Invalid base64 where a field is bytes: refused by the routes reading it.
        (
            b"{\"plaintext\":\"!\"}",
            [true, false, true, true, true, false],
        ),
        (
            b"{\"ciphertext\":7}",
            [true, true, true, false, true, false],
        ),
        (b"{", nothing),
        (b"", nothing),
    ];
    for (body, expected) in cases {
        assert_eq!(
            decode_every_body(body),
            expected,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // Deep nesting ends in an error, not a stack overflow.
    let deep = [b"[".repeat(100_000), b"]".repeat(100_000)].concat();
    assert_eq!(decode_every_body(&deep), nothing);
}

#[test]
fn bulk_helpers_are_bounded_across_requests() {
    let first = Helpers::take(10, 4);
    assert_eq!(first.0, 4);
    assert_eq!(
        Helpers::take(10, 4).0,
        0,
        "none left while the first holds them"
    );
    let small = Helpers::take(1, 6);
    assert_eq!(small.0, 1);
    drop(first);
    assert_eq!(Helpers::take(10, 4).0, 3, "one is still held");
}
