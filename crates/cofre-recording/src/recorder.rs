//! The recording of one running session, off the relay's path.
//!
//! The relay hands each chunk over as it is (a [`Bytes`] clone, no copy) on a bounded queue. A
//! small task per session (not a thread) appends the chunks to the open frame; compressing,
//! sealing, writing and syncing a full frame run on a [`Pool`] of threads shared by every session
//! and sized to the machine, while the task goes on filling the next frame. Only when the recorder
//! is a whole frame and a full queue behind does the relay wait (back-pressure: nothing is
//! dropped, memory stays capped). When the recording cannot be written the task stops, the queue
//! closes, and the next hand-over fails: the session then ends (it never runs unrecorded).

use crate::event::Kind;
use crate::writer::{Frame, Sink, Summary, Writer};
use crate::RecordingError;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// Seal a frame when this much is buffered (bulk output); the fsync stays on the flushes.
const FRAME_BYTES: usize = 1024 * 1024;
/// Chunks (at most one SSH packet each) the relay may be ahead of the recorder.
const QUEUE: usize = 64;
/// A frame buffer an idle session keeps after its flush; more is given back.
const IDLE_BUFFER: usize = 64 * 1024;

pub const FAILED: &str = "recording failed: the recording can no longer be written";

type Job = Box<dyn FnOnce() + Send>;

/// Threads that seal frames for every session of the process.
pub struct Pool {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    /// Jobs handed to the threads so far.
    handed: AtomicU64,
}

impl Pool {
    /// The process's pool: one thread per core.
    pub fn shared() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, usize::from);
            Pool::new(threads)
        })
    }

    /// A pool of `threads`. Should no thread start, every job fails (recordings cannot be
    /// written, so sessions do not open): fail closed, never unrecorded.
    pub fn new(threads: usize) -> Pool {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cofre-recorder-{n}"))
                .spawn(move || loop {
                    let job = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    let Ok(job) = job else { return };
                    // A job that panics fails its session's recording, not the pool.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a recording thread");
            }
        }
        Pool {
            jobs: Mutex::new(jobs),
            handed: AtomicU64::new(0),
        }
    }

    /// Jobs handed to the threads so far (an idle session should add none).
    pub fn jobs_handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    /// Runs `f` on the pool; the receiver reports an error when it could not run to the end.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.handed.fetch_add(1, Ordering::Relaxed);
        // A send that fails drops the job and with it `tx`: the receiver then reports it.
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job);
        rx
    }
}

enum Op {
    Data(Kind, Bytes),
    Resize(u32, u32),
    Flush(oneshot::Sender<Result<(), String>>),
    End(String, oneshot::Sender<Result<Summary, String>>),
}

/// A handle on a session's recording; clones share it.
#[derive(Clone)]
pub struct Recorder {
    ops: mpsc::Sender<Op>,
    /// Output bytes handed over, for the session's end entry.
    output_bytes: Arc<AtomicU64>,
    /// Something was handed over since the last flush began (see [`Recorder::handed_over`]).
    unflushed: Arc<Unflushed>,
}

#[derive(Default)]
struct Unflushed {
    set: AtomicBool,
    wake: tokio::sync::Notify,
}

/// How long after something is handed over a front end flushes the recording: at most this
/// much is lost on a crash.
pub const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// When a front end (the gateway's channel, the web terminal) flushes its recording:
/// [`FLUSH_AFTER`] after the first hand-over since the last flush, and never for a session that
/// says nothing, so an idle session costs no timer, no task wake-up and no pool job (ten
/// thousand idle sessions, not ten thousand wake-ups a second).
#[derive(Debug, Default)]
pub struct FlushSchedule {
    at: Option<tokio::time::Instant>,
}

