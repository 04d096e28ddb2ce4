//! The netlink socket the nftables backend sends element batches on
//! ([`super::nft_netlink`] encodes them), in the host's network namespace
//! or in a named one (tests, benchmarks).

use super::nft_model::SetDelta;
use super::nft_netlink::{encode, read_answers, NotEncodable};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the kernel may take to answer a batch: it answers within the
/// `send` in practice; a socket that says nothing must not hang the controller.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The change goes through `nft -f` instead.
    #[error(transparent)]
    NotEncodable(#[from] NotEncodable),
    #[error("netlink socket to nf_tables: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused a message; the whole batch was dropped.
    #[error("the kernel refused the batch ({what}): {cause}")]
    Refused { what: String, cause: io::Error },
}

pub struct NftLink {
    socket: Socket,
    seq: u32,
}

impl std::fmt::Debug for NftLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftLink").field("seq", &self.seq).finish()
    }
}

impl NftLink {
    /// A socket in the namespace at `netns` (`None`: this process's own).
    /// A socket stays in the namespace it was made in, so a short-lived
    /// thread enters the namespace, makes it and hands it back.
    pub fn open(netns: Option<&Path>) -> io::Result<NftLink> {
        let socket = match netns {
            None => new_socket()?,
            Some(path) => {
                let path: PathBuf = path.to_path_buf();
                std::thread::spawn(move || {
                    let ns = File::open(&path)?;
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                    new_socket()
                })
                .join()
                .map_err(|_| io::Error::other("the thread opening the netlink socket panicked"))??
            }
        };
        set_socket_timeout(&socket, Timeout::Recv, Some(ANSWER_WAIT))?;
        // Start from a different number each time: answers to a batch of
        // an earlier socket can never be taken for this one's.
        let seq = std::process::id().wrapping_mul(7919)
            ^ (std::time::UNIX_EPOCH.elapsed().unwrap_or_default().subsec_nanos());
        Ok(NftLink { socket, seq })
    }

    /// Applies `delta` as one batch: all of it, or (error) none of it.
    pub fn commit(&mut self, delta: &[SetDelta<'_>]) -> Result<(), LinkError> {
        let batch = encode(delta, self.seq)?;
        self.seq = self.seq.wrapping_add(batch.acked.len() as u32 + 2);
        // The kernel's change notification names the committing task: the
        // thread's id (`task_pid_nr`); both ids are this process's own.
        super::exec::note_started(rustix::thread::gettid().as_raw_nonzero().get() as u32);
        super::exec::note_started(std::process::id());
        self.socket.send(&batch.bytes, 0)?;
        let mut pending: Vec<u32> = batch.acked.keys().copied().collect();
        let mut errors = Vec::new();
        while !pending.is_empty() {
            let mut buf = Vec::with_capacity(64 * 1024);
            self.socket.recv(&mut buf, 0)?;
            read_answers(&buf, &batch, &mut pending, &mut errors);
        }
        match errors.first() {
            None => Ok(()),
            Some((seq, errno)) => Err(LinkError::Refused {
                what: batch.acked.get(seq).cloned().unwrap_or_else(|| "the batch".to_string()),
                cause: io::Error::from_raw_os_error(*errno),
            }),
        }
    }
}

fn new_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    Ok(socket)
}
