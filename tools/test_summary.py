#!/usr/bin/env python3
"""Adds up the pytest results of every `bazel test` target (their JUnit XML under bazel-testlogs)
and prints one closing line: `N passed, N failed, N skipped`, with the skip reasons above it."""

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def main(testlogs: str) -> int:
    passed = failed = skipped = 0
    reasons = Counter()
    for xml in sorted(Path(testlogs).rglob("test.xml")):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError:
            failed += 1
            continue
        for case in root.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None:
                skipped += 1
                reasons[case.find("skipped").get("message", "")] += 1
            else:
                passed += 1
    for reason, n in reasons.most_common():
        print(f"skipped {n}: {reason}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs"))
