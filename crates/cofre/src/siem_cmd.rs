//! `cofre siem ...`: where the audit trail is forwarded (syslog RFC 5424 or CEF over TCP, TLS or
//! UDP), and how far each destination has got.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::{Context, Result};
use clap::Subcommand;
use cofre_proto::*;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum SiemCmd {
    /// Add a destination; it receives every audit entry, from the first, in order. Examples:
    ///   cofre siem add corp --syslog tls://siem.corp:6514 --format rfc5424 --ca-cert corp-ca.pem
    ///   cofre siem add lab --syslog udp://10.0.0.9:514 --format cef
    /// tcp:// and tls:// frame messages by octet counting (RFC 6587, RFC 5425) and resend a batch
    /// until the receiver has read it (at least once); udp:// (RFC 5426) cannot know that a
    /// datagram arrived. Every message carries the entry's sequence number and hash.
    #[command(verbatim_doc_comment)]
    Add {
        /// A lowercase name, e.g. corp.
        name: String,
        /// tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT.
        #[arg(long, value_name = "URL")]
        syslog: String,
        /// rfc5424 (the entry in structured data and as JSON) or cef.
        #[arg(long, default_value = "rfc5424")]
        format: String,
        /// The CA certificate (PEM) that signed a tls:// receiver's certificate (default: the
        /// web's root CAs).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Every destination.
    List,
    /// Stop forwarding to a destination.
    Remove { name: String },
    /// Per destination: the last audit sequence delivered, how far behind the newest it is, and
    /// the last error.
    Status,
}

pub(crate) async fn run(ctx: &Ctx, cmd: SiemCmd) -> Result<ExitCode> {
    match cmd {
        SiemCmd::Add {
            name,
            syslog,
            format,
            ca_cert,
        } => {
            let ca_cert = match ca_cert {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("--ca-cert {}", path.display()))?,
                ),
                None => None,
            };
            let d: SiemInfo = ctx
                .client
                .post(
                    "/api/v1/siem",
                    &NewSiemRequest {
                        name,
                        syslog,
                        format,
                        ca_cert,
                    },
                )
                .await?;
            ctx.print(&d, |d| {
                outln!(
                    "SIEM destination {} added: {} ({}); forwarding the audit trail from its first entry",
                    d.name,
                    d.syslog,
                    d.format
                )
            })?;
        }
        SiemCmd::List => {
            let list: Vec<SiemInfo> = ctx.client.get("/api/v1/siem").await?;
            ctx.print_list(&list, "SIEM destinations", |l| {
                for d in l {
                    outln!(
                        "{}  {}  {}{}  added {} by {}",
                        d.name,
                        d.syslog,
                        d.format,
                        if d.ca_cert { "  (own CA)" } else { "" },
                        d.created_at,
                        d.created_by
                    );
                }
            })?;
        }
        SiemCmd::Remove { name } => {
            let r: OkResponse = ctx
                .client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/siem/{}", path_segment(&name)),
                    None::<&()>,
                )
                .await?;
            ctx.print(&r, |_| outln!("removed SIEM destination {name}"))?;
        }
        SiemCmd::Status => {
            let s: SiemStatus = ctx.client.get("/api/v1/siem/status").await?;
            ctx.print(&s, |s| {
                outln!("audit head: {}", s.audit_head_seq);
                if s.destinations.is_empty() {
                    outln!("no SIEM destinations");
                }
                for d in &s.destinations {
                    outln!(
                        "{}  {}  {}  delivered up to {}  lag {}",
                        d.name,
                        d.syslog,
                        d.format,
                        d.last_delivered_seq,
                        d.lag
                    );
                    if let Some(at) = &d.last_ok_at {
                        outln!("  last delivery: {at}");
                    }
                    if let Some(since) = &d.failing_since {
                        outln!("  FAILING since {since}");
                    }
                    if let (Some(at), Some(e)) = (&d.last_error_at, &d.last_error) {
                        outln!("  last error ({at}): {e}");
                    }
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
