//! Putting a compiled ruleset into the kernel, two ways:
//!
//! - [`RuleWriter::full`] reads what is live (`iptables-save`), renders the
//!   difference and runs it: what a resync, a policy change and the start do,
//!   so that anything another tool removed (a flushed `SEG-` chain, the
//!   `DOCKER-USER` jump) is put back.
//! - [`RuleWriter::fast`] renders the difference against the ruleset it applied
//!   last, without reading the kernel: what a container event does. Reading
//!   ~10,000 rules costs ~100 ms; a container's few chains cost ~10 ms to
//!   write. If the kernel disagrees with memory (the transaction fails),
//!   it falls back to the full way at once.

use super::api::RulesReport;
use crate::firewall::{self, Backend, Firewall, FirewallError, Ruleset, Table};
use crate::policy::Family;
use std::time::{Duration, Instant};

/// Writes compiled rulesets into the kernel through a [`Firewall`].
pub struct RuleWriter {
    fw: Box<dyn Firewall + Send>,
    /// What the kernel holds, as far as this process knows; `None`: unknown.
    applied: Option<Ruleset>,
    /// The backend not in use: its seg rules are removed once this one's
    /// are in place (never before: no moment without rules).
    retiring: Option<Box<dyn Firewall + Send>>,
}

/// One update: what was sent and how long the kernel took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub v4: String,
    pub v6: String,
    /// Read the live rules first (full) or trusted memory (fast).
    pub full: bool,
    pub restore_time: Duration,
}

impl Applied {
    pub fn changed(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }

    pub fn report(&self, desired: &Ruleset) -> RulesReport {
        let count = |prefix: &str| {
            [&self.v4, &self.v6].iter().flat_map(|t| t.lines()).filter(|l| l.starts_with(prefix)).count()
        };
        // iptables-restore lines, or nft's (an element is nft's rule).
        let removed = count("-X ");
        RulesReport {
            chains_written: count(":SEG-") - removed + count("add chain "),
            rules_written: count("-A SEG-") + count("add rule ") + count("\t"),
            chains_removed: removed,
            rules_total: desired.rule_count(),
        }
    }
}

impl RuleWriter {
    pub fn new(fw: Box<dyn Firewall + Send>) -> RuleWriter {
        RuleWriter { fw, applied: None, retiring: None }
    }

    /// Removes `other`'s seg rules after the next full update succeeds.
    pub fn retire(&mut self, other: Box<dyn Firewall + Send>) {
        self.retiring = Some(other);
    }

    pub fn backend(&self) -> Backend {
        self.fw.backend()
    }

    fn finish_retiring(&mut self) {
        let Some(mut other) = self.retiring.take() else { return };
        let name = other.backend().name();
        match firewall::remove_all(other.as_mut()) {
            Ok(report) if report.changed() => {
                tracing::info!(backend = name, "removed seg's rules of the other backend")
            }
            Ok(_) => {}
            // Not installed: it holds no rules of seg's.
            Err(FirewallError::Spawn { .. }) => {}
            Err(e) => {
                tracing::warn!(backend = name, error = %e, "cannot remove seg's rules of the other backend; will retry");
                self.retiring = Some(other);
            }
        }
    }

    /// Reads the live rules, then writes what differs from `desired`.
    pub fn full(&mut self, desired: &Ruleset) -> Result<Applied, FirewallError> {
        self.applied = None;
        let started = Instant::now();
        let report = self.fw.sync(desired)?;
        self.applied = Some(desired.clone());
        self.finish_retiring();
        Ok(Applied { v4: report.v4, v6: report.v6, full: true, restore_time: started.elapsed() })
    }

