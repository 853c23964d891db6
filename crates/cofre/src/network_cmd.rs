//! `cofre network ...`: which networks the API and the SSH gateway accept, and the trusted proxies
//! whose X-Forwarded-For and PROXY protocol v2 headers name the real client.

use crate::commands::{Ctx, Maybe};
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum NetworkCmd {
    /// Each listener's networks and trusted proxies, and your own address as the API sees it.
    Show,
    /// Set a listener's allow-list (an admin: the customer's networks; the vendor's operator in
    /// saas and private-saas: the vendor's own). Examples:
    ///   cofre network set --listener api --allow 10.20.0.0/16,192.168.7.0/24
    ///   cofre network set --listener gateway --allow 10.20.0.0/16 --trusted-proxies 10.20.0.5
    ///   cofre network set --listener api --allow ''      # everyone again
    /// Narrowing applies at once; letting more in (a new network, everyone, a new trusted proxy)
    /// waits for a second admin. A list that refuses your own address on the API is refused
    /// unless --force.
    #[command(verbatim_doc_comment)]
    Set {
        /// api (the HTTPS API and web console) or gateway (the SSH gateway).
        #[arg(long)]
        listener: String,
        /// Comma-separated CIDRs or addresses, IPv4 or IPv6; empty lets everyone in.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        allow: Vec<String>,
        /// Comma-separated proxy addresses or CIDRs (a load balancer); omitted keeps the list,
        /// empty clears it.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        trusted_proxies: Option<Vec<String>>,
        /// Apply even though the new list refuses your own current address.
        #[arg(long)]
        force: bool,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn print_policy(p: &NetworkPolicyInfo) {
    for l in &p.listeners {
        let allow = if l.allow.is_empty() && l.vendor_allow.is_empty() {
            "everyone".to_owned()
        } else {
            list(&l.allow)
        };
        outln!("{}: allow {allow}", l.listener);
        if !l.vendor_allow.is_empty() {
            outln!("  vendor networks: {}", list(&l.vendor_allow));
        }
        outln!("  trusted proxies: {}", list(&l.trusted_proxies));
        if let (Some(at), Some(by)) = (&l.updated_at, &l.updated_by) {
            outln!("  changed {at} by {by}");
        }
    }
    outln!("your address: {}", p.your_address);
}

pub(crate) async fn run(ctx: &Ctx, cmd: NetworkCmd) -> Result<ExitCode> {
    match cmd {
        NetworkCmd::Show => {
            let p: NetworkPolicyInfo = ctx.client.get("/api/v1/network").await?;
            ctx.print(&p, print_policy)?;
        }
        NetworkCmd::Set {
            listener,
            allow,
            trusted_proxies,
            force,
        } => {
            // `--allow ''` is an empty list, not one empty network.
            let clean = |v: Vec<String>| -> Vec<String> {
                v.into_iter().filter(|s| !s.trim().is_empty()).collect()
            };
            let req = SetNetworkRequest {
                listener,
                allow: clean(allow),
                trusted_proxies: trusted_proxies.map(clean),
                force,
            };
            match ctx
                .propose::<NetworkPolicyInfo>(reqwest::Method::PUT, "/api/v1/network", Some(&req))
                .await?
            {
                Maybe::Done(p) => ctx.print(&p, print_policy)?,
                Maybe::Held(h) => ctx.print_held(&h)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
