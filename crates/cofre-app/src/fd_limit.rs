//! File descriptors. The soft open-files limit is raised to the hard one at start, and each
//! listener may hold at most a share of it, so that a flood of connections on one (idle TLS
//! handshakes, say) can starve neither the other listener nor the database, recordings and
//! connections to targets, which keep a reserve.

use std::sync::{Arc, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything but accepted connections.
const RESERVE: u64 = 512;
/// The two listeners (HTTPS, SSH gateway) share what is left; gateway sessions also hold a
/// recording and a connection to the target, hence a quarter each rather than half.
const SHARES: u64 = 4;
const MIN_PER_LISTENER: u64 = 64;

static PER_LISTENER: OnceLock<usize> = OnceLock::new();

/// Connections one listener may hold at once (raising the limit the first time it is asked).
pub fn per_listener() -> usize {
    *PER_LISTENER.get_or_init(|| {
        let soft = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-files limit");
                1024
            }
        };
        let share = (soft.saturating_sub(RESERVE) / SHARES).max(MIN_PER_LISTENER);
        tracing::debug!(open_files = soft, per_listener = share, "connection caps");
        usize::try_from(share).unwrap_or(usize::MAX)
    })
}

/// One listener's connection slots.
#[derive(Clone)]
pub struct ConnectionSlots(Arc<Semaphore>);

impl ConnectionSlots {
    pub fn new() -> ConnectionSlots {
        ConnectionSlots(Arc::new(Semaphore::new(per_listener())))
    }

    /// A slot for a new connection, held until it is dropped; None when the listener is full.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

impl Default for ConnectionSlots {
    fn default() -> Self {
        Self::new()
    }
}
