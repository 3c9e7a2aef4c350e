//! A real HJ 212 data logger: a TCP client that sends packets and waits
//! for each one's data ACK, reconnecting and sending again when the
//! connection breaks before the ACK came (as field loggers do).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The HJ 212 CRC (HJ 212-2017 Appendix A), written here again so the
/// tests do not take lantian's word for it.
pub fn hj212_crc(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc = (crc >> 8) ^ u16::from(b);
        for _ in 0..8 {
            let low = crc & 1;
            crc >>= 1;
            if low != 0 {
                crc ^= 0xA001;
            }
        }
    }
    crc
}

/// `##`, length, data segment, CRC (no CR LF).
pub fn hj212_packet(data: &str) -> String {
    format!(
        "##{:04}{data}{:04X}",
        data.len(),
        hj212_crc(data.as_bytes())
    )
}

/// The packet of `data` with its data area SM4-encrypted by OpenSSL with
/// `key_hex` (see `openssl_sm4`).
pub fn hj212_sealed(data: &str, key_hex: &str) -> String {
    super::openssl_sm4::sealed_by_openssl(data, key_hex, hj212_crc(data.as_bytes()))
        .expect("a data area of at least a block")
}

/// `YYYYMMDDhhmmss` in Beijing time.
pub fn beijing_time(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000).unwrap();
    t.format("%Y%m%d%H%M%S").to_string()
}

pub struct Logger {
    stream: Option<BufReader<TcpStream>>,
    /// Packets sent again after the connection broke without their ACK.
    pub resent: u64,
    /// ACKs received.
    pub acked: u64,
}

impl Logger {
    pub fn new() -> Self {
        Self {
            stream: None,
            resent: 0,
            acked: 0,
        }
    }

    /// Sends `packet` (which asks for an ACK and carries `QN=qn`) until
    /// its ACK comes back; `port` holds the listener's current port.
    pub async fn send(&mut self, packet: &str, qn: &str, port: &tokio::sync::watch::Receiver<u16>) {
        let mut attempts = 0u64;
        loop {
            if self.stream.is_none() {
                let now = *port.borrow();
                match TcpStream::connect(("127.0.0.1", now)).await {
                    Ok(s) => self.stream = Some(BufReader::new(s)),
                    Err(_) => {
                        // lantian is restarting: poll for it.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let stream = self.stream.as_mut().unwrap();
            if attempts > 0 {
                self.resent += 1;
            }
            attempts += 1;
            if stream
                .get_mut()
                .write_all(format!("{packet}\r\n").as_bytes())
                .await
                .is_err()
            {
                self.stream = None;
                continue;
            }
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(n) if n > 0 => {
                    assert!(
                        line.contains("CN=9014") && line.contains(&format!("QN={qn};")),
                        "not the ACK of {qn}: {line:?}"
                    );
                    let data = &line[6..line.len() - 6];
                    assert_eq!(
                        format!("{:04X}", hj212_crc(data.as_bytes())),
                        line[line.len() - 6..line.len() - 2].to_ascii_uppercase(),
                        "the ACK's CRC: {line:?}"
                    );
                    self.acked += 1;
                    return;
                }
                _ => self.stream = None,
            }
        }
    }
}

impl Default for Logger {
    fn default() -> Self {
        Self::new()
    }
}
