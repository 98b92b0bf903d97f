//! Bytes as a lowercase hex string in serde formats (the upgrade snapshot's partial lines and
//! unsent output): JSON has no byte strings, and an array of numbers costs up to four characters
//! a byte where hex costs two.

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes `bytes` as hex.
pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s.serialize_str(&out)
}

/// Reads what [`serialize`] wrote; anything else is an error.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    decode(&text).ok_or_else(|| serde::de::Error::custom("not a hex string"))
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn round_trip_and_refusals() {
        let all: Vec<u8> = (0..=255).collect();
        let json = serde_json::to_string(&T(all.clone())).unwrap();
        assert!(json.starts_with("\"000102"));
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), T(all));
        for bad in ["\"0\"", "\"zz\"", "\"0g\"", "12"] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }
}
