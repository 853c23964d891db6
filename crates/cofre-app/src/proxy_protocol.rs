//! The PROXY protocol v2 header (HAProxy's `send-proxy-v2`) that a trusted load balancer puts
//! before a connection's first byte to name the client it relays. Both front ends read it, before
//! TLS (API) or SSH, and only from a trusted proxy: from anyone else the header would let a client
//! name any address it likes, so there it is never read (the bytes then fail the TLS or SSH
//! handshake like any other garbage).
//!
//! The header is read exactly (16 fixed bytes, then the length they give), so not one byte of
//! the stream that follows is consumed.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a trusted proxy has to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest header accepted (addresses and TLVs; HAProxy's are well under this).
const MAX_HEADER: usize = 16 + 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol v2 header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed PROXY protocol v2 header: {0}")]
    Malformed(String),
}

/// Whether the connection starts with the PROXY protocol v2 signature, without consuming it.
/// Waits up to `within` for the peer's first bytes: a TLS client speaks first, but an SSH client
/// may wait for the server's banner, so the gateway asks only trusted proxies, which send the
/// header before anything else.
pub async fn starts_with_header(
    tcp: &TcpStream,
    within: Duration,
) -> Result<bool, ProxyHeaderError> {
    let prefix = ppp::v2::PROTOCOL_PREFIX;
    let mut buf = [0u8; 12];
    let read = tokio::time::timeout(within, async {
        loop {
            let n = tcp.peek(&mut buf).await?;
            // Fewer bytes than the signature that still match it: wait for the rest.
            if n == 0 || n >= prefix.len() || buf[..n] != prefix[..n] {
                return Ok::<usize, std::io::Error>(n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .map_err(|_| ProxyHeaderError::Timeout(within))??;
    Ok(read >= prefix.len() && buf[..] == prefix[..])
}

/// Reads the header and returns the client's address it names, or `None` for a `LOCAL` header
/// (the proxy's own health check) or an address family without one (unix, unspecified).
pub async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    tokio::time::timeout(HEADER_TIMEOUT, async {
        let mut head = [0u8; 16];
        tcp.read_exact(&mut head).await?;
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if 16 + len > MAX_HEADER {
            return Err(ProxyHeaderError::Malformed(format!(
                "{len} bytes of addresses is more than {} allowed",
                MAX_HEADER - 16
            )));
        }
        let mut whole = Vec::with_capacity(16 + len);
        whole.extend_from_slice(&head);
        whole.resize(16 + len, 0);
        tcp.read_exact(&mut whole[16..]).await?;
        parse(&whole)
    })
    .await
    .map_err(|_| ProxyHeaderError::Timeout(HEADER_TIMEOUT))?
}

/// The client address a whole header names (see [`read_header`]).
pub fn parse(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header =
        ppp::v2::Header::try_from(bytes).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_proxy_writes() {
        let client: SocketAddr = "10.77.1.2:40000".parse().unwrap();
        let server: SocketAddr = "10.77.0.1:8443".parse().unwrap();
        let bytes = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .unwrap();
        assert_eq!(parse(&bytes).unwrap(), Some(client));
        let v6: SocketAddr = "[2001:db8::7]:5555".parse().unwrap();
        let v6s: SocketAddr = "[2001:db8::1]:22".parse().unwrap();
        let bytes = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (v6, v6s),
        )
        .build()
        .unwrap();
        assert_eq!(parse(&bytes).unwrap(), Some(v6));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
        let mut bytes = ppp::v2::PROTOCOL_PREFIX.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&bytes).is_err());
    }
}
