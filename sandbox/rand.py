"""Deterministic randomness: every random choice derives from the seed and a label."""

import hashlib
import random


def derive(seed: int, *parts: object) -> int:
    """Returns a 64-bit integer that depends only on the seed and the labels."""
    text = "|".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def rng(seed: int, *parts: object) -> random.Random:
    """Returns a fresh Random seeded from the seed and the labels."""
    return random.Random(derive(seed, *parts))


def hex_bytes(r: random.Random, n: int) -> str:
    """Returns 0x + n random bytes as lowercase hex."""
    return "0x" + r.getrandbits(8 * n).to_bytes(n, "big").hex()


def address(r: random.Random) -> str:
    return hex_bytes(r, 20)


def token_id(r: random.Random) -> str:
    """Returns a realistic CLOB token id: a 77 or 78 digit decimal string."""
    digits = r.choice((77, 78, 78))
    low = 10 ** (digits - 1)
    if digits == 78:
        return str(r.randrange(low, 2**256 - 1))
    return str(r.randrange(low, 10**digits))
