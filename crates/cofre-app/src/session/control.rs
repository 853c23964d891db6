//! What an admin does to one live session besides ending it: watch what its user sees as it
//! happens, block (and unblock) its user's input, and, for a session under a `--moderated`
//! policy, hold it while no moderator watches. One [`Control`] per live session, shared by the
//! registry (where the services find it) and the front end that relays the session (which hands
//! it every byte of output and asks it before passing on any input).
//!
//! Held means held, not dropped: the front end stops reading the target (and the user) while the
//! session is held, so SSH's flow control keeps the bytes waiting on the other side, and they are
//! passed on, recorded and shown to the watcher once a moderator is back.

use bytes::Bytes;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{broadcast, mpsc, watch};

/// Chunks of output a watcher may fall behind by before it is told it missed some.
const WATCH_BACKLOG: usize = 1024;

/// What the user is told while a moderated session waits for its first moderator.
pub const MODERATOR_WAIT_NOTICE: &str =
    "this session is moderated: waiting for a moderator to watch it";
const MODERATOR_JOINED: &str = "a moderator is watching; the session goes on";
const MODERATOR_LEFT: &str =
    "no moderator is watching: the session is paused (input and output held) until one does";

pub struct Control {
    /// Made by the first watcher: its backlog is WATCH_BACKLOG slots allocated at once (64 KiB),
    /// more than all the rest of an idle session, and most sessions are never watched.
    output: OnceLock<broadcast::Sender<Bytes>>,
    /// The terminal's size now (columns, rows): a watcher starts with it.
    size: Mutex<(u32, u32)>,
    /// Why the user's input is blocked, while it is.
    locked: watch::Sender<Option<String>>,
    moderated: bool,
    /// How many moderators watch now.
    moderators: watch::Sender<usize>,
    /// Lines for this session's user (see `Event::Notice`).
    notices: mpsc::UnboundedSender<String>,
}

impl Control {
    pub(crate) fn new(
        moderated: bool,
        cols: u32,
        rows: u32,
    ) -> (Arc<Control>, mpsc::UnboundedReceiver<String>) {
        let (notices, rx) = mpsc::unbounded_channel();
        let control = Control {
            output: OnceLock::new(),
            size: Mutex::new((cols, rows)),
            locked: watch::Sender::new(None),
            moderated,
            moderators: watch::Sender::new(0),
            notices,
        };
        (Arc::new(control), rx)
    }

    /// Output the user was shown: for whoever watches. Never waits (a slow watcher misses
    /// output and is told so; it never slows the session).
    pub fn output(&self, data: &Bytes) {
        if let Some(watchers) = self.output.get() {
            let _ = watchers.send(data.clone());
        }
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        if let Ok(mut size) = self.size.lock() {
            *size = (cols, rows);
        }
    }

    pub fn size(&self) -> (u32, u32) {
        self.size.lock().map_or((80, 24), |s| *s)
    }

    /// Whether the user's input is dropped now (an admin blocked it).
    pub fn input_blocked(&self) -> bool {
        self.locked.borrow().is_some()
    }

    /// Returns once the input is not blocked (for a protocol whose input cannot be dropped
    /// without breaking it: SFTP waits instead). Cancel-safe.
    pub async fn while_blocked(&self) {
        let mut locked = self.locked.subscribe();
        let _ = locked.wait_for(Option::is_none).await;
    }

    pub fn moderated(&self) -> bool {
        self.moderated
    }

    /// A moderated session with no moderator watching: nothing passes either way.
    pub fn is_held(&self) -> bool {
        self.moderated && *self.moderators.borrow() == 0
    }

    /// Returns once the session is not held. Cancel-safe.
    pub async fn while_held(&self) {
        if !self.moderated {
            return;
        }
        let mut moderators = self.moderators.subscribe();
        let _ = moderators.wait_for(|n| *n > 0).await;
    }

    /// Changes whenever a moderator comes or goes (for a front end's `select!`).
    pub fn moderators(&self) -> watch::Receiver<usize> {
        self.moderators.subscribe()
    }

