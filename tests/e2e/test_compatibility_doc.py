"""docs/compatibility.md lists exactly the API keys and version ranges a running
broker advertises: the table under "## API versions" is compared with the broker's
answer to a raw ApiVersions v0 request, so the page cannot drift from the broker."""

from __future__ import annotations

import re
from pathlib import Path

import kproto

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"


def documented_ranges() -> dict:
    """{api_key: (name, min, max)} from the rows of the "API versions" table."""
    text = DOC.read_text()
    section = text.split("\n## API versions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*([^|]*?)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", line)
        if m:
            key = int(m.group(1))
            assert key not in rows, f"docs/compatibility.md lists API key {key} twice"
            rows[key] = (m.group(2), int(m.group(3)), int(m.group(4)))
    return rows


def test_compatibility_table_lists_exactly_the_advertised_versions(broker):
    with kproto.Conn(broker.host, broker.port, timeout=10) as conn:
        answer = kproto.api_versions(conn, 0)
    assert answer.error_code == 0, f"ApiVersions v0 answered {kproto.error_name(answer.error_code)}"
    advertised = answer.ranges  # {key: (min, max)}
    documented = documented_ranges()
    assert documented, "no rows found in the API versions table of docs/compatibility.md"

    differences = []
    for key in sorted(set(advertised) | set(documented)):
        if key not in documented:
            lo, hi = advertised[key]
            differences.append(f"key {key}: advertised v{lo}..v{hi}, missing from the table")
        elif key not in advertised:
            name, lo, hi = documented[key]
            differences.append(f"key {key} ({name}): in the table as v{lo}..v{hi}, not advertised")
        else:
            name, lo, hi = documented[key]
            if (lo, hi) != advertised[key]:
                a_lo, a_hi = advertised[key]
                differences.append(f"key {key} ({name}): table says v{lo}..v{hi}, "
                                   f"broker advertises v{a_lo}..v{a_hi}")
    assert not differences, ("docs/compatibility.md disagrees with the broker's ApiVersions answer:\n  "
                             + "\n  ".join(differences))
