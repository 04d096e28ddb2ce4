//! `segctl icc`: ICC on docker0 as part of the controller's ruleset (a rule,
//! effective at once, persisted in the state directory), and optionally in
//! daemon.json (`"icc"`, effective at dockerd's next start).

use super::api::{DaemonJsonIcc, IccRequest, IccStatus};
use super::ops::OpError;
use super::state::{Mode, DOCKER0_NETWORK};
use super::{blocking, Segregation};
use crate::daemon_json::{self, Change};
use std::path::{Path, PathBuf};

/// What `path` says about `"icc"`, or why it cannot be read.
pub fn daemon_json_icc(path: &Path) -> DaemonJsonIcc {
    let (icc, error) = match daemon_json::read_icc(path) {
        Ok(icc) => (icc, None),
        Err(e) => (None, Some(e.to_string())),
    };
    DaemonJsonIcc { path: path.display().to_string(), icc, error }
}

impl Segregation {
    /// The controller's setting and rule, Docker's, and what `daemon_json`
    /// (default `/etc/docker/daemon.json`) says for dockerd's next start.
    pub async fn icc_status_with(&self, daemon_json: Option<&str>) -> Result<IccStatus, OpError> {
        let mut status = self.icc_status().await?;
        let path = PathBuf::from(daemon_json.unwrap_or(daemon_json::DEFAULT_PATH));
        status.daemon_json_file = Some(daemon_json_icc(&path));
        Ok(status)
    }

    pub async fn icc_status(&self) -> Result<IccStatus, OpError> {
        let mut st = self.state.lock().await;
        let enabled = st.docker0_icc;
        let live = blocking(|| st.writer.live())?;
        let rule_live = live.chains.contains_key("SEG-ICC-docker0");
        Ok(IccStatus {
            enabled,
            rule_live,
            docker_bridge_icc: st.live.docker_icc(DOCKER0_NETWORK),
            daemon_json: None,
            daemon_json_file: None,
        })
    }

    /// Turns ICC on docker0 on or off. With `persist`, daemon.json is
    /// checked before anything changes (an unreadable file refuses the
    /// whole request) and written last.
    pub async fn set_icc(&self, req: &IccRequest) -> Result<IccStatus, OpError> {
        let path = PathBuf::from(req.daemon_json.as_deref().unwrap_or(daemon_json::DEFAULT_PATH));
        if req.persist {
            daemon_json::read_icc(&path)?;
        }
        let changing = self.changing.lock().await;
        self.install_icc(req.enabled, true).await?;
        drop(changing);
        let mut status = self.icc_status_with(req.daemon_json.as_deref()).await?;
        if req.persist {
            let said = match daemon_json::set_icc(&path, req.enabled)? {
                Change::Unchanged => "already says so",
                Change::Updated { .. } => "updated; dockerd applies it at its next start",
            };
            status.daemon_json = Some(format!("{}: \"icc\": {} ({said})", path.display(), req.enabled));
        }
        Ok(status)
    }

    /// The ICC rule on or off; `persist` false when the setting comes from
    /// the cluster store.
    pub(super) async fn install_icc(&self, enabled: bool, persist: bool) -> Result<(), OpError> {
        let docker = self.require_docker().await?;
        let mut st = self.state.lock().await;
        self.refresh_all(&mut st, &docker).await?;
        let before = st.docker0_icc;
        st.docker0_icc = enabled;
        let outcome = blocking(|| st.reconcile(Mode::Full)).map_err(OpError::from);
        let saved = outcome.and_then(|_| match persist {
            true => blocking(|| self.store.save_icc(enabled)).map_err(OpError::from),
            false => Ok(()),
        });
        if let Err(e) = saved {
            st.docker0_icc = before;
            let _ = blocking(|| st.reconcile(Mode::Full));
            return Err(e);
        }
        Ok(())
    }
}