    /// Blocks the input; false if it was blocked already.
    pub(crate) fn lock(&self, by: &str, reason: &str) -> bool {
        let locked = self.locked.send_if_modified(|l| {
            if l.is_some() {
                return false;
            }
            *l = Some(reason.to_owned());
            true
        });
        if locked {
            self.notice(format!(
                "your input is blocked by {by}: {reason}; what you type is dropped until it is unblocked"
            ));
        }
        locked
    }

    /// Unblocks the input; false if it was not blocked.
    pub(crate) fn unlock(&self, by: &str) -> bool {
        let unlocked = self.locked.send_if_modified(|l| l.take().is_some());
        if unlocked {
            self.notice(format!(
                "your input is unblocked by {by}; you can type again"
            ));
        }
        unlocked
    }

    fn notice(&self, text: String) {
        let _ = self.notices.send(text);
    }

    /// A watcher: the output from now on. A moderator's watch counts while it lasts.
    pub(crate) fn watch(self: &Arc<Self>, moderator: bool) -> Watching {
        let output = self
            .output
            .get_or_init(|| broadcast::channel(WATCH_BACKLOG).0)
            .subscribe();
        if moderator {
            let mut first = false;
            self.moderators.send_modify(|n| {
                first = *n == 0;
                *n += 1;
            });
            if first && self.moderated {
                self.notice(MODERATOR_JOINED.to_owned());
            }
        }
        Watching {
            control: self.clone(),
            moderator,
            output,
        }
    }
}

/// One watcher's view of a live session; dropping it ends the watch (and, for the last moderator
/// of a moderated session, holds the session).
pub struct Watching {
    control: Arc<Control>,
    moderator: bool,
    pub output: broadcast::Receiver<Bytes>,
}

impl Watching {
    pub fn size(&self) -> (u32, u32) {
        self.control.size()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if !self.moderator {
            return;
        }
        let mut last = false;
        self.control.moderators.send_modify(|n| {
            *n = n.saturating_sub(1);
            last = *n == 0;
        });
        if last && self.control.moderated {
            self.control.notice(MODERATOR_LEFT.to_owned());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocked_input_and_its_notices() {
        let (control, mut notices) = Control::new(false, 80, 24);
        assert!(!control.input_blocked());
        assert!(control.lock("admin", "checking"));
        assert!(!control.lock("admin", "again"), "locked once");
        assert!(control.input_blocked());
        assert!(notices
            .recv()
            .await
            .unwrap()
            .contains("blocked by admin: checking"));
        assert!(control.unlock("admin"));
        assert!(!control.unlock("admin"), "unlocked once");
        assert!(notices.recv().await.unwrap().contains("unblocked by admin"));
        assert!(notices.try_recv().is_err(), "one notice each");
    }

    #[tokio::test]
    async fn an_unwatched_session_keeps_no_backlog() {
        let (control, _notices) = Control::new(false, 80, 24);
        control.output(&Bytes::from_static(b"nobody sees this"));
        assert!(control.output.get().is_none(), "a backlog with no watcher");
        let mut watcher = control.watch(false);
        control.output(&Bytes::from_static(b"seen"));
        assert_eq!(watcher.output.recv().await.unwrap(), &b"seen"[..]);
        assert!(
            watcher.output.try_recv().is_err(),
            "output from before the watch is not shown"
        );
    }

    #[tokio::test]
    async fn a_moderated_session_is_held_while_no_moderator_watches() {
        let (control, mut notices) = Control::new(true, 100, 30);
        assert!(control.is_held());
        let auditor = control.watch(false);
        assert!(
            control.is_held(),
            "a watcher who is no moderator holds nothing open"
        );
        let moderator = control.watch(true);
        assert!(!control.is_held());
        control.while_held().await;
        assert!(notices
            .recv()
            .await
            .unwrap()
            .contains("moderator is watching"));
        control.output(&Bytes::from_static(b"hello"));
        let mut moderator = moderator;
        assert_eq!(moderator.output.recv().await.unwrap(), &b"hello"[..]);
        assert_eq!(moderator.size(), (100, 30));
        drop(moderator);
        assert!(control.is_held());
        assert!(notices.recv().await.unwrap().contains("paused"));
        drop(auditor);
        assert!(
            notices.try_recv().is_err(),
            "an auditor leaving says nothing"
        );
        let (plain, _) = Control::new(false, 80, 24);
        assert!(!plain.is_held());
        plain.while_held().await;
    }
}
