"""The fit-vs-evaluate demo: small real images and the scenario on them.

- `frozenbn.demo.images`: the shipped source/target images
  (`load_demo_data`), how they were made (`build_demo_data`), oversampling,
  and a user's own class-per-subfolder images (`load_image_folder`).
- `frozenbn.demo.arms`: the ways of handling BatchNormalization compared.
- `frozenbn.demo.training`: the backbone, its source pretraining, the bug
  report's head, and the callbacks that record the curves.
- `frozenbn.demo.scenario`: the scenario end to end (`run_scenario`), used
  by `frozenbn demo` and `benchmarks/gap.py`.
- `frozenbn.demo.results` and `frozenbn.demo.plots`: what a run measured,
  as tables, JSON, markdown and PNG; `frozenbn.demo.machine`: the machine
  it ran on.
- `frozenbn.demo.command`: `run_demo`, what `frozenbn demo` runs.
"""

from frozenbn.demo.arms import ARMS
from frozenbn.demo.arms import DEMO_ARMS
from frozenbn.demo.command import run_demo
from frozenbn.demo.images import load_demo_data
from frozenbn.demo.images import load_image_folder
from frozenbn.demo.scenario import ScenarioConfig
from frozenbn.demo.scenario import run_scenario

__all__ = [
    "ARMS",
    "DEMO_ARMS",
    "ScenarioConfig",
    "load_demo_data",
    "load_image_folder",
    "run_demo",
    "run_scenario",
]
