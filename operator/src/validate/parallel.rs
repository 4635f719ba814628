//! Work shared by threads in small batches taken in turn, results in input order.
//!
//! Each thread takes the next batch when it is done with its last, so a thread slowed down (by a costlier
//! share of the inputs, or by other work on its core) takes fewer batches instead of holding up the rest.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` of every item, in item order, on up to `threads` threads (this one among them), `batch` items at a time.
///
/// A batch whose thread panicked is done again on this thread, so a panic surfaces here and no result is lost.
pub(crate) fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    batch: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let batch = batch.max(1);
    let batches = items.len().div_ceil(batch);
    let threads = threads.min(batches);
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done: Vec<(usize, Vec<R>)> = Vec::new();
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            let Some(part) = items.chunks(batch).nth(b) else { break };
            done.push((b, part.iter().map(&f).collect()));
        }
        done
    };
    let mut by_batch: Vec<Option<Vec<R>>> = std::iter::repeat_with(|| None).take(batches).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut place = |done: Vec<(usize, Vec<R>)>| {
            for (b, results) in done {
                if let Some(slot) = by_batch.get_mut(b) {
                    *slot = Some(results);
                }
            }
        };
        place(work());
        for h in handles {
            if let Ok(done) = h.join() {
                place(done);
            }
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for (b, results) in by_batch.into_iter().enumerate() {
        match results {
            Some(mut r) => out.append(&mut r),
            None => out.extend(items.chunks(batch).nth(b).into_iter().flatten().map(&f)),
        }
    }
    out
}

/// Drops `items` on up to `threads` threads (this one among them), a share each.
pub(crate) fn drop_in_parts<T: Send>(mut items: Vec<T>, threads: usize) {
    if threads <= 1 || items.len() < 2 {
        return;
    }
    let share = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    while items.len() > share {
        parts.push(items.split_off(items.len() - share));
    }
    std::thread::scope(|s| {
        for part in parts {
            s.spawn(move || drop(part));
        }
        drop(items);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_item_order_whatever_the_threads_and_batches() {
        let items: Vec<u32> = (0..1000).collect();
        let want: Vec<u64> = items.iter().map(|i| u64::from(*i) * 3).collect();
        for (threads, batch) in [(1, 1), (2, 1), (2, 7), (3, 64), (8, 1000), (4, 5000)] {
            assert_eq!(
                map_ordered(&items, threads, batch, |i| u64::from(*i) * 3),
                want,
                "{threads} threads, batches of {batch}"
            );
        }
        assert_eq!(map_ordered(&[] as &[u32], 4, 8, |i| *i), Vec::<u32>::new());
    }
}
