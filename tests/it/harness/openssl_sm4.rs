//! An HJ 212-2025 packet with its data area SM4-encrypted by OpenSSL (an
//! implementation independent of lantian's), as §6.4 sends it: whole
//! 16-byte blocks written `{0xHH,…}`, the shorter tail in clear; the length
//! field and the CRC (`crc`, computed by the caller) are the segment's in
//! clear, as in the standard's example. Shared by the library's unit tests
//! and the integration harness (std only).

use std::io::Write;

/// `None` when the data area is shorter than a block (nothing to encrypt).
pub fn sealed_by_openssl(data: &str, key_hex: &str, crc: u16) -> Option<String> {
    let at = data.find("CP=&&")? + 5;
    let (head, area) = data.split_at(at);
    let area = area.strip_suffix("&&")?;
    let whole = area.len() / 16 * 16;
    if whole == 0 {
        return None;
    }
    let mut openssl = std::process::Command::new("openssl")
        .args(["enc", "-sm4-ecb", "-nopad", "-K", key_hex])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (scripts/test.sh installs it)");
    let mut stdin = openssl.stdin.take().unwrap();
    stdin.write_all(&area.as_bytes()[..whole]).unwrap();
    drop(stdin);
    let out = openssl.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl enc -sm4-ecb failed");
    assert_eq!(out.stdout.len(), whole);
    let blocks: Vec<String> = out.stdout.iter().map(|b| format!("0x{b:02X}")).collect();
    Some(format!(
        "##{:04}{head}{{{}}}{}&&{crc:04X}",
        data.len(),
        blocks.join(","),
        &area[whole..],
    ))
}
