//! What every backend must do, checked by each backend's own tests.

use std::sync::{Arc, Barrier};

use super::error::KeyStoreError;
use super::store::KeyStore;

/// Create-if-absent, get, paged listing by prefix, delete.
pub fn create_get_list_delete(store: &dyn KeyStore) {
    assert_eq!(store.get("key-a").unwrap_err(), KeyStoreError::NotFound);
    store.create("key-b", b"B").unwrap();
    store.create("key-a", b"A").unwrap();
    store.create("other", b"").unwrap();
    assert_eq!(
        store.create("key-a", b"again").unwrap_err(),
        KeyStoreError::Exists
    );
    assert_eq!(*store.get("key-a").unwrap(), b"A");
    assert_eq!(*store.get("other").unwrap(), b"");

    let page = store.list("key-", None, 1).unwrap();
    assert_eq!(page.names, ["key-a"]);
    assert_eq!(page.continue_at.as_deref(), Some("key-b"));
    let page = store.list("key-", page.continue_at.as_deref(), 1).unwrap();
    assert_eq!(page.names, ["key-b"]);
    assert_eq!(page.continue_at, None);
    assert_eq!(
        store.list("", None, 10).unwrap().names,
        ["key-a", "key-b", "other"]
    );

    store.delete("key-a").unwrap();
    assert_eq!(store.delete("key-a").unwrap_err(), KeyStoreError::NotFound);
    assert_eq!(store.get("key-a").unwrap_err(), KeyStoreError::NotFound);
    assert!(store.status().is_ok());
}

/// 16 threads create one name at once: exactly one succeeds, the others get
/// `Exists`, and the stored value is the winner's, whole.
pub fn concurrent_creates_store_exactly_one(store: Arc<dyn KeyStore>) {
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16u8)
        .map(|i| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let value = vec![i; 4096];
                barrier.wait();
                store.create("race", &value).map(|()| i)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<u8> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| *r == Err(KeyStoreError::Exists))
    );
    assert_eq!(*store.get("race").unwrap(), vec![winners[0]; 4096]);
}
