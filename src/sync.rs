//! Locking as the server does it everywhere.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: a panic is caught per request or per connection,
/// every critical section leaves its data consistent, and one failed request must not
/// turn every later lock into a failure of the whole server.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
