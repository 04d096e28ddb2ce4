//! Changes other nodes made to the cluster store, pushed to this node's
//! own sidecars: the store's etcd watch reports each one
//! ([`SecretStore::changes`]), and it goes through the same
//! [`RotationState::publish`] as a change made here. The pre-rotate hook
//! ran on the node that made the change (it ran before the write); here
//! only the push and what follows it (fetches, acknowledgements, the
//! sidecars' post-rotate actions) happen.

use super::rotation_state::RotationState;
use crate::store::{SecretMeta, SecretStore, StoreChange};
use std::sync::Arc;
use tokio::sync::broadcast::{error::RecvError, Receiver};

/// Starts the relay when the store has other writers.
pub fn spawn(store: Arc<dyn SecretStore>, state: Arc<RotationState>) -> Option<tokio::task::JoinHandle<()>> {
    let changes = store.changes()?;
    let publish = move |before: Option<&SecretMeta>, after: Option<&SecretMeta>| {
        state.publish(before, after);
    };
    let everything = move || store.list().unwrap_or_default();
    Some(tokio::spawn(relay(changes, publish, everything)))
}

/// Publishes each change until the store goes away. A relay that fell
/// behind does not know what it missed, so it tells every stream the
/// current version of everything: a sidecar re-fetches and rewrites a file
/// only if its bytes changed, and one whose secret went meanwhile loses it
/// at its next lease renewal.
async fn relay(
    mut changes: Receiver<StoreChange>,
    publish: impl Fn(Option<&SecretMeta>, Option<&SecretMeta>),
    everything: impl Fn() -> Vec<SecretMeta>,
) {
    loop {
        match changes.recv().await {
            Ok(change) => {
                let (name, version) = match (&change.after, &change.before) {
                    (Some(m), _) | (None, Some(m)) => {
                        (m.name.as_str(), change.after.as_ref().map(|m| m.version))
                    }
                    (None, None) => continue,
                };
                tracing::debug!(
                    secret = name,
                    ?version,
                    "changed on another node; pushing to this node's sidecars"
                );
                publish(change.before.as_ref(), change.after.as_ref());
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "fell behind the cluster store's changes; telling every stream the current versions"
                );
                for meta in everything() {
                    publish(None, Some(&meta));
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::broadcast;

    fn meta(name: &str, version: u64) -> SecretMeta {
        crate::node::fakes::secret_meta(name, version, &[])
    }

    type Seen = Arc<Mutex<Vec<(Option<u64>, Option<u64>)>>>;

    fn recorder(seen: &Seen) -> impl Fn(Option<&SecretMeta>, Option<&SecretMeta>) {
        let seen = seen.clone();
        move |b, a| seen.lock().unwrap().push((b.map(|m| m.version), a.map(|m| m.version)))
    }

    #[tokio::test]
    async fn each_change_is_published_in_order_until_the_store_goes() {
        let (tx, rx) = broadcast::channel(8);
        let seen = Seen::default();
        tx.send(StoreChange { before: None, after: Some(meta("db", 1)) }).unwrap();
        tx.send(StoreChange { before: Some(meta("db", 1)), after: Some(meta("db", 2)) }).unwrap();
        tx.send(StoreChange { before: Some(meta("db", 2)), after: None }).unwrap();
        drop(tx);
        relay(rx, recorder(&seen), Vec::new).await;
        assert_eq!(*seen.lock().unwrap(), vec![(None, Some(1)), (Some(1), Some(2)), (Some(2), None)]);
    }

    #[tokio::test]
    async fn a_relay_that_fell_behind_publishes_every_current_version() {
        let (tx, rx) = broadcast::channel(1);
        let seen = Seen::default();
        for v in 1..=3 {
            tx.send(StoreChange { before: None, after: Some(meta("db", v)) }).unwrap();
        }
        drop(tx);
        relay(rx, recorder(&seen), || vec![meta("db", 3), meta("api", 7)]).await;
        // Lagged first (two lost), then the one change still queued.
        assert_eq!(*seen.lock().unwrap(), vec![(None, Some(3)), (None, Some(7)), (None, Some(3))]);
    }
}
