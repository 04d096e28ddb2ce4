//! The grants of a policy's `x-seg.secrets`, kept with the network policy:
//! `policy apply` grants what is declared and revokes what the policy made
//! earlier and no longer declares, `policy diff` shows both, `policy rm`
//! revokes what the policy made. The plan is `policy::grants::plan` (pure);
//! here it is checked against the store, carried out, and undone when a
//! later step fails, so a refused request leaves grants and rules as they
//! were. Each change goes through the secret's lock and is pushed to the
//! watch streams like `segctl secret grant|revoke` (a revoked sidecar wipes
//! its file).

use super::rotation_state::RotationState;
use crate::policy::grants::{self, GrantPlan};
use crate::policy::{self, Policy};
use crate::segregation::store::name_of;
use crate::segregation::{OpError, Segregation};
use crate::store::{SecretMeta, SecretStore};
use seg_common::api::policy::{
    ApplyResult, DeclaredGrant, DiffResult, GrantChanges, PolicySource, RemoveResult,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One declaration change at a time: a plan is made from the owned list and
/// the store as they are, and carried out before the next one is planned.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the policy routes need of the secrets side.
#[derive(Clone, Copy)]
pub struct Grants<'a> {
    pub store: &'a Arc<dyn SecretStore>,
    pub rotation_state: &'a Arc<RotationState>,
}

fn changes(plan: &GrantPlan) -> GrantChanges {
    GrantChanges { granted: plan.grant.clone(), revoked: plan.revoke.clone() }
}

impl Grants<'_> {
    pub async fn apply(self, seg: &Segregation, source: PolicySource) -> Result<ApplyResult, OpError> {
        let _one = SERIAL.lock().await;
        let parsed = policy::parse_source(&source.text, &source.file, source.dir_project.as_deref())?;
        let owned = seg.owned_grants(&name_of(&parsed)).await.unwrap_or_default();
        let plan = self.plan(&source.file, &parsed, &owned)?;
        self.execute(&plan).await?;
        match seg.apply(source, plan.owned.clone()).await {
            Ok(mut done) => {
                done.grants = changes(&plan);
                done.changed |= !done.grants.is_empty();
                Ok(done)
            }
            Err(e) => {
                self.undo(&plan.grant, &plan.revoke).await;
                Err(e)
            }
        }
    }

    pub async fn diff(self, seg: &Segregation, source: PolicySource) -> Result<DiffResult, OpError> {
        let _one = SERIAL.lock().await;
        let parsed = policy::parse_source(&source.text, &source.file, source.dir_project.as_deref())?;
        let owned = seg.owned_grants(&name_of(&parsed)).await.unwrap_or_default();
        let plan = self.plan(&source.file, &parsed, &owned)?;
        let mut diff = seg.diff(source).await?;
        diff.grants = changes(&plan);
        Ok(diff)
    }

    pub async fn remove(self, seg: &Segregation, name: &str) -> Result<RemoveResult, OpError> {
        let _one = SERIAL.lock().await;
        let owned = seg.owned_grants(name).await.ok_or_else(|| OpError::NotFound(name.into()))?;
        let owned: BTreeSet<DeclaredGrant> = owned.into_iter().collect();
        let metas = self.store.list().map_err(|e| OpError::SecretStore(Box::new(e)))?;
        let plan = grants::plan(&BTreeSet::new(), &owned, &live(metas, &owned));
        self.execute(&plan).await?;
        match seg.remove(name).await {
            Ok(mut done) => {
                done.grants = changes(&plan);
                Ok(done)
            }
            Err(e) => {
                self.undo(&plan.grant, &plan.revoke).await;
                Err(e)
            }
        }
    }

    /// The plan for `parsed`; refused if it declares a secret the store lacks.
    fn plan(&self, file: &str, parsed: &Policy, owned: &[DeclaredGrant]) -> Result<GrantPlan, OpError> {
        let declared = grants::declared(parsed);
        let metas = self.store.list().map_err(|e| OpError::SecretStore(Box::new(e)))?;
        let known: BTreeSet<&str> = metas.iter().map(|m| m.name.as_str()).collect();
        let mut missing: Vec<String> =
            declared.iter().map(|g| g.secret.to_string()).filter(|s| !known.contains(s.as_str())).collect();
        missing.dedup();
        if !missing.is_empty() {
            return Err(OpError::UnknownSecrets { file: file.to_string(), names: missing });
        }
        let owned: BTreeSet<DeclaredGrant> = owned.iter().cloned().collect();
        let live = live(metas, &declared.union(&owned).cloned().collect());
        Ok(grants::plan(&declared, &owned, &live))
    }

    /// Grants, then revokes; on a failure undoes what was done and says why.
    async fn execute(&self, plan: &GrantPlan) -> Result<(), OpError> {
        let mut done = (Vec::new(), Vec::new());
        let steps = plan.grant.iter().map(|g| (g, true)).chain(plan.revoke.iter().map(|g| (g, false)));
        for (g, grant) in steps {
            if let Err(cause) = self.change(g, grant).await {
                self.undo(&done.0, &done.1).await;
                let action = if grant { "grant" } else { "revoke" };
                return Err(OpError::Grant { action, grant: g.to_string(), cause: Box::new(cause) });
            }
            if grant { &mut done.0 } else { &mut done.1 }.push(g.clone());
        }
        Ok(())
    }

    /// Takes back `granted` and puts back `revoked` (best effort: logged).
    async fn undo(&self, granted: &[DeclaredGrant], revoked: &[DeclaredGrant]) {
        let steps = granted.iter().map(|g| (g, false)).chain(revoked.iter().map(|g| (g, true)));
        for (g, grant) in steps {
            if let Err(e) = self.change(g, grant).await {
                tracing::error!("undoing a declared grant change: cannot restore {g}: {e}");
            }
        }
    }

    /// One grant or revoke under the secret's lock, pushed to the watch streams.
    async fn change(&self, g: &DeclaredGrant, grant: bool) -> Result<bool, crate::store::StoreError> {
        let _guard = self.rotation_state.lock_secret(&g.secret).await;
        let (store, g2) = (self.store.clone(), g.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let before = store.meta(&g2.secret).ok();
            let changed =
                if grant { store.grant(&g2.secret, &g2.to) } else { store.revoke(&g2.secret, &g2.to) };
            (before, changed, store.meta(&g2.secret).ok())
        })
        .await;
        let (before, changed, after) = joined.map_err(|e| crate::store::StoreError::Io {
            action: "run the store call for",
            path: g.secret.to_string().into(),
            cause: std::io::Error::other(e.to_string()),
        })?;
        let changed = changed?;
        if changed {
            self.rotation_state.publish(before.as_ref(), after.as_ref());
        }
        Ok(changed)
    }
}

/// The store's grants of the secrets `of` names.
fn live(metas: Vec<SecretMeta>, of: &BTreeSet<DeclaredGrant>) -> BTreeSet<DeclaredGrant> {
    let names: BTreeSet<_> = of.iter().map(|g| &g.secret).collect();
    metas
        .into_iter()
        .filter(|m| names.contains(&m.name))
        .flat_map(|m| {
            let secret = m.name;
            m.grants.into_iter().map(move |to| DeclaredGrant { secret: secret.clone(), to })
        })
        .collect()
}
