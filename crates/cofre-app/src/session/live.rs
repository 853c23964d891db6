//! The live-session registry: the sessions running on this node, so that an admin can see and end
//! them, a grant that ends (or a user, key, target or credential taken away) closes the sessions
//! that depended on it, and a shutdown can tell every one of them and wait for them to end.

use super::control::Control;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

pub struct LiveSessions {
    sessions: Mutex<HashMap<String, LiveSession>>,
    /// How many sessions are registered, for a drain to wait on.
    count: watch::Sender<usize>,
    /// How many ends are being written (a session leaves the map before its end commits).
    ending: watch::Sender<usize>,
    /// A line every live session shows its user (the shutdown's notice).
    notice: watch::Sender<Option<String>>,
    /// Set by a drain: no new session starts.
    draining: AtomicBool,
}

impl Default for LiveSessions {
    fn default() -> Self {
        LiveSessions {
            sessions: Mutex::default(),
            count: watch::Sender::new(0),
            ending: watch::Sender::new(0),
            notice: watch::Sender::new(None),
            draining: AtomicBool::new(false),
        }
    }
}

struct LiveSession {
    kill: watch::Sender<Option<String>>,
    /// Watch, lock and moderation (see [`Control`]).
    control: Arc<Control>,
    /// The access request (grant) it was opened under.
    request: Option<String>,
    who: LiveWho,
}

/// Who a live session belongs to and what it reaches, for ending the ones that lost their ground.
#[derive(Debug, Clone)]
pub(crate) struct LiveWho {
    pub user: String,
    /// The SSH key the gateway login used (none for a password login).
    pub key: Option<String>,
    /// Where the user connected from (re-deciding needs it for policies with networks).
    pub source: Option<std::net::IpAddr>,
    pub target: String,
    pub account: String,
    /// The user's groups when the session started (who may moderate it).
    pub groups: Vec<String>,
}

/// What registering a session gives its front end.
pub(crate) struct Registered {
    pub kill: watch::Receiver<Option<String>>,
    pub control: Arc<Control>,
    pub notices: mpsc::UnboundedReceiver<String>,
}

impl LiveSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(
        &self,
        id: &str,
        request: Option<&str>,
        who: LiveWho,
        moderated: bool,
        size: (u32, u32),
    ) -> Registered {
        let (tx, rx) = watch::channel(None);
        let (control, notices) = Control::new(moderated, size.0, size.1);
        let mut map = self.lock();
        map.insert(
            id.to_owned(),
            LiveSession {
                kill: tx,
                control: control.clone(),
                request: request.map(str::to_owned),
                who,
            },
        );
        self.count.send_replace(map.len());
        Registered {
            kill: rx,
            control,
            notices,
        }
    }

    /// A live session's control and whom it belongs to.
    pub(crate) fn control(&self, id: &str) -> Option<(Arc<Control>, LiveWho)> {
        self.lock()
            .get(id)
            .map(|s| (s.control.clone(), s.who.clone()))
    }

    /// Ends when the session leaves the registry (or at once if it is not live).
    pub(crate) async fn wait_gone(&self, id: &str) {
        let mut count = self.count.subscribe();
        while self.is_live(id) {
            if count.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut map = self.lock();
        map.remove(id);
        self.count.send_replace(map.len());
    }

    pub(crate) fn is_live(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Asks a live session to end; false if it is not running here.
    pub(crate) fn kill(&self, id: &str, reason: &str) -> bool {
        self.lock()
            .get(id)
            .map(|s| s.kill.send(Some(reason.to_owned())).is_ok())
            .unwrap_or(false)
    }

    /// Ends every live session opened under this grant; returns how many.
    pub(crate) fn kill_by_request(&self, request: &str, reason: &str) -> usize {
        self.lock()
            .values()
            .filter(|s| s.request.as_deref() == Some(request))
            .filter(|s| s.kill.send(Some(reason.to_owned())).is_ok())
            .count()
    }

    /// The ids of the live sessions `pick` chooses, with whom they belong to.
    pub(crate) fn matching(&self, pick: impl Fn(&LiveWho) -> bool) -> Vec<(String, LiveWho)> {
        self.lock()
            .iter()
            .filter(|(_, s)| pick(&s.who))
            .map(|(id, s)| (id.clone(), s.who.clone()))
            .collect()
    }

    /// Ends every live session `pick` chooses; returns their ids.
    pub(crate) fn kill_where(&self, pick: impl Fn(&LiveWho) -> bool, reason: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| pick(&s.who))
            .filter(|(_, s)| s.kill.send(Some(reason.to_owned())).is_ok())
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(crate) fn kill_one(&self, id: &str, reason: &str) -> bool {
        self.kill(id, reason)
    }

    /// How many sessions run here now.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Notices for the user of every live session (see [`crate::session::Events`]).
    pub fn notices(&self) -> watch::Receiver<Option<String>> {
        self.notice.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Shows `text` to the user of every live session (a maintenance window's warning); the
    /// sessions go on.
    pub(crate) fn tell(&self, text: &str) {
        self.notice.send_replace(Some(text.to_owned()));
    }

    /// Takes back a notice that starts with `prefix` (a window's warning, once the window is
    /// over), so sessions that start later are not shown it; any other notice (the shutdown's)
    /// stays.
    pub(crate) fn untell(&self, prefix: &str) {
        self.notice.send_if_modified(|n| {
            if n.as_deref().is_some_and(|t| t.starts_with(prefix)) {
                *n = None;
                true
            } else {
                false
            }
        });
    }

    /// From now on no session starts, and every live one shows `notice` to its user.
    pub(crate) fn start_draining(&self, notice: &str) {
        self.draining.store(true, Ordering::SeqCst);
        self.notice.send_replace(Some(notice.to_owned()));
    }

    /// Held while a session's end is written.
    pub(crate) fn ending(&self) -> Ending<'_> {
        self.ending.send_modify(|n| *n += 1);
        Ending(self)
    }

    /// Waits until no session is live and every end has committed, or `within` has passed;
    /// true if so.
    pub(crate) async fn wait_empty(&self, within: std::time::Duration) -> bool {
        let (mut count, mut ending) = (self.count.subscribe(), self.ending.subscribe());
        let settled = async {
            loop {
                if count.wait_for(|n| *n == 0).await.is_err()
                    || ending.wait_for(|n| *n == 0).await.is_err()
                {
                    return;
                }
                if *count.borrow() == 0 {
                    return;
                }
            }
        };
        tokio::time::timeout(within, settled).await.is_ok()
    }
}

/// One end being written; see [`LiveSessions::ending`].
pub(crate) struct Ending<'a>(&'a LiveSessions);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.ending.send_modify(|n| *n = n.saturating_sub(1));
    }
}