    /// Writes what differs from the last applied ruleset; the full way when
    /// there is none or the kernel refuses the transaction.
    pub fn fast(&mut self, desired: &Ruleset) -> Result<Applied, FirewallError> {
        let Some(last) = self.applied.take() else { return self.full(desired) };
        let started = Instant::now();
        let report = match self.fw.update(&last, desired) {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "the kernel's rules differ from the last applied ones; re-reading them");
                return self.full(desired);
            }
        };
        self.applied = Some(desired.clone());
        Ok(Applied { v4: report.v4, v6: report.v6, full: false, restore_time: started.elapsed() })
    }

    /// The transactions that would bring the live rules to `desired`
    /// (nothing is written).
    pub fn diff(&mut self, desired: &Ruleset) -> Result<(String, String), FirewallError> {
        let report = self.fw.plan(desired)?;
        Ok((report.v4, report.v6))
    }

    /// The live IPv4 table (seg's chains and the hooks).
    pub fn live(&mut self) -> Result<Table, FirewallError> {
        self.fw.current(Family::V4)
    }

    /// Forget what was applied: the next update reads the kernel.
    pub fn forget(&mut self) {
        self.applied = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::naming::TOP;
    use crate::firewall::FakeFirewall;
    use std::sync::{Arc, Mutex};

    /// A fake shared with the test, so it can tamper between updates.
    #[derive(Clone, Default)]
    pub struct Shared(pub Arc<Mutex<FakeFirewall>>);

    impl Firewall for Shared {
        fn current(&mut self, family: Family) -> Result<Table, FirewallError> {
            self.0.lock().unwrap().current(family)
        }
        fn restore(&mut self, family: Family, text: &str) -> Result<(), FirewallError> {
            self.0.lock().unwrap().restore(family, text)
        }
    }

    fn ruleset(chains: &[(&str, &[&str])]) -> Ruleset {
        let mut v4 = Table::default();
        for (name, rules) in chains {
            v4.chains
                .insert(name.to_string(), std::sync::Arc::new(rules.iter().map(|r| r.to_string()).collect()));
        }
        Ruleset { v4, v6: Table::default() }
    }

    #[test]
    fn fast_updates_write_only_the_difference_and_recover_from_tampering() {
        let fake = Shared::default();
        let mut writer = RuleWriter::new(Box::new(fake.clone()));
        let one = ruleset(&[(TOP, &["-j SEG-A"]), ("SEG-A", &["-s 10.0.0.1/32 -j DROP"])]);
        let first = writer.fast(&one).unwrap();
        assert!(first.full && first.v4.contains("-I DOCKER-USER 1 -j SEG-FORWARD"), "{}", first.v4);
        assert!(!writer.fast(&one).unwrap().changed(), "nothing to do: nothing written");
        let two = ruleset(&[(TOP, &["-j SEG-A"]), ("SEG-A", &["-s 10.0.0.2/32 -j DROP"])]);
        let second = writer.fast(&two).unwrap();
        assert!(!second.full);
        assert_eq!(second.v4, "*filter\n:SEG-A - [0:0]\n-A SEG-A -s 10.0.0.2/32 -j DROP\nCOMMIT\n");
        assert_eq!(
            second.report(&two),
            RulesReport { chains_written: 1, rules_written: 1, chains_removed: 0, rules_total: 2 }
        );
        // Someone deletes a chain seg still uses: the fast transaction, which
        // only rewrites the chain pointing at it, is refused, and the full
        // way reads the kernel and puts both back.
        fake.0.lock().unwrap().chains_mut(Family::V4).get_mut(TOP).unwrap().clear();
        fake.0.lock().unwrap().chains_mut(Family::V4).remove("SEG-A");
        let three = ruleset(&[(TOP, &["-j SEG-A", "-j RETURN"]), ("SEG-A", &["-s 10.0.0.2/32 -j DROP"])]);
        let third = writer.fast(&three).unwrap();
        assert!(third.full && third.v4.contains(":SEG-A - [0:0]"), "{}", third.v4);
        assert_eq!(fake.0.lock().unwrap().chains(Family::V4)["SEG-A"], ["-s 10.0.0.2/32 -j DROP"]);
        // A diff reads the kernel and writes nothing.
        fake.0.lock().unwrap().chains_mut(Family::V4).get_mut(TOP).unwrap().clear();
        let before = fake.0.lock().unwrap().restores.len();
        let (v4, v6) = writer.diff(&three).unwrap();
        let want =
            "*filter\n:SEG-FORWARD - [0:0]\n-A SEG-FORWARD -j SEG-A\n-A SEG-FORWARD -j RETURN\nCOMMIT\n";
        assert_eq!((v4.as_str(), v6.as_str()), (want, ""));
        assert_eq!(fake.0.lock().unwrap().restores.len(), before);
    }
}
