//! The short compose form, as a user runs it: `x-seg.secrets` in the app's
//! own file, `segctl compose` for the override, `segctl policy apply -f`
//! for the grants — and seg's host firewall table removed after the test.

use crate::compose::Project;
use crate::Controller;
use serde_norway::Value;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// seg's nftables table on the host, removed when dropped: `policy apply`
/// makes the controller write it. Create it before the controller, so that
/// it is dropped after the controller stopped (a running controller would
/// repair the table at once).
pub struct SegTable;

impl SegTable {
    /// The table as nft lists it; empty when there is none.
    pub fn listing() -> String {
        let out = Command::new("nft").args(["list", "table", "inet", "seg"]).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for SegTable {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", "seg"]).output();
    }
}

impl Project {
    /// `segctl compose` for the project's file, into `docker-compose.seg.yml`
    /// beside it; returns that path (not yet added as an override).
    pub fn generate_override(&self, ctl: &Controller) -> PathBuf {
        let out = self.dir().join("docker-compose.seg.yml");
        let file = self.file().to_str().expect("utf-8 path");
        ctl.segctl_ok(&["compose", "-f", file, "-o", out.to_str().expect("utf-8 path"), "-p", &self.name]);
        out
    }

    /// The whole short form: `x-seg.project` set to this project's name,
    /// the override generated and added, the declared grants applied.
    pub fn apply_short_form(&mut self, ctl: &Controller) {
        let text = fs::read_to_string(self.file()).expect("read compose file");
        let mut doc: Value = serde_norway::from_str(&text).expect("yaml");
        doc["x-seg"]["project"] = Value::String(self.name.clone());
        self.rewrite(doc);
        let out = self.generate_override(ctl);
        self.add_override(out);
        ctl.segctl_ok(&["policy", "apply", "-f", self.file().to_str().expect("utf-8 path")]);
    }
}
