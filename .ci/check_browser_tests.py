"""Fail CI unless the browser tests ran and passed: a skipped browser test is a missing check, not a pass."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def main(path: str) -> int:
    cases = [c for c in ET.parse(path).getroot().iter("testcase") if ".e2e." in c.get("classname", "")]
    skipped = [c for c in cases if c.find("skipped") is not None]
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    print(f"browser tests: {len(cases)} run, {len(skipped)} skipped, {len(failed)} failed")
    if not cases:
        print("no browser test ran", file=sys.stderr)
        return 1
    for case in skipped:
        message = case.find("skipped").get("message", "")  # type: ignore[union-attr]
        print(f"skipped browser test {case.get('name')}: {message}", file=sys.stderr)
    return 1 if skipped or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
