"""Every number docs/results.md copies by hand is in a file it links.

The generated blocks (`<!-- name:begin -->` ... `<!-- name:end -->`) are
checked against fresh renderings by the benchmarks' tests. The tables and
sentences around them are copied by hand: each decimal number there must be
a value of a results file (`.md` or its `.json`) that its section links to,
at the digits shown, so that a rerun that changes a file cannot leave the
page stale unnoticed.
"""

import os
import re

from tests import testing

PAGE = os.path.join(testing.REPO, "docs", "results.md")
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _values(paths):
    values = []
    for path in paths:
        for name in {path, re.sub(r"\.md$", ".json", path)}:
            if os.path.isfile(name) and name.endswith((".md", ".json")):
                with open(name, encoding="utf-8") as f:
                    values += [float(v) for v in re.findall(NUMBER, f.read())]
    return values


def _sections():
    with open(PAGE, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", "", text,
                  flags=re.S)
    return re.split(r"\n(?=##+ )", text)


def test_hand_copied_numbers_are_in_the_linked_files():
    checked, missing = 0, {}
    for section in _sections():
        links = re.findall(r"\]\((\.\./benchmarks/results/[^)#\s]+)\)", section)
        values = _values([os.path.normpath(os.path.join(testing.REPO, "docs",
                                                        link))
                          for link in links])
        for number in re.findall(r"(?<![\w.-])(\d+\.\d+)(?![\w.])", section):
            checked += 1
            digits = len(number.split(".")[1])
            if not any(abs(v - float(number)) <= 0.5 * 10 ** -digits + 1e-12
                       for v in values):
                missing.setdefault(section.splitlines()[0], []).append(number)
    assert checked > 100  # the page still holds its hand-made tables
    assert not missing, missing
