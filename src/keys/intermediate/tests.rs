//! The IK rules against a stand-in keystore that wraps with real AES-256-GCM and counts
//! its calls: one wrap per TTL, one unwrap per IK per TTL, the use bound, single flight,
//! revocation, rotation, the size bound, and the setting off.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use sha2::{Digest, Sha256};

use super::*;
use crate::keystore::sealed::Envelope;
use crate::keystore::{ListPage, Sealed};

/// A keystore with one resident key per name (its material derived from the name and
/// version), counting seals and unseals.
#[derive(Default)]
struct Cm {
    version: AtomicU32,
    seals: AtomicUsize,
    unseals: AtomicUsize,
    gone: AtomicBool,
    delay: Option<Duration>,
}

impl Cm {
    fn cipher(name: &str, version: u32) -> Aes256Gcm {
        let material = Sha256::new()
            .chain_update(name)
            .chain_update(version.to_be_bytes())
            .finalize();
        Aes256Gcm::new(&material)
    }

    fn calls(&self) -> (usize, usize) {
        (
            self.seals.load(Ordering::SeqCst),
            self.unseals.load(Ordering::SeqCst),
        )
    }

    fn pause(&self) {
        if let Some(delay) = self.delay {
            thread::sleep(delay);
        }
    }
}

impl KeyStore for Cm {
    fn describe(&self) -> String {
        "cm stand-in".into()
    }
    fn create(&self, _: &str, _: &[u8]) -> Result<(), KeyStoreError> {
        Err(KeyStoreError::Exists)
    }
    fn get(&self, _: &str) -> Result<StoredValue, KeyStoreError> {
        Err(KeyStoreError::NotFound)
    }
    fn delete(&self, _: &str) -> Result<(), KeyStoreError> {
        Ok(())
    }
    fn list(&self, _: &str, _: Option<&str>, _: usize) -> Result<ListPage, KeyStoreError> {
        Ok(ListPage::default())
    }
    fn status(&self) -> Result<Duration, KeyStoreError> {
        Ok(Duration::ZERO)
    }

