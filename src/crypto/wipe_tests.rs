//! Key material is zero when its memory goes back to the allocator, and `Debug` never
//! shows it. The test binary's allocator watches one buffer per thread and records
//! whether it was all zeros when freed; a plain `Vec` serves as the control that the
//! watch can see unwiped memory at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::Cipher;
use super::KeyVersion;
use super::gojson::JsonText;
use super::proto::{self, HmacKey, SecretKey};

struct Watching;

thread_local! {
    static WATCHED: Cell<usize> = const { Cell::new(0) };
    static WIPED: Cell<Option<bool>> = const { Cell::new(None) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the watched
// block is only read before it is passed on.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let watched = WATCHED.try_with(Cell::get).unwrap_or(0);
        if watched != 0 && ptr as usize == watched {
            // SAFETY: the block is still allocated, `layout.size()` bytes long.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let wiped = bytes.iter().all(|&b| b == 0);
            let _ = WIPED.try_with(|w| w.set(Some(wiped)));
            let _ = WATCHED.try_with(|w| w.set(0));
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// Drops `value` and says whether its heap buffer at `buffer` was all zeros when freed.
fn wiped_when_dropped<T>(value: T, buffer: *const u8) -> bool {
    WIPED.with(|w| w.set(None));
    WATCHED.with(|w| w.set(buffer as usize));
    drop(value);
    WATCHED.with(|w| w.set(0));
    WIPED
        .with(Cell::get)
        .expect("the watched buffer was freed by the drop")
}

#[test]
fn the_watch_sees_memory_that_is_not_wiped() {
    let plain = vec![0xa5u8; 32];
    let buffer = plain.as_ptr();
    assert!(!wiped_when_dropped(plain, buffer));
}

#[test]
fn stored_key_messages_are_wiped_when_dropped() {
    let key = SecretKey {
        key: vec![0xa5; 32],
        r#type: 1,
    };
    let buffer = key.key.as_ptr();
    assert!(wiped_when_dropped(key, buffer), "SecretKey");
    let hmac = HmacKey {
        key: vec![0x5a; 32],
        hash: 1,
    };
    let buffer = hmac.key.as_ptr();
    assert!(wiped_when_dropped(hmac, buffer), "HmacKey");
}

#[test]
fn unescaped_json_text_is_wiped_when_dropped() {
    // An escape forces an owned copy of the string.
    let json = format!("\"\\u0041{}\"", "QUFB".repeat(10));
    let text: JsonText = serde_json::from_str(&json).unwrap();
    assert!(text.as_str().starts_with("AQUFB"));
    let buffer = text.owned_buffer().expect("an owned copy");
    assert!(wiped_when_dropped(text, buffer));
}

#[test]
fn debug_output_never_shows_key_bytes() {
    let bytes = [0xabu8; 32];
    let shown = [
        format!(
            "{:?}",
            SecretKey {
                key: bytes.to_vec(),
                r#type: 1
            }
        ),
        format!(
            "{:?}",
            HmacKey {
                key: bytes.to_vec(),
                hash: 1
            }
        ),
        format!(
            "{:?}",
            KeyVersion::import(&bytes, Cipher::Aes256, "me").unwrap()
        ),
        format!(
            "{:#?}",
            KeyVersion::import(&bytes, Cipher::ChaCha20, "me").unwrap()
        ),
    ];
    assert_eq!(shown[0], "SecretKey { type: 1, .. }");
    assert_eq!(shown[1], "HmacKey { hash: 1, .. }");
    for text in &shown {
        for leak in ["171", "ab", "AB", "q6ur", "[", "0x"] {
            assert!(!text.contains(leak), "{text} shows {leak:?}");
        }
    }
    assert!(shown[2].contains("key: <redacted>"), "{}", shown[2]);
    assert!(shown[2].contains("hmac_key: <redacted>"), "{}", shown[2]);
}

#[test]
fn the_stored_message_shows_its_structure_without_key_bytes() {
    let bytes = [0xabu8; 32];
    let message = proto::KeyVersion {
        key: Some(SecretKey {
            key: bytes.to_vec(),
            r#type: 2,
        }),
        hmac_key: Some(HmacKey {
            key: bytes.to_vec(),
            hash: 1,
        }),
        created_at: None,
        created_by: "me".into(),
    };
    assert_eq!(
        format!("{message:?}"),
        "KeyVersion { key: Some(SecretKey { type: 2, .. }), hmac_key: Some(HmacKey { hash: 1, .. }), created_at: None, created_by: \"me\" }"
    );
}