impl FlushSchedule {
    /// Resolves when it is time to call `rec.flush()`. Cancel-safe, for a `select!` loop: the
    /// deadline, once set, is kept across rounds.
    pub async fn due(&mut self, rec: &Recorder) {
        let at = match self.at {
            Some(at) => at,
            None => {
                rec.handed_over().await;
                *self.at.insert(tokio::time::Instant::now() + FLUSH_AFTER)
            }
        };
        tokio::time::sleep_until(at).await;
        self.at = None;
    }
}

impl Recorder {
    /// Moves `writer` onto a task of the current runtime, sealing on the shared pool.
    pub fn start(writer: Writer) -> Recorder {
        Recorder::start_on(writer, Pool::shared())
    }

    pub fn start_on(writer: Writer, pool: &'static Pool) -> Recorder {
        let (ops, queue) = mpsc::channel::<Op>(QUEUE);
        let task = Task {
            frame: writer.frame,
            sink: Some(writer.sink),
            sealing: None,
            spare: None,
            pool,
        };
        tokio::spawn(task.run(queue));
        Recorder {
            ops,
            output_bytes: Arc::default(),
            unflushed: Arc::default(),
        }
    }

    async fn send(&self, op: Op) -> Result<(), String> {
        let event = matches!(op, Op::Data(..) | Op::Resize(..));
        self.ops.send(op).await.map_err(|_| FAILED.to_owned())?;
        // A load first: a busy session then pays no atomic write per chunk.
        if event
            && !self.unflushed.set.load(Ordering::Acquire)
            && !self.unflushed.set.swap(true, Ordering::AcqRel)
        {
            self.unflushed.wake.notify_one();
        }
        Ok(())
    }

    /// Returns once something has been handed over since the last flush began (what
    /// [`FlushSchedule`] waits for). Cancel-safe.
    pub async fn handed_over(&self) {
        while !self.unflushed.set.load(Ordering::Acquire) {
            self.unflushed.wake.notified().await;
        }
    }

    pub async fn output(&self, data: Bytes) -> Result<(), String> {
        let len = data.len() as u64;
        self.send(Op::Data(Kind::Output, data)).await?;
        self.output_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Output bytes handed over so far.
    pub fn output_bytes(&self) -> u64 {
        self.output_bytes.load(Ordering::Relaxed)
    }

    pub async fn input(&self, data: Bytes) -> Result<(), String> {
        self.send(Op::Data(Kind::Input, data)).await
    }

    /// The command of an exec request, exactly.
    pub async fn exec(&self, command: Bytes) -> Result<(), String> {
        self.send(Op::Data(Kind::Exec, command)).await
    }

    /// A file operation, described.
    pub async fn sftp(&self, what: String) -> Result<(), String> {
        self.send(Op::Data(Kind::Sftp, Bytes::from(what))).await
    }

    /// A labelled event: an exit status, a refusal.
    pub async fn marker(&self, label: String) -> Result<(), String> {
        self.send(Op::Data(Kind::Marker, Bytes::from(label))).await
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), String> {
        self.send(Op::Resize(cols, rows)).await
    }

    /// Waits until everything handed over before is sealed and synced to disk.
    pub async fn flush(&self) -> Result<(), String> {
        // Cleared before the flush is queued: whatever is handed over after this is either in
        // this flush or sets it again for the next.
        self.unflushed.set.store(false, Ordering::Release);
        let (reply, done) = oneshot::channel();
        self.send(Op::Flush(reply)).await?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("recording failed: {e}")),
            Err(_) => Err(FAILED.to_owned()),
        }
    }

    /// Writes the end event, seals and syncs everything: the recording is complete, and this is
    /// what the `session.end` entry says of it. Nothing can be recorded after it.
    pub async fn end(&self, reason: &str) -> Result<Summary, String> {
        let (reply, done) = oneshot::channel();
        self.send(Op::End(reason.to_owned(), reply)).await?;
        match done.await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(e)) => Err(format!("recording failed: {e}")),
            Err(_) => Err(FAILED.to_owned()),
        }
    }
}

