"""Siemens CSA2 ("SV10") header encoding, for the private (0029,1010/1020) elements.

The layout is the one nibabel.nicom.csareader parses: a header, then per element a 64-byte name,
VM, VR, syngo data type, item count and a check word, then each item as four int32 (length,
length, 77, length) followed by its null-terminated text padded to four bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_CHECK = 77


def _item(text: str) -> bytes:
    raw = text.encode("latin-1") + b"\x00"
    pad = (-len(raw)) % 4
    return struct.pack("<4i", len(raw), len(raw), _CHECK, len(raw)) + raw + b"\x00" * pad


def encode_csa2(elements: Sequence[tuple[str, str, Sequence[object]]]) -> bytes:
    """Encode ``(name, vr, values)`` triples as a CSA2 header."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(elements), _CHECK)]
    for name, vr, values in elements:
        texts = [v if isinstance(v, str) else f"{v:.8f}" if isinstance(v, float) else str(v) for v in values]
        out.append(
            struct.pack("<64si4s3i", name.encode("latin-1"), len(texts), vr.encode("latin-1"), 0, len(texts), _CHECK)
        )
        out.extend(_item(t) for t in texts)
    return b"".join(out)


def ascconv(entries: dict[str, object]) -> str:
    """A MrPhoenixProtocol ASCCONV block from ``key: value`` entries (strings are quoted as Siemens does)."""
    lines = ["### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=51130001 ###"]
    for key, value in entries.items():
        text = f'""{value}""' if isinstance(value, str) and not value.startswith("0x") else str(value)
        lines.append(f"{key}\t = {text}")
    lines.append("### ASCCONV END ###")
    return "\n".join(lines) + "\n"
