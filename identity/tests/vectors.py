#!/usr/bin/env python3
"""Independent test vectors for swarm-identity (src/lib.rs hard-codes this script's output).

For each secret key it prints the libp2p PeerId and the EIP-55 Ethereum address, computed
without any of the Rust crates: secp256k1 arithmetic, the libp2p protobuf PublicKey, the
identity multihash and base58btc are written out here; keccak256 comes from pycryptodome
(`pip install pycryptodome`), because hashlib's sha3_256 is the NIST variant, not keccak.

Run: python3 identity/tests/vectors.py
"""

from Crypto.Hash import keccak

# secp256k1 domain parameters (SEC 2, section 2.4.1).
P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)


def point_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], -1, P) % P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return (x, (slope * (a[0] - x) - a[1]) % P)


def point_mul(k, point):
    result = None
    while k:
        if k & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        k >>= 1
    return result


def keccak256(data):
    return keccak.new(digest_bits=256, data=data).digest()


B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data):
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = B58_ALPHABET[digit] + out
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + out


def peer_id(public):
    x, y = public
    compressed = bytes([2 + (y & 1)]) + x.to_bytes(32, "big")
    # libp2p PublicKey protobuf: field 1 (Type, varint) = 2 (Secp256k1), field 2 (Data, bytes).
    protobuf = bytes([0x08, 0x02, 0x12, len(compressed)]) + compressed
    # Keys of at most 42 encoded bytes use the identity multihash: code 0x00, then the length.
    assert len(protobuf) <= 42
    multihash = bytes([0x00, len(protobuf)]) + protobuf
    return base58btc(multihash)


def eip55(address_bytes):
    lower = address_bytes.hex()
    digest = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(lower)
    )


def address(public):
    x, y = public
    uncompressed = x.to_bytes(32, "big") + y.to_bytes(32, "big")
    return eip55(keccak256(uncompressed)[-20:])


# Self-checks against published values, so a broken helper cannot produce plausible vectors.
assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
for example in [  # the EIP-55 specification's examples
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]:
    assert eip55(bytes.fromhex(example[2:])) == example, example
assert address(point_mul(1, G)) == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"

KEYS = [
    1,
    2,
    # The example key of the web3.js accounts documentation.
    0x4C0883A69102937D6231471B5DBB6204FE5129617082792AE468D01A3F362318,
    # The largest valid scalar.
    N - 1,
]

for secret in KEYS:
    public = point_mul(secret, G)
    print(f'("{secret:064x}", "{peer_id(public)}", "{address(public)}"),')
