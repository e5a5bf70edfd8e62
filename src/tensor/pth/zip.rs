//! The zip container of `torch.save` since PyTorch 1.6: stored members only (torch never
//! deflates them), zip64 included, CRC-checked.

use std::collections::HashMap;

use super::*;

pub(super) struct ZipMember {
    pub(super) name: String,
    pub(super) method: u16,
    pub(super) crc: u32,
    pub(super) compressed: u64,
    pub(super) size: u64,
    pub(super) local_offset: u64,
}

pub(super) fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub(super) const TRUNCATED_ZIP: &str =
    "a zip archive without its central directory (truncated or damaged)";

/// The central directory's members.
pub(super) fn zip_members(b: &[u8]) -> std::result::Result<Vec<ZipMember>, String> {
    // End of central directory: 22 bytes plus a comment of up to 65,535, at the end.
    let lowest = b.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))
        .ok_or(TRUNCATED_ZIP)?;
    let bad = || TRUNCATED_ZIP.to_string();
    let mut count = le16(b, eocd + 10).ok_or_else(bad)? as u64;
    let mut cd_size = le32(b, eocd + 12).ok_or_else(bad)? as u64;
    let mut cd_offset = le32(b, eocd + 16).ok_or_else(bad)? as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: the locator sits just before the end record and points at the zip64 record.
        let loc = eocd.checked_sub(20).ok_or_else(bad)?;
        if !b[loc..].starts_with(b"PK\x06\x07") {
            return Err("a zip64 archive without its zip64 locator (damaged)".into());
        }
        let rec = le64(b, loc + 8).ok_or_else(bad)? as usize;
        if !b.get(rec..).is_some_and(|r| r.starts_with(b"PK\x06\x06")) {
            return Err("a zip64 archive without its zip64 end record (damaged)".into());
        }
        count = le64(b, rec + 32).ok_or_else(bad)?;
        cd_size = le64(b, rec + 40).ok_or_else(bad)?;
        cd_offset = le64(b, rec + 48).ok_or_else(bad)?;
    }
    let end = cd_offset.checked_add(cd_size).ok_or_else(bad)?;
    if end > b.len() as u64 {
        return Err(format!(
            "a zip archive whose central directory (bytes {cd_offset}..{end}) lies past the \
             file's end ({} bytes): truncated",
            b.len()
        ));
    }
    let mut members = Vec::new();
    let mut at = cd_offset as usize;
    for i in 0..count {
        let broken = || format!("zip central directory entry {i} at byte {at} is damaged");
        if !b.get(at..).is_some_and(|r| r.starts_with(b"PK\x01\x02")) {
            return Err(broken());
        }
        let method = le16(b, at + 10).ok_or_else(broken)?;
        let crc = le32(b, at + 16).ok_or_else(broken)?;
        let mut compressed = le32(b, at + 20).ok_or_else(broken)? as u64;
        let mut size = le32(b, at + 24).ok_or_else(broken)? as u64;
        let name_len = le16(b, at + 28).ok_or_else(broken)? as usize;
        let extra_len = le16(b, at + 30).ok_or_else(broken)? as usize;
        let comment_len = le16(b, at + 32).ok_or_else(broken)? as usize;
        let mut local_offset = le32(b, at + 42).ok_or_else(broken)? as u64;
        let name = b.get(at + 46..at + 46 + name_len).ok_or_else(broken)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(broken)?;
        // Zip64 extended information: the 64-bit values of the fields that read 0xFFFFFFFF,
        // in this order.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = le16(extra, e).ok_or_else(broken)?;
            let len = le16(extra, e + 2).ok_or_else(broken)? as usize;
            let body = extra.get(e + 4..e + 4 + len).ok_or_else(broken)?;
            if id == 1 {
                let mut k = 0;
                for field in [&mut size, &mut compressed, &mut local_offset] {
                    if *field == 0xFFFF_FFFF {
                        *field = le64(body, k).ok_or_else(broken)?;
                        k += 8;
                    }
                }
            }
            e += 4 + len;
        }
        members.push(ZipMember {
            name,
            method,
            crc,
            compressed,
            size,
            local_offset,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(members)
}

/// A member's bytes (stored members only), checked against its CRC-32.
pub(super) fn zip_read<'a>(b: &'a [u8], m: &ZipMember) -> std::result::Result<&'a [u8], String> {
    if m.method != 0 {
        return Err(format!(
            "zip member `{}` is compressed (method {}); torch.save stores members uncompressed: \
             re-save the checkpoint with torch.save",
            m.name, m.method
        ));
    }
    let at = m.local_offset as usize;
    let broken = || format!("zip member `{}`: its local header is damaged", m.name);
    if m.local_offset > b.len() as u64 || !b[at..].starts_with(b"PK\x03\x04") {
        return Err(broken());
    }
    let start = at
        + 30
        + le16(b, at + 26).ok_or_else(broken)? as usize
        + le16(b, at + 28).ok_or_else(broken)? as usize;
    let end = (start as u64).checked_add(m.compressed);
    let data = end
        .filter(|&e| m.compressed == m.size && e <= b.len() as u64)
        .and_then(|e| b.get(start..e as usize))
        .ok_or_else(|| {
            format!(
                "zip member `{}`: {} bytes from byte {start} lie past the file's end ({} bytes): \
                 truncated",
                m.name,
                m.size,
                b.len()
            )
        })?;
    let crc = crc32(data);
    if crc != m.crc {
        return Err(format!(
            "zip member `{}`: CRC-32 {crc:08x} does not match the archive's {:08x} (damaged)",
            m.name, m.crc
        ));
    }
    Ok(data)
}

/// CRC-32 (IEEE 802.3, the zip checksum), a byte at a time.
pub(super) fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &x in data {
        c = table[((c ^ x as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

pub(super) fn parse_zip_checkpoint(b: &[u8]) -> std::result::Result<PthFile, String> {
    let members = zip_members(b)?;
    let pkl = members
        .iter()
        .filter(|m| {
            m.name
                .strip_suffix("/data.pkl")
                .is_some_and(|p| !p.is_empty() && !p.contains('/'))
        })
        .min_by_key(|m| m.name.len())
        .ok_or_else(|| {
            let names: Vec<&str> = members.iter().take(4).map(|m| m.name.as_str()).collect();
            format!(
                "a zip archive without `<name>/data.pkl`, so not a torch.save file (members: {}{})",
                names.join(", "),
                if members.len() > 4 { ", ..." } else { "" }
            )
        })?;
    let prefix = pkl.name.trim_end_matches("data.pkl").to_string();
    let by_name: HashMap<&str, &ZipMember> = members.iter().map(|m| (m.name.as_str(), m)).collect();
    let big_endian = match by_name.get(format!("{prefix}byteorder").as_str()) {
        None => false,
        Some(m) => match zip_read(b, m)? {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(format!(
                    "`{prefix}byteorder` says `{}` (little or big)",
                    String::from_utf8_lossy(other)
                ))
            }
        },
    };
    let mut heap = Heap::default();
    let (top, _) = unpickle(zip_read(b, pkl)?, 0, &mut heap, &pkl.name)?;
    let storage = |key: &str| -> std::result::Result<&[u8], String> {
        let name = format!("{prefix}data/{key}");
        let m = by_name
            .get(name.as_str())
            .ok_or_else(|| format!("the archive has no member `{name}`"))?;
        zip_read(b, m)
    };
    extract(&heap, &top, &storage, big_endian, PthFormat::Zip)
}
