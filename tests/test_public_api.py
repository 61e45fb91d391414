"""The package uses Lightning's public API; whatever private name it still needs lives in ``internals.py`` only."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_tutorial"
FENCED = PACKAGE / "internals.py"


def test_no_private_name_outside_the_fenced_module():
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    # Private names the package defines itself: its own functions, classes, attributes and module constants.
    own = {m for text in sources.values() for m in re.findall(r"(?:def |class |self\.|^)(_[A-Za-z]\w*)", text, re.M)}
    found = []
    for path, text in sources.items():
        if path == FENCED:
            continue
        used = re.findall(r"\.(_[A-Za-z]\w*)", text)  # attribute access: obj._name
        used += re.findall(r"import (_\w+)|from lightning\S*\._\w+", text)  # private imports
        used += re.findall(r"[\"'](_[a-z]\w*)[\"']", text)  # names handed to getattr/setattr as strings
        found += [f"{path.relative_to(PACKAGE)}: {name}" for name in used if name and name not in own
                  and not name.startswith("__")]
    assert not found, f"private names of other libraries outside {FENCED.name}: {found}"
