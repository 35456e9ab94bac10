//! Forgetting what only serves to answer questions later: delivery ids (to
//! spot redeliveries) and images' history events, each after its retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Store;
use crate::clock::Clock;
use crate::domain::PositiveMillis;

/// How often old records are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long the store keeps each kind of record.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub deliveries: Duration,
    pub history: PositiveMillis,
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
        match store
            .prune_history(now.saturating_sub(retention.history.get()))
            .await
        {
            Ok(pruned) => tracing::debug!(pruned, "old history events forgotten"),
            Err(error) => tracing::warn!(%error, "cannot prune history events"),
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
        store
            .enqueue(None, &[target("i1", "old", "1")], clock.now_ms())
            .await
            .expect("enqueue");
        let (stop, stopped) = watch::channel(false);
        let pruner = tokio::spawn(prune_old_records(
            Arc::clone(&store) as Arc<dyn Store>,
            clock,
            Retention {
                deliveries: Duration::from_secs(24 * 3600),
                history: PositiveMillis::new(HOUR_MS).expect("positive"),
            },
            stopped,
        ));

        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
        store
            .enqueue(None, &[target("i1", "new", "1")], clock.now_ms())
            .await
            .expect("enqueue");
        assert_eq!(events(&store, "team-a/old:1").await, 1, "within retention");

        // The prune at 70 min runs with a cutoff of 10 min: the first event
        // (at 0) goes, the one at 50 min stays.
        tokio::time::sleep(Duration::from_secs(21 * 60)).await;
        assert_eq!(events(&store, "team-a/old:1").await, 0, "pruned");
        assert_eq!(events(&store, "team-a/new:1").await, 1, "still young");
        // Pruning forgets history, never the queue.
        assert_eq!(store.stats().await.expect("stats").pending_images, 2);

        tokio::time::sleep(Duration::from_secs(60 * 60)).await;
        assert_eq!(events(&store, "team-a/new:1").await, 0, "pruned in turn");

        stop.send(true).expect("pruner listens");
        pruner.await.expect("pruner stops");
    }
}
