"""The fit-vs-evaluate demo: small real images and the scenario on them.

- `frozenbn.demo.data`: the shipped source/target image patches
  (`load_demo_data`), how they were made (`build_demo_data`), and a user's
  own class-per-subfolder images (`load_image_folder`).
- `frozenbn.demo.scenario`: ResNet50 pretrained on the source domain and
  fine-tuned on the target domain, one arm per way of handling
  BatchNormalization (`run_scenario`), used by `frozenbn demo` and
  `benchmarks/gap.py`.
"""

from frozenbn.demo.data import load_demo_data
from frozenbn.demo.data import load_image_folder
from frozenbn.demo.scenario import ScenarioConfig
from frozenbn.demo.scenario import run_scenario

__all__ = [
    "ScenarioConfig",
    "load_demo_data",
    "load_image_folder",
    "run_scenario",
]
