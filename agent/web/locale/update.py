"""Extract the page's words, merge them into the catalogues, compile them (``make web-messages``).

Run from the repository root: ``.venv/bin/python agent/web/locale/update.py``. New words come
into each ``messages.po`` untranslated; a translator fills them in and runs it again, which
compiles the ``.mo`` files the page reads (both are committed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
LANGUAGES = ("de", "nl")


def main() -> None:
    pybabel = str(Path(sys.executable).with_name("pybabel"))
    pot = HERE / "messages.pot"
    subprocess.run([pybabel, "extract", "-F", str(HERE / "babel.cfg"), "--no-location",
                    "--sort-output", "--project", "coopwatt", "-o", str(pot), "."],
                   check=True)  # fmt: skip
    for language in LANGUAGES:
        subprocess.run([pybabel, "update", "-i", str(pot), "-d", str(HERE), "-l", language,
                        "--no-fuzzy-matching", "--ignore-obsolete", "--init-missing",
                        "--ignore-pot-creation-date"], check=True)  # fmt: skip
        subprocess.run([pybabel, "compile", "-d", str(HERE), "-l", language, "--statistics"],
                       check=True)  # fmt: skip


if __name__ == "__main__":
    main()
