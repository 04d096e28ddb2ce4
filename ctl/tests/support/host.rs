//! Guards for tests that change the host's firewall (DOCKER-USER, docker0).

use segctl::firewall::{apply, IptablesFirewall, Ruleset};
use std::fs::File;

/// Serializes every test that changes the host's firewall, across test
/// binaries (they all take the same lock file).
pub struct HostLock(File);

impl HostLock {
    pub fn take() -> HostLock {
        assert!(rustix::process::geteuid().is_root(), "these tests need root (iptables, namespaces, Docker)");
        let file = File::create("/run/seg-host-firewall.lock").expect("create /run/seg-host-firewall.lock");
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("lock the host firewall");
        HostLock(file)
    }
}

/// Removes every seg chain and the DOCKER-USER jump from the host when
/// dropped (after the controller that put them there has stopped), and
/// the nftables backend's `inet seg` table.
pub struct FirewallReset;

impl Drop for FirewallReset {
    fn drop(&mut self) {
        if let Err(e) = apply(&mut IptablesFirewall::new(), &Ruleset::default()) {
            eprintln!("could not remove seg's chains from the host: {e}");
        }
        let listed = std::process::Command::new("nft").args(["list", "table", "inet", "seg"]).output();
        if listed.is_ok_and(|o| o.status.success()) {
            let gone = std::process::Command::new("nft").args(["delete", "table", "inet", "seg"]).status();
            if !gone.is_ok_and(|s| s.success()) {
                eprintln!("could not remove seg's nftables table from the host");
            }
        }
    }
}
