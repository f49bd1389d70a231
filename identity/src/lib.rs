//! A swarm member's identity.
//!
//! Each member has one secp256k1 key. Its libp2p [`PeerId`] and its Ethereum-style ledger account
//! address both derive from that key, so anyone can check that a peer and an account belong
//! together. The operator generates the key once and keeps it in the member's Secret under
//! [`PRIVATE_KEY_FILE`]; the node reads it from the mounted volume.
//!
//! The key never leaves a [`MemberKey`] except through [`MemberKey::secret_data`]: no `Debug`,
//! `Display` or error message contains it.

use std::fmt;
use std::path::{Path, PathBuf};

use libp2p_identity::{PeerId, PublicKey, secp256k1};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use sha3::{Digest, Keccak256};
use zeroize::Zeroizing;

/// Key of the private key in the identity Secret, and the file name in its mounted volume.
pub const PRIVATE_KEY_FILE: &str = "private-key";

/// Length of the stored key: the 32-byte secret scalar as hex.
const KEY_HEX_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {0}")]
    Malformed(KeyProblem),
    #[error("cannot read identity key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key file {} {problem}", path.display())]
    MalformedFile { path: PathBuf, problem: KeyProblem },
}

/// What is wrong with a stored key. Carries lengths and positions only, never the key's text;
/// displays as a predicate ("is not ...") for [`IdentityError`] to put a subject in front of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("is not UTF-8 text")]
    NotUtf8,
    #[error("is not {KEY_HEX_LEN} hex characters (got {0} characters)")]
    Length(usize),
    #[error("has a non-hex character at position {0}")]
    NotHex(usize),
    #[error("is not a valid secp256k1 scalar (it must be at least 1 and below the curve order)")]
    InvalidScalar,
}

/// A member's secret key. Zeroized on drop (by the underlying `k256` signing key).
pub struct MemberKey {
    keypair: secp256k1::Keypair,
}

impl MemberKey {
    /// A new key from the operating system's random number generator.
    ///
    /// Panics if the operating system cannot provide randomness, as there is no safe fallback.
    pub fn generate() -> MemberKey {
        let mut rng = UnwrapErr(SysRng);
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(&mut *bytes);
            // Fails only for zero or a value of at least the curve order, about 2^-128 likely.
            if let Ok(secret) = secp256k1::SecretKey::try_from_bytes(&mut *bytes) {
                return MemberKey::from(secret);
            }
        }
    }

    /// Parses the stored form: 64 hex characters, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<MemberKey, IdentityError> {
        parse_hex(text).map_err(IdentityError::Malformed)
    }

    /// Parses the value of the identity Secret's [`PRIVATE_KEY_FILE`] entry.
    pub fn from_secret_data(bytes: &[u8]) -> Result<MemberKey, IdentityError> {
        parse_bytes(bytes).map_err(IdentityError::Malformed)
    }

    /// Reads `dir/`[`PRIVATE_KEY_FILE`], as mounted from the identity Secret.
    pub fn load(dir: &Path) -> Result<MemberKey, IdentityError> {
        let path = dir.join(PRIVATE_KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(source) => return Err(IdentityError::Read { path, source }),
        };
        parse_bytes(&bytes).map_err(|problem| IdentityError::MalformedFile { path, problem })
    }

    /// The stored form of the key, for the identity Secret: 64 lowercase hex characters.
    pub fn secret_data(&self) -> String {
        let bytes = Zeroizing::new(self.keypair.secret().to_bytes());
        hex::encode(*bytes)
    }

    pub fn peer_id(&self) -> PeerId {
        PublicKey::from(self.keypair.public().clone()).to_peer_id()
    }

    /// The PeerId in base58, as it appears in multiaddrs (`16Uiu2...` for secp256k1 keys).
    pub fn peer_id_string(&self) -> String {
        self.peer_id().to_base58()
    }

    /// The Ethereum account address, EIP-55 checksummed with a `0x` prefix.
    pub fn address(&self) -> String {
        let uncompressed = self.keypair.public().to_bytes_uncompressed();
        // Skip the 0x04 SEC1 tag: the address hashes the bare 64-byte point.
        let digest = Keccak256::digest(&uncompressed[1..]);
        let mut address = [0u8; 20];
        address.copy_from_slice(&digest[12..]);
        checksum_address(&address)
    }

    /// The key as a libp2p keypair, for the node's swarm.
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        libp2p_identity::Keypair::from(self.keypair.clone())
    }
}

