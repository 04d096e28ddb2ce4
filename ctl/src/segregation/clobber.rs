//! Clobbering repaired at once. The kernel multicasts every nftables
//! change to the `NFNLGRP_NFTABLES` group of `NETLINK_NETFILTER` sockets —
//! including changes made with the `iptables` command when it is
//! iptables-nft (Debian 12's default, and how Docker writes its own rules).
//! On each burst of changes the controller re-reads the kernel and writes
//! back what differs from the policies ([`Mode::Repair`]: the compiled
//! rules are kept, Docker is not asked again), so a flushed `SEG-` chain or a
//! deleted `DOCKER-USER` jump is back within milliseconds rather than at the
//! next periodic resync, which stays as the safety net.
//!
//! Nothing in a notification is parsed: which table changed, and who
//! changed it, does not matter — the check compares the whole of seg's
//! rules. Our own transactions notify too; their check finds nothing to do.
//! A burst is taken as one change ([`SETTLE`]), and checks are at least
//! [`MIN_GAP`] apart, so a tool rewriting the rules in a loop costs a
//! bounded amount; one that keeps undoing seg's rules is reported.

use super::state::Mode;
use super::{blocking, Segregation};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
/// After the first notification, wait this long for the rest of its burst
/// (one transaction sends one message per object it touches).
pub const SETTLE: Duration = Duration::from_millis(3);
/// Checks are at least this far apart.
pub const MIN_GAP: Duration = Duration::from_millis(20);
/// More repairs than this within [`FIGHT_WINDOW`]: another tool keeps
/// undoing seg's rules — say so (once per window).
const FIGHT_REPAIRS: usize = 5;
const FIGHT_WINDOW: Duration = Duration::from_secs(10);

/// Where ruleset-change notices come from: the kernel's netlink group, or a
/// scripted source in tests.
pub trait ChangeSource: Send {
    /// Waits for the next change; `false` when the source is gone.
    fn changed(&mut self) -> BoxFuture<'_, bool>;
    /// Takes the notices already waiting, without blocking.
    fn drain(&mut self);
}

/// The kernel's nftables change notifications for this network namespace.
pub struct NetlinkChanges {
    socket: netlink_sys::TokioSocket,
    buf: bytes::BytesMut,
}

impl NetlinkChanges {
    /// Subscribes; fails where the kernel has no nftables (then only the
    /// periodic resync repairs).
    pub fn open() -> std::io::Result<NetlinkChanges> {
        use netlink_sys::AsyncSocket;
        let mut socket = netlink_sys::TokioSocket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        socket.socket_mut().bind_auto()?;
        socket.socket_mut().add_membership(NFNLGRP_NFTABLES)?;
        Ok(NetlinkChanges { socket, buf: bytes::BytesMut::with_capacity(64 * 1024) })
    }
}

impl ChangeSource for NetlinkChanges {
    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            use netlink_sys::AsyncSocketExt;
            self.buf.clear();
            match self.socket.recv_from(&mut self.buf).await {
                Ok(_) => true,
                // ENOBUFS: notices were lost while we were busy — which
                // means there were changes: check.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => true,
                Err(e) => {
                    tracing::warn!(
                        "nftables change notifications stopped: {e}; the periodic resync still repairs"
                    );
                    false
                }
            }
        })
    }

    fn drain(&mut self) {
        use netlink_sys::AsyncSocket;
        loop {
            self.buf.clear();
            match self.socket.socket_mut().recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(n) if n > 0 => continue,
                _ => return,
            }
        }
    }
}

impl Segregation {
    /// Repairs seg's rules whenever the kernel's ruleset changes, for the
    /// life of the process (or of `source`).
    pub(super) fn repair_on_changes(
        self: &Arc<Self>,
        mut source: Box<dyn ChangeSource>,
    ) -> tokio::task::JoinHandle<()> {
        let seg = self.clone();
        tokio::spawn(async move {
            let mut repairs: Vec<Instant> = Vec::new();
            let mut warned_at: Option<Instant> = None;
            while source.changed().await {
                tokio::time::sleep(SETTLE).await;
                source.drain();
                let started = Instant::now();
                if seg.repair().await {
                    tracing::info!(took = ?started.elapsed(), "seg's rules were changed by another tool and are repaired");
                    note_fight(&mut repairs, &mut warned_at);
                }
                tokio::time::sleep(MIN_GAP.saturating_sub(started.elapsed())).await;
            }
        })
    }

    /// Reads the kernel and writes back what differs; whether it wrote.
    pub async fn repair(&self) -> bool {
        let mut st = self.state.lock().await;
        if !st.wants_rules_or_managed() {
            return false;
        }
        match blocking(|| st.reconcile(Mode::Repair)) {
            Ok(Some((applied, _))) => applied.changed(),
            Ok(None) => false,
            Err(e) => {
                tracing::error!("repairing seg's rules after a change by another tool failed: {e}");
                false
            }
        }
    }
}

fn note_fight(repairs: &mut Vec<Instant>, warned_at: &mut Option<Instant>) {
    let now = Instant::now();
    repairs.retain(|t| now.duration_since(*t) < FIGHT_WINDOW);
    repairs.push(now);
    let quiet = warned_at.is_none_or(|t| now.duration_since(t) >= FIGHT_WINDOW);
    if repairs.len() > FIGHT_REPAIRS && quiet {
        tracing::warn!(
            repairs = repairs.len(),
            "another tool keeps changing seg's rules (more than {FIGHT_REPAIRS} repairs in {FIGHT_WINDOW:?}): \
             find it (`nft monitor`, or the process list) and stop it"
        );
        *warned_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_fighting_seg_is_reported_once_per_window() {
        let (mut repairs, mut warned) = (Vec::new(), None);
        for _ in 0..FIGHT_REPAIRS {
            note_fight(&mut repairs, &mut warned);
        }
        assert!(warned.is_none(), "a few repairs are normal");
        note_fight(&mut repairs, &mut warned);
        let first = warned.expect("reported");
        note_fight(&mut repairs, &mut warned);
        assert_eq!(warned, Some(first), "not again within the window");
    }
}
