//! The encoding of a small state file that must be whole or refused: the bincode (standard
//! configuration, serde) of a magic number, a version, the body, and a CRC-32 of the body's own
//! bincode encoding (docs/FORMAT.md: the recovery checkpoint, the Raft state). One owner for the
//! files that share it.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Serialize)]
struct Sealing<'a, T> {
    magic: u32,
    version: u16,
    body: &'a T,
    crc: u32,
}

#[derive(Deserialize)]
struct Opened<T> {
    magic: u32,
    version: u16,
    body: T,
    crc: u32,
}

/// The most a state file's decoding may claim (lengths of strings and sequences): they are small,
/// and a damaged length must be refused, not allocated.
const DECODE_LIMIT: usize = 1 << 20;

fn crc_of<T: Serialize>(body: &T) -> Result<u32, bincode::error::EncodeError> {
    Ok(crc32fast::hash(&bincode::serde::encode_to_vec(
        body,
        bincode::config::standard(),
    )?))
}

/// `body` under `magic` and `version`, with its CRC.
pub(crate) fn encode<T: Serialize>(
    magic: u32,
    version: u16,
    body: &T,
) -> Result<Vec<u8>, bincode::error::EncodeError> {
    let crc = crc_of(body)?;
    bincode::serde::encode_to_vec(
        Sealing {
            magic,
            version,
            body,
            crc,
        },
        bincode::config::standard(),
    )
}

/// The body of `bytes`, if they decode whole, with `magic`, `version` and a matching CRC, and
/// are exactly what [`encode`] writes for it; otherwise what is wrong with them.
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    magic: u32,
    version: u16,
) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    // The magic and the version first: a file of something else is not decoded any further.
    let ((found_magic, found_version), _): ((u32, u16), usize) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())?;
    if found_magic != magic || found_version != version {
        return Err("wrong magic or version".into());
    }
    let (opened, used): (Opened<T>, usize) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err("trailing bytes".into());
    }
    if opened.magic != magic || opened.version != version {
        return Err("wrong magic or version".into());
    }
    if crc_of(&opened.body).ok() != Some(opened.crc) {
        return Err("checksum mismatch".into());
    }
    // Only the bytes this build writes for it: a longer integer encoding, a map's keys twice or
    // out of order would decode to the same body from other bytes.
    if encode(magic, version, &opened.body).ok().as_deref() != Some(bytes) {
        return Err("not the encoding this build writes".into());
    }
    Ok(opened.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bytes_encode_writes_are_accepted() {
        let bytes = encode(7, 1, &300u64).unwrap();
        assert_eq!(decode::<u64>(&bytes, 7, 1), Ok(300));
        assert!(decode::<u64>(&bytes, 8, 1).is_err(), "another magic");
        assert!(decode::<u64>(&bytes, 7, 2).is_err(), "another version");
        // 300 as a u32-width varint instead of u16-width: the same value, the same CRC (it is
        // of the canonical body), other bytes.
        let canonical_body = [0xfb, 0x2c, 0x01];
        let at = bytes.windows(3).position(|w| w == canonical_body).unwrap();
        let mut longer = bytes[..at].to_vec();
        longer.extend_from_slice(&[0xfc, 0x2c, 0x01, 0x00, 0x00]);
        longer.extend_from_slice(&bytes[at + 3..]);
        assert!(decode::<u64>(&longer, 7, 1).is_err(), "a longer encoding");
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<u64>(&trailing, 7, 1).is_err(), "trailing bytes");
    }
}
