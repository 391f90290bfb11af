//! The PROXY protocol (v1 and v2) from an L4 load balancer in front, accepted only from the
//! addresses a listener names (`proxy_protocol_from`): the header is read exactly (never a
//! byte of the TLS that follows) and parsed by the `ppp` crate, and its client address
//! replaces the load balancer's for everything after (logs, `X-Forwarded-For`, allow-lists).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// v2 headers with TLVs stay small; anything larger is refused.
const MAX_V2: usize = 4096;
/// "PROXY TCP6 <39> <39> <5> <5>\r\n" is at most 107 bytes (haproxy's proxy-protocol.txt).
const MAX_V1: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection from a load balancer had no usable PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("the PROXY protocol header is malformed")]
    Malformed,
    #[error("the PROXY protocol header is longer than allowed")]
    TooLong,
    #[error("the connection closed before its PROXY protocol header ended")]
    Closed,
}

/// Reads one PROXY header from `io`. `Some(address)`: the client the load balancer relays;
/// `None`: a LOCAL (v2) or UNKNOWN (v1) header, as health checks send, so the peer's own
/// address stands.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await.map_err(|_| ProxyHeaderError::Closed)?;
    if &head == b"PROXY" {
        // v1 ends at CRLF: read a byte at a time so not one byte of the TLS is taken.
        let mut line = head.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= MAX_V1 {
                return Err(ProxyHeaderError::TooLong);
            }
            let mut byte = [0u8; 1];
            io.read_exact(&mut byte).await.map_err(|_| ProxyHeaderError::Closed)?;
            line.push(byte[0]);
        }
        let header =
            ppp::v1::Header::try_from(line.as_slice()).map_err(|_| ProxyHeaderError::Malformed)?;
        return Ok(match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Unknown => None,
        });
    }
    if head != V2_SIGNATURE[..5] {
        return Err(ProxyHeaderError::Missing);
    }
    let mut fixed = [0u8; 16];
    fixed[..5].copy_from_slice(&head);
    io.read_exact(&mut fixed[5..]).await.map_err(|_| ProxyHeaderError::Closed)?;
    if fixed[..12] != V2_SIGNATURE[..] {
        return Err(ProxyHeaderError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if 16 + len > MAX_V2 {
        return Err(ProxyHeaderError::TooLong);
    }
    let mut whole = fixed.to_vec();
    whole.resize(16 + len, 0);
    io.read_exact(&mut whole[16..]).await.map_err(|_| ProxyHeaderError::Closed)?;
    let header =
        ppp::v2::Header::try_from(whole.as_slice()).map_err(|_| ProxyHeaderError::Malformed)?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut io = bytes;
        let got = read_header(&mut io).await;
        (got, io.to_vec())
    }

    /// v1 and v2 give the client address and leave the TLS bytes after them unread; LOCAL and
    /// UNKNOWN keep the peer; anything else is refused.
    #[tokio::test]
    async fn headers_are_read_exactly() {
        let (got, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 443\r\n\x16\x03\x01").await;
        assert_eq!(got, Ok(Some("203.0.113.7:4242".parse().unwrap())));
        assert_eq!(rest, b"\x16\x03\x01");
        let (got, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(got, Ok(None));
        let (got, _) = read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40\r\n").await;
        assert_eq!(got, Err(ProxyHeaderError::TooLong));
        let (got, _) = read(b"\x16\x03\x01\x02\x00").await;
        assert_eq!(got, Err(ProxyHeaderError::Missing));

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x10, 0x92, 1, 187,
        ]);
        v2.extend_from_slice(b"\x16\x03\x01");
        let (got, rest) = read(&v2).await;
        assert_eq!(got, Ok(Some("198.51.100.9:4242".parse().unwrap())));
        assert_eq!(rest, b"\x16\x03\x01");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0, Ok(None));
        let (got, _) = read(&v2[..20]).await;
        assert_eq!(got, Err(ProxyHeaderError::Closed));
    }
}
