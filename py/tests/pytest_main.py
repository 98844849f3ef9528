"""Runs pytest on the files given as arguments; used by every lab_py_test target."""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider"] + sys.argv[1:]))
