"""Copy the headline tables of benchmarks/results/*.md into README.md between the result markers.

    python benchmarks/update_readme.py

Each ``<!-- results:NAME -->`` ... ``<!-- /results -->`` block receives the first table of
``results/NAME.md`` (and the lines of its "Targets" section, if any) plus a link to the full file, so
the README never holds a number that a benchmark did not write.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
README = ROOT.parent / "README.md"


def excerpt(name: str) -> str:
    path = ROOT / "results" / f"{name}.md"
    if not path.is_file():
        return f"*Not measured yet: run `python benchmarks/{name}.py`.*"
    lines = path.read_text().splitlines()
    title = next((ln[2:] for ln in lines if ln.startswith("# ")), name)
    table, started = [], False
    for ln in lines:
        if ln.startswith("|"):
            table.append(ln)
            started = True
        elif started:
            break
    targets = []
    for i, ln in enumerate(lines):
        # the targets, and the extra experiments whose tables a reader of the README should see
        if ln == "## Targets" or ln.startswith(("## What was tried", "## Ablation", "## Pretrained knowledge")):
            body = []
            for nxt in lines[i + 1 :]:
                if nxt.startswith("## "):
                    break
                body.append(nxt)
            if ln != "## Targets":
                targets += [f"*{ln[3:]}*", ""]
            kept, gap = [], False  # table rows and list items; one blank line where prose was: tables stay apart
            for b in body:
                if b.startswith(("|", "- ")):
                    kept += [""] * (gap and bool(kept)) + [b]
                gap = not b.startswith(("|", "- "))
            targets += [*kept, ""]
    meta = [ln for ln in lines if ln.startswith("- date:") or ln.startswith("- machine:")]
    out = [f"**{title}** ([full results](benchmarks/results/{name}.md))", "", *table, ""]
    if targets:
        out += [*targets, ""]
    out += [m.replace("- ", "", 1) for m in meta]
    return "\n".join(out).strip()


def main() -> None:
    text = README.read_text()

    def fill(m: re.Match) -> str:
        return f"<!-- results:{m.group(1)} -->\n{excerpt(m.group(1))}\n<!-- /results -->"

    README.write_text(re.sub(r"<!-- results:(\w+) -->.*?<!-- /results -->", fill, text, flags=re.S))


if __name__ == "__main__":
    main()
