//! An order-preserving worker pool: job `i` goes to worker `i % n` and results are taken back in
//! the same round-robin order, so frames are sealed or opened on several cores while the file
//! (and every check that walks it) still sees them in order. No reordering buffer is needed.
//!
//! Memory is bounded: each worker has its own channels of `depth` slots, and [`Ordered::is_full`]
//! tells the caller to take a result before submitting more (at most `n * depth` jobs in flight,
//! which round-robin spreads at most `depth` per worker, so a submit never waits on a result
//! the caller has not taken).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Worker threads for sealing or opening frames: the cores there are, between 2 and 4 (more
/// would only add memory; the hashing and the file I/O stay one thread each).
pub(super) fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .clamp(2, 4)
}

/// Jobs in flight per worker: one being worked on, one waiting, so a worker never idles while
/// the caller is busy with the previous result.
pub(super) const DEPTH: usize = 2;

pub(super) struct Ordered<I, O> {
    inputs: Vec<SyncSender<I>>,
    outputs: Vec<Receiver<O>>,
    threads: Vec<JoinHandle<()>>,
    submitted: usize,
    taken: usize,
    depth: usize,
}

/// A worker thread is gone (it can only stop if its channel closed: the pool is broken).
#[derive(Debug)]
pub(super) struct Stopped;

impl<I: Send + 'static, O: Send + 'static> Ordered<I, O> {
    /// One thread per entry of `workers`; each keeps its own state (a compressor, a key copy).
    pub(super) fn new<W>(name: &str, workers: Vec<W>, depth: usize) -> std::io::Result<Self>
    where
        W: FnMut(I) -> O + Send + 'static,
    {
        let depth = depth.max(1);
        let mut pool = Ordered {
            inputs: Vec::with_capacity(workers.len()),
            outputs: Vec::with_capacity(workers.len()),
            threads: Vec::with_capacity(workers.len()),
            submitted: 0,
            taken: 0,
            depth,
        };
        for (i, mut work) in workers.into_iter().enumerate() {
            let (in_tx, in_rx) = sync_channel::<I>(depth);
            let (out_tx, out_rx) = sync_channel::<O>(depth);
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in in_rx {
                        if out_tx.send(work(job)).is_err() {
                            break;
                        }
                    }
                })?;
            pool.inputs.push(in_tx);
            pool.outputs.push(out_rx);
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.submitted - self.taken
    }

    /// Take a result before the next submit.
    pub(super) fn is_full(&self) -> bool {
        self.in_flight() >= self.inputs.len() * self.depth
    }

    pub(super) fn submit(&mut self, job: I) -> Result<(), Stopped> {
        let n = self.inputs.len();
        let tx = self.inputs.get(self.submitted % n.max(1)).ok_or(Stopped)?;
        tx.send(job).map_err(|_| Stopped)?;
        self.submitted += 1;
        Ok(())
    }

    /// The result of the oldest job in flight; `None` when nothing is in flight.
    pub(super) fn take(&mut self) -> Option<Result<O, Stopped>> {
        if self.in_flight() == 0 {
            return None;
        }
        let n = self.outputs.len();
        let result = match self.outputs.get(self.taken % n.max(1)) {
            Some(rx) => rx.recv().map_err(|_| Stopped),
            None => Err(Stopped),
        };
        self.taken += 1;
        Some(result)
    }
}

impl<I, O> Drop for Ordered<I, O> {
    fn drop(&mut self) {
        // Closing both ends first: a worker blocked on a full output channel must not keep the
        // join below waiting.
        self.inputs.clear();
        self.outputs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_submission_order_with_bounded_flight() {
        let workers: Vec<_> = (0..3u64)
            .map(|w| {
                move |x: u64| {
                    // Uneven work, so that a pool that returned results as they finish would
                    // reorder them.
                    std::thread::sleep(std::time::Duration::from_micros((x * 7 + w) % 5 * 100));
                    x * 2
                }
            })
            .collect();
        let mut pool = Ordered::new("test", workers, 2).unwrap();
        let mut got = Vec::new();
        for x in 0..100u64 {
            if pool.is_full() {
                got.push(pool.take().unwrap().unwrap());
            }
            assert!(pool.in_flight() < 6);
            pool.submit(x).unwrap();
        }
        while let Some(r) = pool.take() {
            got.push(r.unwrap());
        }
        assert_eq!(got, (0..100u64).map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn dropping_a_pool_with_jobs_in_flight_does_not_hang() {
        let workers: Vec<_> = (0..2).map(|_| |x: u32| x).collect();
        let mut pool = Ordered::new("test", workers, 1).unwrap();
        pool.submit(1).unwrap();
        pool.submit(2).unwrap();
        drop(pool);
    }
}
