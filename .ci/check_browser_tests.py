"""Fail CI unless the browser tests and the fault-injection tests ran and passed: a skipped one is a missing check,
not a pass (browser tests need Debian's Chromium; fault tests mount file systems and drop capabilities as root)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

REQUIRED = {"browser": ".e2e.", "fault-injection": ".test_fault_"}


def main(path: str) -> int:
    cases = list(ET.parse(path).getroot().iter("testcase"))
    status = 0
    for kind, marker in REQUIRED.items():
        mine = [c for c in cases if marker in c.get("classname", "") + "."]
        skipped = [c for c in mine if c.find("skipped") is not None]
        failed = [c for c in mine if c.find("failure") is not None or c.find("error") is not None]
        print(f"{kind} tests: {len(mine)} run, {len(skipped)} skipped, {len(failed)} failed")
        if not mine:
            print(f"no {kind} test ran", file=sys.stderr)
            status = 1
        for case in skipped:
            message = case.find("skipped").get("message", "")  # type: ignore[union-attr]
            print(f"skipped {kind} test {case.get('name')}: {message}", file=sys.stderr)
        status = status or int(bool(skipped or failed))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
