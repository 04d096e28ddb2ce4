//! [`Hangup`]: how a handler, or the controller, closes a connection at
//! once — even while a write to a client that does not read is pending (how
//! stalled watch streams and connections of dead containers are cut off).
//! A leaf: the server, the watch hub and the connection gate all use it.

use std::sync::Arc;
use tokio::sync::Notify;

/// Lets a handler (or the controller) close a connection at once.
#[derive(Clone, Default)]
pub struct Hangup(Arc<HangupState>);

#[derive(Default)]
pub struct HangupState {
    notify: Notify,
    done: std::sync::atomic::AtomicBool,
}

impl Hangup {
    pub fn hang_up(&self) {
        self.0.done.store(true, std::sync::atomic::Ordering::SeqCst);
        // A stored permit: a hang-up before the wait starts is not lost.
        self.0.notify.notify_one();
    }

    /// Whether the connection was told to hang up.
    pub fn is_hung_up(&self) -> bool {
        self.0.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        self.0.notify.notified().await;
    }
}