    fn seal(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, KeyStoreError> {
        self.seals.fetch_add(1, Ordering::SeqCst);
        self.pause();
        if self.gone.load(Ordering::SeqCst) {
            return Err(KeyStoreError::NotFound);
        }
        let version = self.version.load(Ordering::SeqCst);
        let mut iv = [0; 12];
        fill_random(&mut iv);
        let mut out = Cm::cipher(name, version)
            .encrypt(
                (&iv).into(),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap();
        let tag = out.split_off(out.len() - 16);
        Ok(Sealed {
            version,
            iv: iv.to_vec(),
            tag,
            ciphertext: out,
        })
    }

    fn unseal(
        &self,
        name: &str,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Option<StoredValue>, KeyStoreError> {
        self.unseals.fetch_add(1, Ordering::SeqCst);
        self.pause();
        if self.gone.load(Ordering::SeqCst) {
            return Err(KeyStoreError::NotFound);
        }
        let msg = [&sealed.ciphertext[..], &sealed.tag[..]].concat();
        Ok(Cm::cipher(name, sealed.version)
            .decrypt(
                aes_gcm::Nonce::from_slice(&sealed.iv),
                Payload { msg: &msg, aad },
            )
            .ok()
            .map(StoredValue::new))
    }
}

fn on(ttl: Duration, max_uses: u64) -> Arc<IntermediateKeys> {
    IntermediateKeys::new(Some(IntermediateKeySettings { ttl, max_uses }))
}

fn seal(iks: &IntermediateKeys, cm: &Cm, name: &str) -> (Vec<u8>, IkUse) {
    iks.seal(
        cm,
        name,
        cm.version.load(Ordering::SeqCst),
        b"dek",
        b"ctx",
        None,
    )
    .unwrap()
}

fn open(
    iks: &IntermediateKeys,
    cm: &Cm,
    name: &str,
    envelope: &[u8],
) -> Result<(Option<StoredValue>, IkUse), KeyStoreError> {
    let Ok(Envelope::Intermediate(parsed)) = Envelope::parse(envelope) else {
        panic!("not a format-2 envelope")
    };
    iks.open(cm, name, &parsed, b"ctx", None)
}

fn header(envelope: &[u8]) -> Vec<u8> {
    let Ok(Envelope::Intermediate(parsed)) = Envelope::parse(envelope) else {
        panic!("not a format-2 envelope")
    };
    parsed.header.to_vec()
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn one_wrap_per_key_and_one_unwrap_per_ik_and_node() {
    let cm = Cm::default();
    let (node1, node2) = (on(MINUTE, 1000), on(MINUTE, 1000));
    let sealed: Vec<_> = (0..20).map(|_| seal(&node1, &cm, "k")).collect();
    assert_eq!(sealed[0].1, IkUse::Wrapped);
    assert!(sealed[1..].iter().all(|(_, how)| *how == IkUse::Cached));
    assert_eq!(cm.calls(), (1, 0));
    // The node that wrapped the IK opens its envelopes without an unwrap...
    for (envelope, _) in &sealed {
        let (plain, how) = open(&node1, &cm, "k", envelope).unwrap();
        assert_eq!(
            (plain.unwrap().as_slice(), how),
            (&b"dek"[..], IkUse::Cached)
        );
    }
    assert_eq!(cm.calls(), (1, 0));
    // ... another node unwraps it once.
    for (i, (envelope, _)) in sealed.iter().enumerate() {
        let (plain, how) = open(&node2, &cm, "k", envelope).unwrap();
        assert_eq!(plain.unwrap().as_slice(), b"dek");
        let expected = if i == 0 {
            IkUse::Unwrapped
        } else {
            IkUse::Cached
        };
        assert_eq!(how, expected);
    }
    assert_eq!(cm.calls(), (1, 1));
    // Another key has IKs of its own.
    seal(&node1, &cm, "other");
    assert_eq!(cm.calls(), (2, 1));
    let stats = node1.stats().unwrap();
    assert_eq!((stats.live_seal, stats.live_open), (2, 2));
    assert_eq!((stats.hits_seal, stats.misses_seal), (19, 2));
    assert_eq!((stats.hits_open, stats.misses_open), (20, 0));
    let stats = node2.stats().unwrap();
    assert_eq!(
        (stats.hits_open, stats.misses_open, stats.live_open),
        (19, 1, 1)
    );
}

#[test]
fn an_ik_is_used_for_at_most_max_uses_data_keys() {
    let cm = Cm::default();
    let (node1, node2) = (on(MINUTE, 3), on(MINUTE, 3));
    let sealed: Vec<Vec<u8>> = (0..7).map(|_| seal(&node1, &cm, "k").0).collect();
    assert_eq!(cm.calls(), (3, 0), "7 data keys, 3 per IK");
    let headers: Vec<_> = sealed.iter().map(|e| header(e)).collect();
    assert!(headers[..3].iter().all(|h| *h == headers[0]));
    assert!(headers[3..6].iter().all(|h| *h == headers[3]));
    assert_ne!(headers[0], headers[3]);
    assert_ne!(headers[3], headers[6]);
    for envelope in &sealed {
        assert!(open(&node2, &cm, "k", envelope).unwrap().0.is_some());
    }
    assert_eq!(cm.calls(), (3, 3), "one unwrap per distinct IK");
    // The first IK's three uses on node 2 are spent: a fourth needs an unwrap again.
    let (_, how) = open(&node2, &cm, "k", &sealed[0]).unwrap();
    assert_eq!((how, cm.calls()), (IkUse::Unwrapped, (3, 4)));
}

#[test]
fn an_ik_is_never_used_past_its_ttl() {
    let cm = Cm::default();
    let ttl = Duration::from_millis(200);
    // Without the sweeper: the TTL holds at every use, not only when spent IKs are wiped.
    let settings = Some(IntermediateKeySettings {
        ttl,
        max_uses: 1000,
    });
    let (node1, node2) = (
        IntermediateKeys::without_sweeper(settings),
        IntermediateKeys::without_sweeper(settings),
    );
    let first = seal(&node1, &cm, "k").0;
    open(&node2, &cm, "k", &first).unwrap();
    assert_eq!(cm.calls(), (1, 1));
    thread::sleep(ttl + Duration::from_millis(20));
    assert!(node1.warm_seal("k", 0).is_none());
    assert!(node2.warm_open("k", &header(&first)).is_none());
    assert_eq!(
        node2.stats().unwrap().live_open,
        0,
        "expired IKs are not live"
    );
    let second = seal(&node1, &cm, "k").0;
    assert_ne!(header(&first), header(&second));
    let (plain, how) = open(&node2, &cm, "k", &first).unwrap();
    assert_eq!((plain.is_some(), how), (true, IkUse::Unwrapped));
    assert_eq!(cm.calls(), (2, 2));
}

#[test]
fn the_sweeper_wipes_spent_iks() {
    let cm = Cm::default();
    let ttl = Duration::from_millis(200);
    let node = on(ttl, 1000);
    let envelope = seal(&node, &cm, "k").0;
    open(&node, &cm, "k", &envelope).unwrap();
    let slots = Arc::clone(node.slots.get().unwrap().as_ref().unwrap());
    assert_eq!((lock(&node.maps).entries, slots.in_use()), (2, 1));
    // The sweeper runs every ttl/4 (at least 50 ms): the IK is gone, and its locked slot
    // wiped and free, without any request asking for it.
    thread::sleep(ttl + Duration::from_millis(150));
    assert_eq!((lock(&node.maps).entries, slots.in_use()), (0, 0));
}

#[test]
fn a_key_gone_from_the_keystore_ends_with_the_ttl_of_its_iks() {
    let cm = Cm::default();
    let ttl = Duration::from_millis(300);
    let (node1, node2) = (on(ttl, 1000), on(ttl, 1000));
    let envelope = seal(&node1, &cm, "k").0;
    open(&node2, &cm, "k", &envelope).unwrap();
    cm.gone.store(true, Ordering::SeqCst);
    // Within the TTL the kept IKs still serve...
    seal(&node1, &cm, "k");
    assert!(open(&node2, &cm, "k", &envelope).unwrap().0.is_some());
    thread::sleep(ttl + Duration::from_millis(50));
    // ... after it nothing does: no new IK is wrapped or unwrapped.
    let sealed = node1.seal(&cm, "k", 0, b"dek", b"ctx", None);
    assert_eq!(sealed.err(), Some(KeyStoreError::NotFound));
    assert_eq!(
        open(&node2, &cm, "k", &envelope).err(),
        Some(KeyStoreError::NotFound)
    );
    let stats = node1.stats().unwrap();
    assert_eq!((stats.live_seal, stats.live_open), (0, 0));
}

#[test]
fn concurrent_requests_share_one_wrap_and_one_unwrap() {
    let cm = Cm {
        delay: Some(Duration::from_millis(100)),
        ..Cm::default()
    };
    let (node1, node2) = (on(MINUTE, 1000), on(MINUTE, 1000));
    let sealed: Vec<Vec<u8>> = thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| seal(&node1, &cm, "k").0))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(cm.calls(), (1, 0));
    thread::scope(|scope| {
        for envelope in &sealed {
            let (node2, cm) = (&node2, &cm);
            scope.spawn(move || assert!(open(node2, cm, "k", envelope).unwrap().0.is_some()));
        }
    });
    assert_eq!(cm.calls(), (1, 1));
}

#[test]
fn an_ik_opens_only_its_own_keys_contexts_and_bytes() {
    let cm = Cm::default();
    let (node1, node2) = (on(MINUTE, 1000), on(MINUTE, 1000));
    let envelope = seal(&node1, &cm, "a").0;
    // Under another key's name the keystore refuses the wrap: not authentic.
    for node in [&node1, &node2] {
        assert!(open(node, &cm, "b", &envelope).unwrap().0.is_none());
    }
    let Ok(Envelope::Intermediate(parsed)) = Envelope::parse(&envelope) else {
        panic!()
    };
    let (plain, _) = node1.open(&cm, "a", &parsed, b"other", None).unwrap();
    assert!(plain.is_none(), "another context");
    let mut tampered = envelope.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let unseals = cm.calls().1;
    assert!(open(&node1, &cm, "a", &tampered).unwrap().0.is_none());
    assert_eq!(cm.calls().1, unseals, "a kept IK needs no keystore call");
    // A wrap under another purpose (a data key the keystore sealed with a context) is
    // refused too.
    let foreign = cm.seal("a", &[7; 32], b"ctx").unwrap();
    let mut forged = ik_header(&foreign).unwrap();
    forged.extend_from_slice(&[0; IK_NONCE_LEN + 48]);
    assert!(open(&node2, &cm, "a", &forged).unwrap().0.is_none());
}

#[test]
fn a_rotation_or_a_newer_version_starts_a_new_ik_at_once() {
    let cm = Cm::default();
    let node = on(MINUTE, 1000);
    let before = seal(&node, &cm, "k").0;
    cm.version.store(1, Ordering::SeqCst);
    // The server learned of version 1 (its key cache): the IK of version 0 is not used.
    let after = seal(&node, &cm, "k").0;
    assert_eq!(cm.calls().0, 2);
    let (Ok(Envelope::Intermediate(a)), Ok(Envelope::Intermediate(b))) =
        (Envelope::parse(&before), Envelope::parse(&after))
    else {
        panic!()
    };
    assert_eq!((a.wrapped.version, b.wrapped.version), (0, 1));
    // A rotation through this server lets the IK for new data keys go at once...
    node.rotated("k");
    seal(&node, &cm, "k");
    assert_eq!(cm.calls().0, 3);
    // ... and both older envelopes still open.
    for envelope in [&before, &after] {
        assert!(open(&node, &cm, "k", envelope).unwrap().0.is_some());
    }
}

#[test]
fn warm_iks_are_taken_without_a_keystore_call_and_count_as_uses() {
    let cm = Cm::default();
    let node = on(MINUTE, 2);
    assert!(node.warm_seal("k", 0).is_none(), "nothing kept yet");
    let envelope = seal(&node, &cm, "k").0;
    let warm = node.warm_seal("k", 0).expect("kept");
    assert!(
        node.warm_seal("k", 1).is_none(),
        "an IK of an older version"
    );
    assert!(node.warm_seal("k", 0).is_none(), "both uses taken");
    let (again, how) = node.seal(&cm, "k", 0, b"dek", b"ctx", Some(&warm)).unwrap();
    assert_eq!((how, header(&again)), (IkUse::Cached, header(&envelope)));
    let warm = node.warm_open("k", &header(&envelope)).expect("kept");
    let Ok(Envelope::Intermediate(parsed)) = Envelope::parse(&again) else {
        panic!()
    };
    let (plain, how) = node.open(&cm, "k", &parsed, b"ctx", Some(&warm)).unwrap();
    assert_eq!(
        (plain.unwrap().as_slice(), how),
        (&b"dek"[..], IkUse::Cached)
    );
    assert_eq!(cm.calls(), (1, 0));
}

#[test]
fn the_kept_iks_are_bounded() {
    let cm = Cm::default();
    let (node1, node2) = (on(MINUTE, 1), on(MINUTE, 1000));
    // max_uses 1: every seal wraps a new IK, and node 2 unwraps each.
    for _ in 0..MAX_ENTRIES + 10 {
        let envelope = seal(&node1, &cm, "k").0;
        open(&node2, &cm, "k", &envelope).unwrap();
    }
    let stats = node2.stats().unwrap();
    assert!(stats.live_open as usize <= MAX_ENTRIES, "{stats:?}");
    let maps = lock(&node2.maps);
    assert!(maps.entries <= MAX_ENTRIES && maps.bytes <= MAX_BYTES);
    assert_eq!(maps.entries, maps.ready().count());
}

#[test]
fn with_the_setting_off_envelopes_still_open_one_unwrap_each() {
    let cm = Cm::default();
    let envelope = seal(&on(MINUTE, 1000), &cm, "k").0;
    let off = IntermediateKeys::new(None);
    assert!(!off.enabled() && off.stats().is_none());
    for _ in 0..2 {
        let (plain, how) = open(&off, &cm, "k", &envelope).unwrap();
        assert_eq!(
            (plain.unwrap().as_slice(), how),
            (&b"dek"[..], IkUse::Unwrapped)
        );
    }
    assert_eq!(cm.calls(), (1, 2));
    assert!(off.warm_open("k", &header(&envelope)).is_none());
    assert!(off.seal(&cm, "k", 0, b"dek", b"", None).is_err());
}
