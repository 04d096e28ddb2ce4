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
//! rules — except who committed: our own transactions notify too, and each
//! commit names its process (`NFT_MSG_NEWGEN`); a burst committed only by
//! processes this controller started (`firewall::started_by_us`, the PIDs
//! of its `iptables-restore` and `nft` runs) is taken as its own and not
//! read back, since that costs ~100 ms at 1,000 services. Any other
//! process's change — another tool's `iptables`, `nft`, firewalld — is
//! always checked. A burst is one change
//! ([`SETTLE`]), and checks are at least
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

/// One committed transaction, as `NFT_MSG_NEWGEN` names its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub pid: u32,
    /// `comm`, at most 15 bytes (`iptables-restor`, `nft`, `firewalld`).
    pub process: String,
}

/// Who changed the ruleset in one burst of notifications.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Burst {
    pub commits: Vec<Commit>,
    /// Notices were lost, or a commit named no process: the writer is unknown.
    pub unknown: bool,
}

impl Burst {
    /// Every commit was made by a process `ours` says is one of ours.
    fn only_ours(&self, ours: impl Fn(u32) -> bool) -> bool {
        !self.unknown && !self.commits.is_empty() && self.commits.iter().all(|c| ours(c.pid))
    }
}

/// Where ruleset-change notices come from: the kernel's netlink group, or a
/// scripted source in tests.
pub trait ChangeSource: Send {
    /// Waits for the next notification; `None` when the source is gone.
    fn changed(&mut self) -> BoxFuture<'_, Option<Burst>>;
    /// Adds the notifications already waiting to `burst`, without blocking.
    fn drain(&mut self, burst: &mut Burst);
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
    fn changed(&mut self) -> BoxFuture<'_, Option<Burst>> {
        Box::pin(async move {
            use netlink_sys::AsyncSocketExt;
            self.buf.clear();
            let mut burst = Burst::default();
            match self.socket.recv_from(&mut self.buf).await {
                Ok(_) => read_commits(&self.buf, &mut burst),
                // ENOBUFS: notices were lost while we were busy — which
                // means there were changes, by whom is unknown: check.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => burst.unknown = true,
                Err(e) => {
                    tracing::warn!(
                        "nftables change notifications stopped: {e}; the periodic resync still repairs"
                    );
                    return None;
                }
            }
            Some(burst)
        })
    }

    fn drain(&mut self, burst: &mut Burst) {
        use netlink_sys::AsyncSocket;
        loop {
            self.buf.clear();
            match self.socket.socket_mut().recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(n) if n > 0 => read_commits(&self.buf, burst),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => burst.unknown = true,
                _ => return,
            }
        }
    }
}

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN`: the end of a transaction.
const NEWGEN: u16 = (10 << 8) | 15;
/// `NFTA_GEN_PROC_PID` (big-endian u32) and `NFTA_GEN_PROC_NAME`.
const GEN_PROC_PID: u16 = 2;
const GEN_PROC_NAME: u16 = 3;

/// Notes the committing process of every `NEWGEN` message in one datagram
/// (netlink messages, each a 16-byte header, a 4-byte nfgenmsg, then
/// attributes: length, type, value padded to 4 bytes). Anything malformed
/// makes the writer unknown, which only costs a check.
fn read_commits(datagram: &[u8], burst: &mut Burst) {
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            burst.unknown = true;
            return;
        }
        if kind == NEWGEN {
            match commit(rest.get(20..len).unwrap_or(&[])) {
                Some(c) => burst.commits.push(c),
                None => burst.unknown = true,
            }
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
}

/// The committing process of a `NEWGEN` message's attributes.
fn commit(attrs: &[u8]) -> Option<Commit> {
    let pid = <[u8; 4]>::try_from(attribute(attrs, GEN_PROC_PID)?).ok()?;
    let name = attribute(attrs, GEN_PROC_NAME)?;
    let process = String::from_utf8_lossy(name).trim_end_matches('\0').to_owned();
    Some(Commit { pid: u32::from_be_bytes(pid), process })
}

/// The value of attribute `wanted` in a run of netlink attributes.
fn attribute(mut attrs: &[u8], wanted: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == wanted {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
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
            while let Some(mut burst) = source.changed().await {
                tokio::time::sleep(SETTLE).await;
                source.drain(&mut burst);
                let started = Instant::now();
                if seg.repair(&burst).await {
                    tracing::info!(took = ?started.elapsed(), "seg's rules were changed by another tool and are repaired");
                    note_fight(&mut repairs, &mut warned_at);
                }
                tokio::time::sleep(MIN_GAP.saturating_sub(started.elapsed())).await;
            }
        })
    }

    /// Reads the kernel and writes back what differs; whether it wrote.
    /// A burst committed only by processes this controller ran is its own
    /// write's: nothing to check.
    pub async fn repair(&self, burst: &Burst) -> bool {
        let mut st = self.state.lock().await;
        if !st.wants_rules_or_managed() {
            return false;
        }
        if burst.only_ours(crate::firewall::started_by_us) {
            tracing::debug!(commits = ?burst.commits, "nftables change by our own write: not checked");
            return false;
        }
        tracing::debug!(commits = ?burst.commits, ours = ?burst.commits.iter().map(|c| crate::firewall::started_by_us(c.pid)).collect::<Vec<_>>(), unknown = burst.unknown, "nftables change: checking seg's rules");
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

    /// One netlink message: header, nfgenmsg, then `attrs` as (type, value).
    fn message(kind: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![2u8, 0, 0, 7]; // nfgenmsg: family, version, res_id
        for (t, v) in attrs {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut out = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]); // flags, seq, portid
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn commits_name_their_process_and_only_ours_are_ours() {
        let rule = message((10 << 8) | 6, &[(1, b"filter\0")]);
        let gen = |pid: u32, name: &[u8]| {
            message(NEWGEN, &[(1, &7u32.to_be_bytes()), (2, &pid.to_be_bytes()), (3, name)])
        };
        let ours = |pid: u32| pid == 42;
        let mut burst = Burst::default();
        read_commits(&[rule.clone(), gen(42, b"iptables-restor\0")].concat(), &mut burst);
        assert_eq!(burst.commits, [Commit { pid: 42, process: "iptables-restor".into() }]);
        assert!(burst.only_ours(ours));
        read_commits(&gen(43, b"nft\0"), &mut burst);
        assert!(!burst.only_ours(ours), "another process's nft in the same burst");
        let mut nameless = Burst::default();
        read_commits(&message(NEWGEN, &[(1, &7u32.to_be_bytes())]), &mut nameless);
        assert!(nameless.unknown && !nameless.only_ours(|_| true));
        let mut torn = Burst::default();
        read_commits(&gen(42, b"nft\0")[..20], &mut torn);
        assert!(torn.unknown, "a truncated message: who is unknown");
        assert!(!Burst::default().only_ours(|_| true), "no commit seen: unknown");
    }

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
