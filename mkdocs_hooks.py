"""mkdocs hooks: publish the benchmark result files the docs link to.

Result files (markdown, PNG, JSON) are published as they are; the summary
blocks in the pages are generated from them by `benchmarks/gap.py --render
JSON --docs`, and `tests/test_gap_benchmark.py` checks they are current.

The pages link to `../benchmarks/...` so that they also work when read on a
code host; for the site those files are added under `benchmarks/` and the
links rewritten to point there.
"""

import os
import re

from mkdocs.structure.files import File

_ROOT = os.path.dirname(os.path.abspath(__file__))
_LINK = re.compile(r"\]\(\.\./benchmarks/")


def on_files(files, config):
    for folder in ("benchmarks/results", "benchmarks/gpu"):
        for name in sorted(os.listdir(os.path.join(_ROOT, folder))):
            if name.endswith((".md", ".png", ".json")):
                files.append(
                    File(
                        f"{folder}/{name}",
                        src_dir=_ROOT,
                        dest_dir=config["site_dir"],
                        use_directory_urls=config["use_directory_urls"],
                    )
                )
    return files


def on_page_markdown(markdown, page, config, files):
    return _LINK.sub("](benchmarks/", markdown)
