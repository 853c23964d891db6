//! The recording of one running session, encoded, compressed, sealed and written on a thread of its
//! own, so that this work overlaps the relay's instead of adding to it.
//!
//! The relay hands byte chunks over a bounded queue: when the recorder falls behind, the relay
//! waits (nothing is dropped, memory stays capped). When the recording cannot be written the thread
//! stops, the queue closes, and the next hand-over fails: the session then ends (it never runs
//! unrecorded).

use crate::recording::RecordingWriter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Seal a frame early when this much is buffered (bulk output), so memory stays bounded; the fsync
/// stays on the once-a-second flush.
const FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Chunks (at most one SSH packet each) the relay may be ahead of the recorder.
const QUEUE: usize = 64;

enum Op {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Marker(String),
    Resize(u32, u32),
    Flush(oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
pub struct Recorder {
    ops: mpsc::Sender<Op>,
    /// Output bytes handed over, for the session's end entry.
    output_bytes: Arc<AtomicU64>,
}

pub const FAILED: &str = "recording failed: the recording can no longer be written";

impl Recorder {
    /// Moves `writer` onto its own thread.
    pub fn start(mut writer: RecordingWriter) -> std::io::Result<Recorder> {
        let (ops, mut queue) = mpsc::channel::<Op>(QUEUE);
        std::thread::Builder::new()
            .name("cofre-recorder".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                while let Some(op) = queue.blocking_recv() {
                    let result = match op {
                        Op::Output(data) => {
                            writer.output(&data);
                            seal_if_full(&mut writer)
                        }
                        Op::Input(data) => {
                            writer.input(&data);
                            seal_if_full(&mut writer)
                        }
                        Op::Marker(label) => {
                            writer.marker(&label);
                            Ok(())
                        }
                        Op::Resize(cols, rows) => {
                            writer.resize(cols, rows);
                            Ok(())
                        }
                        Op::Flush(reply) => {
                            let result = writer.flush().map_err(|e| e.to_string());
                            let failed = result.is_err();
                            let _ = reply.send(result);
                            if failed {
                                return;
                            }
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        tracing::error!(error = %e, "recording failed; ending the session");
                        return;
                    }
                }
            })?;
        Ok(Recorder {
            ops,
            output_bytes: Arc::default(),
        })
    }

    async fn send(&self, op: Op) -> Result<(), String> {
        self.ops.send(op).await.map_err(|_| FAILED.to_owned())
    }

    pub async fn output(&self, data: &[u8]) -> Result<(), String> {
        self.output_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.send(Op::Output(data.to_vec())).await
    }

    /// Output bytes handed over so far.
    pub fn output_bytes(&self) -> u64 {
        self.output_bytes.load(Ordering::Relaxed)
    }

    pub async fn input(&self, data: &[u8]) -> Result<(), String> {
        self.send(Op::Input(data.to_vec())).await
    }

    pub async fn marker(&self, label: String) -> Result<(), String> {
        self.send(Op::Marker(label)).await
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), String> {
        self.send(Op::Resize(cols, rows)).await
    }

    /// Waits until everything handed over before is sealed and synced to disk.
    pub async fn flush(&self) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(Op::Flush(reply)).await?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "recording failed; ending the session");
                Err(format!("recording failed: {e}"))
            }
            Err(_) => Err(FAILED.to_owned()),
        }
    }
}

fn seal_if_full(writer: &mut RecordingWriter) -> Result<(), String> {
    if writer.pending() < FRAME_BYTES {
        return Ok(());
    }
    writer.write_frame().map_err(|e| e.to_string())
}
