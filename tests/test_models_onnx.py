"""CIFAR models export to ONNX and give the same predictions in onnxruntime."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from pushpull.models import create_model, list_models, model_info

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def export_and_compare(name: str, dynamo: bool, **kwargs) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # non-trivial BN statistics
    model.eval()
    x = torch.randn(6, 3, 32, 32)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=dynamo, input_names=["x"], output_names=["logits"],
                      **({} if dynamo else {"dynamic_axes": {"x": {0: "n"}}}))
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
    # float32 rounding scales with the logits (untrained deep networks reach thousands)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 + 1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("name, aa", [("resnet20_pp", 0), ("resnet20_b1", 2)])
def test_resnet20_pushpull_exports(name, aa):
    export_and_compare(name, dynamo=False, aa=aa)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).input_size == (3, 32, 32)])
@pytest.mark.parametrize("dynamo", [False, True])
def test_every_cifar_model_exports(name, dynamo):
    export_and_compare(name, dynamo=dynamo, aa=3 if name.startswith("resnet") else 0)
