//! One job per item on a few threads, for work that waits on the
//! network or the disk (layers, .debs).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `job` of every item on up to `workers` threads; the results in item
/// order, or the first failure in item order. After a failure no new
/// job starts: the caller fails anyway.
///
/// The threads are joined, not only waited for (`thread::scope` alone
/// returns once the closures end, while the threads may still be
/// leaving), so a namespace clone can follow soon after.
pub(crate) fn try_map<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    job: impl Fn(&I) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    if workers <= 1 || items.len() <= 1 {
        return items.iter().map(job).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<T>>>> =
        Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let result = job(item);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                    }
                })
            })
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    // A job is skipped only after another failed, so skipping the gaps
    // never hides one.
    let mut done = Vec::with_capacity(items.len());
    for result in results.into_iter().flatten() {
        done.push(result?);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order() {
        let items: Vec<u32> = (0..50).collect();
        let doubled = try_map(&items, 4, |n| Ok(n * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_failure_is_returned_and_stops_new_jobs() {
        let items: Vec<u32> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let err = try_map(&items, 3, |&n| {
            started.fetch_add(1, Ordering::Relaxed);
            match n {
                5 => anyhow::bail!("item 5 failed"),
                _ => Ok(n),
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 5 failed");
        assert!(started.load(Ordering::Relaxed) < 1000);
    }
}
