"""Runs pytest on the files given as arguments; used by every lab_py_test target.

Under `bazel test`, results also go to $XML_OUTPUT_FILE (JUnit XML) so tools/test_summary.py can
add up passed/failed/skipped over all targets.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    args = ["-q", "-rfEs", "-p", "no:cacheprovider"]
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
    sys.exit(pytest.main(args + sys.argv[1:]))