impl From<secp256k1::SecretKey> for MemberKey {
    fn from(secret: secp256k1::SecretKey) -> Self {
        MemberKey {
            keypair: secp256k1::Keypair::from(secret),
        }
    }
}

impl fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberKey")
            .field("peer_id", &self.peer_id_string())
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

fn parse_bytes(bytes: &[u8]) -> Result<MemberKey, KeyProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyProblem::NotUtf8)?;
    parse_hex(text)
}

fn parse_hex(text: &str) -> Result<MemberKey, KeyProblem> {
    let text = text.trim();
    let length = text.chars().count();
    if length != KEY_HEX_LEN {
        return Err(KeyProblem::Length(length));
    }
    // Checked here rather than through `hex`'s error, which would quote the offending character.
    if let Some(position) = text.bytes().position(|byte| !byte.is_ascii_hexdigit()) {
        return Err(KeyProblem::NotHex(position));
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, &mut *bytes).map_err(|_| KeyProblem::NotHex(0))?;
    secp256k1::SecretKey::try_from_bytes(&mut *bytes)
        .map(MemberKey::from)
        .map_err(|_| KeyProblem::InvalidScalar)
}

/// EIP-55: a hex letter is upper case where the matching nibble of keccak256(lowercase hex) is >= 8.
fn checksum_address(address: &[u8; 20]) -> String {
    let lower = hex::encode(address);
    let digest = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = if i % 2 == 0 {
            digest[i / 2] >> 4
        } else {
            digest[i / 2] & 0x0f
        };
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (secret key, PeerId, address), printed by `identity/tests/vectors.py`, which derives them
    /// without these crates (its own secp256k1, protobuf, multihash and base58; pycryptodome's keccak).
    const VECTORS: [(&str, &str, &str); 4] = [
        (
            "0000000000000000000000000000000000000000000000000000000000000001",
            "16Uiu2HAm3cuhhRL2msUuLF62KRSfneFDx94RsuouyW25Ho42cFMq",
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000002",
            "16Uiu2HAm8kegYGp6XeybmZAuNcnLosyjsRwZ44yLgfEuqLqYL9zt",
            "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF",
        ),
        (
            "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
            "16Uiu2HAkzh4QdxB7ijzVnwd6JFNNe4bcr1JBwYUypXe3pX5BRpqK",
            "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        ),
        (
            // The curve order minus one: the largest valid scalar.
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
            "16Uiu2HAmLrE5CD5dZvDfuKsSYbcxys3kCdhkd7t1TYyQ9iUo8Cc7",
            "0x80C0dbf239224071c59dD8970ab9d542E3414aB2",
        ),
    ];

    const CURVE_ORDER: &str = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";

    #[test]
    fn derives_the_independent_vectors() {
        for (secret, peer_id, address) in VECTORS {
            let key = MemberKey::from_hex(secret).unwrap();
            assert_eq!(key.peer_id_string(), peer_id, "peer id of {secret}");
            assert_eq!(key.peer_id().to_base58(), peer_id);
            assert_eq!(key.address(), address, "address of {secret}");
            assert_eq!(key.libp2p_keypair().public().to_peer_id(), key.peer_id());
            assert_eq!(key.secret_data(), secret);
        }
    }

    #[test]
    fn checksums_the_eip55_examples() {
        for example in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let mut bytes = [0u8; 20];
            hex::decode_to_slice(&example[2..], &mut bytes).unwrap();
            assert_eq!(checksum_address(&bytes), example);
        }
    }

    #[test]
    fn generates_distinct_keys_that_round_trip() {
        let first = MemberKey::generate();
        let second = MemberKey::generate();
        assert_ne!(first.secret_data(), second.secret_data());
        assert_ne!(first.peer_id(), second.peer_id());

        let data = first.secret_data();
        assert_eq!(data.len(), 64);
        assert!(
            data.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let again = MemberKey::from_secret_data(data.as_bytes()).unwrap();
        assert_eq!(again.secret_data(), data);
        assert_eq!(again.peer_id(), first.peer_id());
        assert_eq!(again.address(), first.address());
    }

    #[test]
    fn accepts_surrounding_whitespace_and_upper_case() {
        let (secret, peer_id, _) = VECTORS[2];
        let stored = format!("{secret}\n");
        let key = MemberKey::from_secret_data(stored.as_bytes()).unwrap();
        assert_eq!(key.peer_id_string(), peer_id);
        let key = MemberKey::from_hex(&format!("  {}\r\n", secret.to_uppercase())).unwrap();
        assert_eq!(key.peer_id_string(), peer_id);
    }

    #[test]
    fn debug_shows_the_identity_not_the_key() {
        let (secret, peer_id, address) = VECTORS[2];
        let shown = format!("{:?}", MemberKey::from_hex(secret).unwrap());
        assert!(!shown.contains(secret), "{shown}");
        assert!(
            shown.contains(peer_id) && shown.contains(address),
            "{shown}"
        );
    }

    /// Each malformed input with the problem it must be reported as.
    fn malformed() -> Vec<(String, KeyProblem)> {
        let key = VECTORS[2].0;
        vec![
            (key[..12].to_owned(), KeyProblem::Length(12)),
            (format!("{key}ab"), KeyProblem::Length(66)),
            (format!("0x{}", &key[2..]), KeyProblem::NotHex(1)),
            (format!("{}zz", &key[..62]), KeyProblem::NotHex(62)),
            (format!("{}é", &key[..63]), KeyProblem::NotHex(63)),
            ("0".repeat(64), KeyProblem::InvalidScalar),
            (CURVE_ORDER.to_owned(), KeyProblem::InvalidScalar),
            ("f".repeat(64), KeyProblem::InvalidScalar),
            (String::new(), KeyProblem::Length(0)),
        ]
    }

    #[test]
    fn rejects_malformed_keys_without_quoting_them() {
        for (input, problem) in malformed() {
            let err = MemberKey::from_hex(&input).unwrap_err();
            assert!(
                matches!(err, IdentityError::Malformed(found) if found == problem),
                "{input:?}: {err:?}"
            );
            let message = err.to_string();
            assert!(message.starts_with("identity key "), "{message}");
            if input.len() >= 8 {
                assert!(!message.contains(&input[2..10]), "{message}");
                assert!(!format!("{err:?}").contains(&input[2..10]), "{err:?}");
            }
        }
        let err = MemberKey::from_hex("abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "identity key is not 64 hex characters (got 3 characters)"
        );
    }

    #[test]
    fn rejects_secret_data_that_is_not_text() {
        let err = MemberKey::from_secret_data(&[0xff; 64]).unwrap_err();
        assert!(
            matches!(err, IdentityError::Malformed(KeyProblem::NotUtf8)),
            "{err:?}"
        );
    }

    #[test]
    fn loads_the_mounted_file() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (secret, peer_id, _) = VECTORS[1];
        let path = dir.join(PRIVATE_KEY_FILE);

        std::fs::write(&path, format!("{secret}\n")).unwrap();
        assert_eq!(MemberKey::load(dir).unwrap().peer_id_string(), peer_id);

        std::fs::write(&path, "0".repeat(64)).unwrap();
        let err = MemberKey::load(dir).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::MalformedFile {
                    problem: KeyProblem::InvalidScalar,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        std::fs::remove_file(&path).unwrap();
        let err = MemberKey::load(dir).unwrap_err();
        assert!(matches!(err, IdentityError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
