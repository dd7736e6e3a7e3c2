//! The filesystem keystore: one file per key. (To be written.)
