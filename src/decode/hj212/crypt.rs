//! HJ 212-2025's encrypted data area (§6.4, Appendix A.2): the text
//! between `CP=&&` and the closing `&&` encrypted with SM4 (GB/T 32907)
//! in ECB mode without padding, 16 characters a block; a tail shorter
//! than a block stays in clear. On the wire the encrypted blocks are
//! written as bytes in braces, the tail after them:
//! `CP=&&{0xE4,0x3E,…,0xA4}g=N&&`. The CRC is the CRC of the data
//! segment in clear, and the length field may count either form (the
//! standard's own example counts the clear one).

use std::borrow::Cow;

use sm4::Sm4;
use sm4::cipher::{BlockCipherDecrypt, KeyInit};

use super::Error;

/// A device's SM4 key. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Key(Sm4);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// From 32 hex digits, or 16 characters taken as their bytes (the
    /// standard's test key, 16 × 0x30, is `0000000000000000` or
    /// `30303030303030303030303030303030`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes: [u8; 16] = if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut out = [0; 16];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits");
            }
            out
        } else if let Ok(bytes) = text.as_bytes().try_into() {
            bytes
        } else {
            return Err(format!(
                "an SM4 key is 32 hex digits or 16 characters, not {} characters",
                text.chars().count()
            ));
        };
        Ok(Self(Sm4::new(&bytes.into())))
    }
}

/// Whether a data segment's data area is encrypted.
pub fn is_encrypted(data: &str) -> bool {
    data.contains("CP=&&{")
}

/// The data segment in clear: `data` itself when its data area is not
/// encrypted, decrypted with `key` when it is. An encrypted area and no
/// key is [`Error::Encrypted`]; bytes that do not decrypt to text (a
/// wrong key) are [`Error::Key`].
pub fn clear<'a>(data: &'a str, key: Option<&Key>) -> Result<Cow<'a, str>, Error> {
    let Some(at) = data.find("CP=&&{") else {
        return Ok(Cow::Borrowed(data));
    };
    let Some(key) = key else {
        return Err(Error::Encrypted);
    };
    let (head, area) = data.split_at(at + "CP=&&".len());
    let Some((blocks, tail)) = area[1..].split_once('}') else {
        return Err(Error::Data(
            "the encrypted data area has no closing }".into(),
        ));
    };
    let mut bytes = blocks
        .split(',')
        .map(|b| {
            let b = b.trim();
            b.strip_prefix("0x")
                .or_else(|| b.strip_prefix("0X"))
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Data(format!(
                        "{b:?} in the encrypted data area is not a byte (0xHH)"
                    ))
                })
        })
        .collect::<Result<Vec<u8>, Error>>()?;
    if bytes.len() % 16 != 0 {
        return Err(Error::Data(format!(
            "the encrypted data area has {} bytes, not whole 16-byte blocks",
            bytes.len()
        )));
    }
    for block in bytes.chunks_exact_mut(16) {
        let block: &mut [u8; 16] = block.try_into().expect("16 bytes");
        key.0.decrypt_block(block.into());
    }
    let plain = String::from_utf8(bytes)
        .ok()
        .filter(|s| {
            s.bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ' || b >= 0x80)
        })
        .ok_or(Error::Key)?;
    Ok(Cow::Owned(format!("{head}{plain}{tail}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm4::cipher::BlockCipherEncrypt;

    /// GB/T 32907-2016 Appendix A, example 1: key and plaintext
    /// 0123456789abcdeffedcba9876543210.
    #[test]
    fn the_cipher_reproduces_the_standards_example() {
        let key = Key::parse("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let mut block = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ];
        key.0.encrypt_block((&mut block).into());
        assert_eq!(
            block,
            [
                0x68, 0x1e, 0xdf, 0x34, 0xd2, 0x06, 0x96, 0x5e, 0x86, 0xb3, 0xe9, 0x4f, 0x53, 0x6e,
                0x42, 0x46
            ]
        );
    }

    #[test]
    fn keys_are_32_hex_digits_or_16_characters() {
        let hex = Key::parse("30303030303030303030303030303030").unwrap();
        let text = Key::parse("0000000000000000").unwrap();
        let mut a = [7u8; 16];
        let mut b = [7u8; 16];
        hex.0.encrypt_block((&mut a).into());
        text.0.encrypt_block((&mut b).into());
        assert_eq!(a, b);
        assert!(Key::parse("0123").unwrap_err().contains("4 characters"));
        assert!(Key::parse("zz30303030303030303030303030303030").is_err());
        assert_eq!(format!("{hex:?}"), "Key(..)");
    }

    #[test]
    fn a_clear_area_is_borrowed_and_an_encrypted_one_wants_a_key() {
        let plain = "QN=1;ST=31;CN=2011;MN=X;Flag=9;CP=&&DataTime=20250101000000&&";
        assert!(matches!(clear(plain, None), Ok(Cow::Borrowed(_))));
        let sealed = "QN=1;ST=31;CN=2011;MN=X;Flag=9;CP=&&{0x00,0x01}g=N&&";
        assert!(is_encrypted(sealed));
        assert_eq!(clear(sealed, None), Err(Error::Encrypted));
        let key = Key::parse("0000000000000000").unwrap();
        let Err(Error::Data(m)) = clear(sealed, Some(&key)) else {
            panic!("2 bytes are not a block")
        };
        assert!(m.contains("whole 16-byte blocks"), "{m}");
        let Err(Error::Data(m)) = clear("CP=&&{0x0G}&&", Some(&key)) else {
            panic!("0x0G is not a byte")
        };
        assert!(m.contains("\"0x0G\""), "{m}");
        assert!(matches!(
            clear("CP=&&{0x00&&", Some(&key)),
            Err(Error::Data(_))
        ));
    }
}
