//! The in-memory keystore used by `--dev`. (To be written.)
