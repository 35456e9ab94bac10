//! Forgetting what only serves to answer questions later: delivery ids (to
//! spot redeliveries) and images' history, each after its retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Store;
use super::history::PRUNE_BATCH;
use crate::clock::Clock;
use crate::domain::PositiveMillis;

/// How often old records are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Bounded passes per prune: a backlog (history turned on after a long
/// retention change) is worked off over several prunes, not in one burst.
const MAX_HISTORY_PASSES: usize = 20;

/// How long the store keeps each kind of record.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub deliveries: Duration,
    /// `None`: history is not recorded, so nothing to prune.
    pub history: Option<PositiveMillis>,
}

/// Prunes every [`PRUNE_EVERY`] until `stop` changes. A failed prune is
/// logged and tried again next time: nothing depends on it promptly.
pub async fn prune_old_records(
    store: Arc<dyn Store>,
    clock: Clock,
    retention: Retention,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => return,
        }
        let now = clock.now_ms();
        let cutoff = now - retention.deliveries.as_millis() as i64;
        match store.prune_deliveries(cutoff).await {
            Ok(pruned) => tracing::debug!(pruned, "old delivery ids forgotten"),
            Err(error) => tracing::warn!(%error, "cannot prune delivery ids"),
        }
        if let Some(history) = retention.history {
            prune_history(store.as_ref(), now.saturating_sub(history.get())).await;
        }
    }
}

async fn prune_history(store: &dyn Store, cutoff: i64) {
    for _ in 0..MAX_HISTORY_PASSES {
        match store.prune_history(cutoff).await {
            Ok(pruned) => {
                tracing::debug!(pruned, "old history forgotten");
                // Fewer than a full pass of each kind: nothing older is left.
                if pruned < PRUNE_BATCH.unsigned_abs() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot prune history");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::target;
    use crate::store::history::HISTORY_LIMIT;
    use crate::store::{HistorySubject, MemoryStore};

    const HOUR_MS: u64 = 3_600_000;

    async fn events(store: &MemoryStore, image: &str) -> usize {
        let subject: HistorySubject = image.parse().expect("subject");
        store
            .history(&subject, HISTORY_LIMIT)
            .await
            .expect("history")
            .len()
    }

    #[tokio::test(start_paused = true)]
    async fn history_is_forgotten_after_its_retention() {
        let store = Arc::new(MemoryStore::new());
        let clock = Clock::starting_at(1_800_000_000_000);
        let (image, again) = (target("i1", "old", "1"), target("i1", "new", "1"));
        store
            .enqueue(None, std::slice::from_ref(&image), clock.now_ms())
            .await
            .expect("enqueue");
        let (stop, stopped) = watch::channel(false);
        let pruner = tokio::spawn(prune_old_records(
            Arc::clone(&store) as Arc<dyn Store>,
            clock,
            Retention {
                deliveries: Duration::from_secs(24 * 3600),
                history: PositiveMillis::new(HOUR_MS),
            },
            stopped,
        ));

        // Pushed again while pending: a duplicate row, written at 0 min.
        store
            .enqueue(None, std::slice::from_ref(&image), clock.now_ms())
            .await
            .expect("enqueue");
        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
        store
            .enqueue(None, std::slice::from_ref(&again), clock.now_ms())
            .await
            .expect("enqueue");
        store
            .enqueue(None, std::slice::from_ref(&again), clock.now_ms())
            .await
            .expect("enqueue");
        assert_eq!(events(&store, "team-a/old:1").await, 2, "within retention");

        // The prune at 70 min runs with a cutoff of 10 min: the duplicate
        // row written at 0 goes, the one at 50 min stays; the pending rows
        // (the queue, not history) stay.
        tokio::time::sleep(Duration::from_secs(21 * 60)).await;
        assert_eq!(events(&store, "team-a/old:1").await, 1, "pruned");
        assert_eq!(events(&store, "team-a/new:1").await, 2, "still young");
        assert_eq!(store.stats().await.expect("stats").pending_images, 2);

        tokio::time::sleep(Duration::from_secs(60 * 60)).await;
        assert_eq!(events(&store, "team-a/new:1").await, 1, "pruned in turn");

        stop.send(true).expect("pruner listens");
        pruner.await.expect("pruner stops");
    }
}