type Sealed = (Sink, Result<Vec<u8>, RecordingError>);

struct Task {
    frame: Frame,
    /// None while a frame is being sealed on the pool.
    sink: Option<Sink>,
    sealing: Option<oneshot::Receiver<Sealed>>,
    /// The last sealed frame's buffer, to fill again.
    spare: Option<Vec<u8>>,
    pool: &'static Pool,
}

impl Task {
    async fn run(mut self, mut queue: mpsc::Receiver<Op>) {
        while let Some(op) = queue.recv().await {
            let result = match op {
                Op::Data(kind, data) => {
                    self.frame.push(kind, &data);
                    drop(data);
                    self.seal_if_full().await
                }
                Op::Resize(cols, rows) => {
                    self.frame.resize(cols, rows);
                    Ok(())
                }
                Op::Flush(reply) if self.is_flushed() => {
                    // A flush asked with nothing new (or a second one in a row) has nothing to
                    // seal or sync: it must not cost the pool a job.
                    let _ = reply.send(Ok(()));
                    Ok(())
                }
                Op::Flush(reply) => {
                    let result = self.seal(true).await;
                    self.give_back_memory();
                    let failed = result.is_err();
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                    if failed {
                        return;
                    }
                    Ok(())
                }
                Op::End(reason, reply) => {
                    self.frame.push(Kind::End, reason.as_bytes());
                    let result = self.seal(true).await;
                    let summary = result.and_then(|()| {
                        self.sink
                            .as_ref()
                            .map(Sink::summary)
                            .ok_or(RecordingError::Failed)
                    });
                    let _ = reply.send(summary.map_err(|e| e.to_string()));
                    return;
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "recording failed; ending the session");
                return;
            }
        }
        // Every handle is gone without an end (a front end that stopped): keep what was handed
        // over.
        if let Err(e) = self.seal(true).await {
            tracing::error!(error = %e, "cannot write the last frame of a recording");
        }
    }

    /// Nothing buffered, nothing on the pool, everything written synced.
    fn is_flushed(&self) -> bool {
        self.frame.is_empty()
            && self.sealing.is_none()
            && self.sink.as_ref().is_some_and(Sink::is_synced)
    }

    async fn seal_if_full(&mut self) -> Result<(), RecordingError> {
        if self.frame.len() < FRAME_BYTES {
            return Ok(());
        }
        // Sealing goes on while the next frame fills; only a second full frame waits for it.
        self.settle().await?;
        self.start_sealing(false)
    }

    /// Waits for the frame on the pool, if any.
    async fn settle(&mut self) -> Result<(), RecordingError> {
        let Some(sealing) = self.sealing.take() else {
            return Ok(());
        };
        let (sink, result) = sealing.await.map_err(|_| RecordingError::Failed)?;
        self.sink = Some(sink);
        self.spare = Some(result?);
        Ok(())
    }

    fn start_sealing(&mut self, sync: bool) -> Result<(), RecordingError> {
        let mut sink = self.sink.take().ok_or(RecordingError::Failed)?;
        let plain = self.frame.take(self.spare.take());
        self.sealing = Some(self.pool.run(move || {
            let result = sink.seal(plain).and_then(|buf| {
                if sync {
                    sink.sync().map(|()| buf)
                } else {
                    Ok(buf)
                }
            });
            (sink, result)
        }));
        Ok(())
    }

    /// Seals what is buffered, after the frame already on the pool, and waits for both.
    async fn seal(&mut self, sync: bool) -> Result<(), RecordingError> {
        self.settle().await?;
        self.start_sealing(sync)?;
        self.settle().await
    }

    fn give_back_memory(&mut self) {
        if self
            .spare
            .as_ref()
            .is_some_and(|b| b.capacity() > IDLE_BUFFER)
        {
            self.spare = None;
        }
        self.frame.shrink(IDLE_BUFFER);
    }
}
