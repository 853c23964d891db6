//! `cofre maintenance`: windows for updates (Orbit) — propose, list, show, approve, deny,
//! cancel, and watch a window's steps live.
use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum MaintenanceCmd {
    /// Propose a window for a release (the vendor's operator; the admin on-prem). Who decides
    /// follows the mode: private-saas needs two customer admins (never the proposer, never a
    /// vendor role); saas is scheduled at once, announced to every customer admin at least
    /// `[maintenance] notice_hours` ahead; on-prem asks `[maintenance] approvals` other admins.
    Propose {
        /// A release file (uploaded and verified first) or the id of an uploaded release
        /// (`cofre release list`); verified again either way.
        #[arg(long)]
        release: String,
        /// When the window opens (RFC 3339, e.g. 2026-12-10T02:00:00Z).
        #[arg(long)]
        start: String,
        /// How long it lasts, e.g. 2h, 90m (at most 24h).
        #[arg(long)]
        duration: String,
        #[arg(long)]
        notes: Option<String>,
    },
    /// Every window: state, window, release, approvals, who proposed it.
    List,
    /// One window with every step so far, with times.
    Show { id: String },
    /// Approve a proposed window (customer admins).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a proposed window, saying why: one refusal ends it.
    Deny {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// Cancel a window before it starts.
    Cancel { id: String },
    /// Follow a window live: each step with its time and outcome as it happens (past ones
    /// first), reconnecting when the connection drops, until the window closes. Exit status 0
    /// if it ended done, 1 otherwise.
    Watch { id: String },
}

const CLOSED: [&str; 6] = [
    "done",
    "failed",
    "rolled_back",
    "denied",
    "cancelled",
    "expired",
];

fn print_window(w: &MaintenanceInfo) {
    outln!("maintenance {}: {}", w.id, w.state);
    outln!("  release:   {} (Cofre {})", w.release, w.version);
    outln!("  window:    {} to {}", w.starts_at, w.ends_at);
    outln!("  proposer:  {} at {}", w.proposer, w.created_at);
    let approvals = w
        .decisions
        .iter()
        .filter(|d| d.verdict == "approve")
        .count();
    outln!("  approvals: {approvals} of {}", w.required_approvals);
    for d in &w.decisions {
        outln!(
            "    {} {} at {}: {}",
            d.approver,
            d.verdict,
            d.at,
            d.comment
        );
    }
    if !w.notes.is_empty() {
        outln!("  notes:     {}", w.notes);
    }
    if let Some(by) = &w.closed_by {
        outln!("  closed by: {by}");
    }
    if !w.events.is_empty() {
        outln!("  steps:");
        for e in &w.events {
            print_step(e);
        }
    }
}

fn print_step(e: &MaintenanceEvent) {
    outln!(
        "  {}  #{} {} {}: {}",
        e.at,
        e.seq,
        e.step,
        e.outcome,
        e.detail
    );
}

pub(crate) async fn run(ctx: &Ctx, cmd: MaintenanceCmd) -> Result<ExitCode> {
    let w: MaintenanceInfo = match cmd {
        MaintenanceCmd::Propose {
            release,
            start,
            duration,
            notes,
        } => {
            let path = std::path::Path::new(&release);
            let release = if path.is_file() {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let r: ReleaseInfo = ctx.client.post_octets("/api/v1/releases", bytes).await?;
                eprintln!("release {} verified and kept", r.id);
                r.id
            } else {
                release
            };
            ctx.client
                .post(
                    "/api/v1/maintenance",
                    &ProposeMaintenanceRequest {
                        release,
                        start,
                        duration,
                        notes,
                    },
                )
                .await?
        }
        MaintenanceCmd::List => {
            let ws: Vec<MaintenanceInfo> = ctx.all("/api/v1/maintenance").await?;
            ctx.print_list(&ws, "maintenance windows", |ws| {
                for w in ws {
                    let approvals = w
                        .decisions
                        .iter()
                        .filter(|d| d.verdict == "approve")
                        .count();
                    outln!(
                        "{}\t{}\t{} to {}\tCofre {} ({})\tapprovals {approvals}/{}\tproposed by {}",
                        w.id,
                        w.state,
                        w.starts_at,
                        w.ends_at,
                        w.version,
                        w.release,
                        w.required_approvals,
                        w.proposer
                    );
                }
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        MaintenanceCmd::Show { id } => {
            ctx.client
                .get(&format!("/api/v1/maintenance/{}", path_segment(&id)))
                .await?
        }
        MaintenanceCmd::Approve { id, comment } => {
            ctx.client
                .post(
                    &format!("/api/v1/maintenance/{}/approve", path_segment(&id)),
                    &DecideMaintenanceRequest { comment },
                )
                .await?
        }
        MaintenanceCmd::Deny { id, comment } => {
            ctx.client
                .post(
                    &format!("/api/v1/maintenance/{}/deny", path_segment(&id)),
                    &DecideMaintenanceRequest {
                        comment: Some(comment),
                    },
                )
                .await?
        }
        MaintenanceCmd::Cancel { id } => {
            ctx.client
                .post(
                    &format!("/api/v1/maintenance/{}/cancel", path_segment(&id)),
                    &serde_json::json!({}),
                )
                .await?
        }
        MaintenanceCmd::Watch { id } => return watch(ctx, &id).await,
    };
    ctx.print(&w, print_window)?;
    Ok(ExitCode::SUCCESS)
}

/// How long `watch` keeps trying to reconnect before it gives up (a restart takes seconds).
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

async fn watch(ctx: &Ctx, id: &str) -> Result<ExitCode> {
    let path = format!("/api/v1/maintenance/{}/events", path_segment(id));
    let mut last: Option<i64> = None;
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let resp = match ctx.client.get_event_stream(&path, last).await {
            Ok(r) => r,
            // The API answered: not found, not allowed. Nothing to wait for.
            Err(e @ crate::client::ApiFailure::Api { .. }) => return Err(e.into()),
            Err(e) => {
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(e.into());
                }
                eprintln!("watch: {e}; reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        lost_since = None;
        let mut stream = SseReader::new(resp);
        loop {
            match stream.next().await {
                Ok(Some(data)) => {
                    let e: MaintenanceEvent = serde_json::from_str(&data)?;
                    last = Some(e.seq);
                    ctx.print(&e, print_step)?;
                    if let Some(state) = e.state.as_deref() {
                        if CLOSED.contains(&state) {
                            return Ok(if state == "done" {
                                ExitCode::SUCCESS
                            } else {
                                ExitCode::FAILURE
                            });
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("watch: the stream broke off ({e}); reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The `data` of each event of a `text/event-stream` (comments and keep-alives skipped).
struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: Vec::new(),
            data: Vec::new(),
        }
    }

    async fn next(&mut self) -> Result<Option<String>> {
        loop {
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !self.data.is_empty() {
                        return Ok(Some(std::mem::take(&mut self.data).join("\n")));
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    self.data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
                }
            }
            match self.resp.chunk().await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}
