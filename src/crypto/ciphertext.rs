//! Encryption and decryption with a master key (formats.md §3.1), and the current
//! binary ciphertext form `AEAD(plaintext) || iv || nonce` (§3.2). The older wrappings
//! of the same three parts live in `legacy`.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use chacha20::cipher::consts::U10;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::{
    Cipher, DecryptError, IV_LEN, KEY_LEN, KeyVersion, OVERHEAD, OldestReader, RANDOM_LEN, TAG_LEN,
    fill_random, legacy,
};

impl KeyVersion {
    /// Encrypts with fresh random iv and nonce, binding `context` as associated data.
    ///
    /// # Panics
    /// As [`KeyVersion::generate`].
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut random = Zeroizing::new([0; RANDOM_LEN]);
        fill_random(&mut random[..]);
        self.encrypt_with_random(plaintext, context, &random)
    }

    /// [`KeyVersion::encrypt`] with the caller's iv and nonce (`random` = iv || nonce).
    /// Only for reproducing test vectors: reusing `random` breaks the encryption.
    #[doc(hidden)]
    pub fn encrypt_with_random(
        &self,
        plaintext: &[u8],
        context: &[u8],
        random: &[u8; RANDOM_LEN],
    ) -> Vec<u8> {
        let (iv, nonce) = random.split_at(IV_LEN);
        let aead_key = derive_aead_key(self.cipher, &self.key, iv);
        // The buffer holds the plaintext until it is encrypted in place; it is sized so
        // that appending never reallocates and leaves a plaintext copy behind.
        let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + OVERHEAD));
        buffer.extend_from_slice(plaintext);
        let tag =
            match self.cipher {
                Cipher::Aes256 => Aes256Gcm::new(aead_key.as_slice().into())
                    .encrypt_in_place_detached(nonce.into(), context, &mut buffer),
                Cipher::ChaCha20 => ChaCha20Poly1305::new(aead_key.as_slice().into())
                    .encrypt_in_place_detached(nonce.into(), context, &mut buffer),
            }
            .expect("plaintexts are far below the AEAD length limits");
        buffer.extend_from_slice(&tag);
        buffer.extend_from_slice(random);
        std::mem::take(&mut *buffer)
    }

    /// Encrypts as [`KeyVersion::encrypt`] does, in the ciphertext form `reader` and
    /// every later generation decrypt (formats.md §3):
    /// - [`OldestReader::V017`]: the JSON form, fields `aead`, `id`, `iv`, `nonce`,
    ///   `bytes` in that order, as v0.17 marshals it;
    /// - [`OldestReader::Y2023`]: the msgpack form with the 2022 algorithm name (the one
    ///   name every 2022 and 2023 release accepts) and the key ID those releases check;
    /// - [`OldestReader::Current`]: the binary form.
    ///
    /// The AEAD is the same in all three; only the wrapping differs.
    ///
    /// # Panics
    /// As [`KeyVersion::generate`].
    pub fn encrypt_for(&self, reader: OldestReader, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut random = Zeroizing::new([0; RANDOM_LEN]);
        fill_random(&mut random[..]);
        self.encrypt_with_random_for(reader, plaintext, context, &random)
    }

    /// [`KeyVersion::encrypt_for`] with the caller's iv and nonce. Only for reproducing
    /// test vectors.
    #[doc(hidden)]
    pub fn encrypt_with_random_for(
        &self,
        reader: OldestReader,
        plaintext: &[u8],
        context: &[u8],
        random: &[u8; RANDOM_LEN],
    ) -> Vec<u8> {
        let binary = self.encrypt_with_random(plaintext, context, random);
        if reader == OldestReader::Current {
            return binary;
        }
        let (sealed, random) = binary.split_at(binary.len() - RANDOM_LEN);
        let (iv, nonce) = random.split_at(IV_LEN);
        let parts = legacy::Parts {
            cipher: self.cipher,
            key_id: &self.key_id(),
            iv,
            nonce,
            sealed,
        };
        match reader {
            OldestReader::V017 => parts.to_json(),
            _ => parts.to_msgpack(),
        }
    }

    /// Decrypts a ciphertext of any generation: the current binary layout, or the
    /// msgpack and JSON wrappings of older servers (formats.md §3).
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let legacy = legacy::parse(ciphertext);
        let (sealed, iv, nonce, cipher) = match &legacy {
            Some(parsed) => {
                let cipher = if self.undefined_algorithm {
                    parsed.algorithm
                } else {
                    self.cipher
                };
                (
                    parsed.sealed.as_slice(),
                    &parsed.iv[..],
                    &parsed.nonce[..],
                    cipher,
                )
            }
            None => {
                if ciphertext.len() <= RANDOM_LEN {
                    return Err(DecryptError);
                }
                let (sealed, random) = ciphertext.split_at(ciphertext.len() - RANDOM_LEN);
                let (iv, nonce) = random.split_at(IV_LEN);
                (sealed, iv, nonce, self.cipher)
            }
        };
        if sealed.len() < TAG_LEN {
            return Err(DecryptError);
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let aead_key = derive_aead_key(cipher, &self.key, iv);
        let mut plaintext = Zeroizing::new(body.to_vec());
        match cipher {
            Cipher::Aes256 => Aes256Gcm::new(aead_key.as_slice().into()).decrypt_in_place_detached(
                nonce.into(),
                context,
                &mut plaintext,
                tag.into(),
            ),
            Cipher::ChaCha20 => ChaCha20Poly1305::new(aead_key.as_slice().into())
                .decrypt_in_place_detached(nonce.into(), context, &mut plaintext, tag.into()),
        }
        .map_err(|_| DecryptError)?;
        Ok(plaintext)
    }

    /// HMAC-SHA256 of `message` under the key's HMAC key; `None` if it has none.
    pub fn hmac(&self, message: &[u8]) -> Option<[u8; 32]> {
        let hmac_key = self.hmac_key.as_ref()?;
        Some(hmac_sha256(hmac_key.as_slice(), message))
    }
}

/// The one-message AEAD key of formats.md §3.1.
pub(super) fn derive_aead_key(
    cipher: Cipher,
    master: &[u8; KEY_LEN],
    iv: &[u8],
) -> Zeroizing<[u8; KEY_LEN]> {
    let mut derived = Zeroizing::new([0; KEY_LEN]);
    match cipher {
        Cipher::Aes256 => {
            let mut output = hmac_sha256(master, iv);
            derived.copy_from_slice(&output);
            output.zeroize();
        }
        Cipher::ChaCha20 => {
            let mut output = chacha20::hchacha::<U10>(master.into(), iv.into());
            derived.copy_from_slice(&output);
            output.as_mut_slice().zeroize();
        }
    }
    derived
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    let mut output = mac.finalize().into_bytes();
    let sum = output.into();
    output.as_mut_slice().zeroize();
    sum
}
