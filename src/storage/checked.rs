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

/// The body of `bytes`, if they decode whole, with `magic`, `version` and a matching CRC;
/// otherwise what is wrong with them.
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    magic: u32,
    version: u16,
) -> Result<T, String> {
    let (opened, used): (Opened<T>, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err("trailing bytes".into());
    }
    if opened.magic != magic || opened.version != version {
        return Err("wrong magic or version".into());
    }
    if crc_of(&opened.body).ok() != Some(opened.crc) {
        return Err("checksum mismatch".into());
    }
    Ok(opened.body)
}
