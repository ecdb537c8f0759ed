"""torch.hub entry points: ``torch.hub.load("<owner>/<repo>", "resnet20_pp", pretrained=True)``.

One entry point per model with pretrained weights (``torch.hub.list``); each is
``pushpull.create_model(name, pretrained=..., **options)``, so ``pretrained`` may also be a
weights name (``pushpull weights list``). From a clone without pushpull installed, the
clone's ``src/`` is put on the path first.
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "numpy", "safetensors", "tqdm"]

_SRC = Path(__file__).resolve().parent / "src"
if (_SRC / "pushpull").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from pushpull.models import create_model as _create_model  # noqa: E402
from pushpull.models.weights import DEFAULT as _DEFAULT  # noqa: E402


def _entry_point(name: str):
    def entry_point(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = (f"{name} (pushpull). pretrained=True: the original authors' CIFAR-10 weights "
                           f"({_DEFAULT[name]}); a string: those weights; options: as pushpull.create_model.")
    return entry_point


for _name in _DEFAULT:
    globals()[_name] = _entry_point(_name)
