#!/usr/bin/env python3
"""Writes the small ONNX fixtures of tests/onnx.rs and tests/verify.rs, with their outputs computed by onnxruntime.

The tests never run Python: this script made the files in tests/fixtures/onnx/, which are committed. To make them
again (needs `pip install onnx onnxruntime numpy`, e.g. in a scratch virtual environment outside the repository):

    python3 scripts/make_onnx_fixtures.py tests/fixtures/onnx

- tiny_conv.onnx: input [1, 3, 8, 8]; per-channel normalisation (Sub, Div by constants), Conv (padding 1), a
  BatchNormalization, Relu, a residual Add of two computed tensors, AveragePool, a stride-2 Conv on an even size,
  Reshape to [1, -1] through a Constant, Dropout, Identity, Gemm (transB = 1), MatMul + Add: 5 outputs.
- tiny_fc.onnx: input [1, 6]; Gemm with transB = 0, alpha 0.5 and beta 2, Relu, Gemm, Relu, Gemm: 3 outputs.
- *.json: {"inputs": [[...], ...], "outputs": [[...], ...]} in row-major order, outputs from onnxruntime.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def conv_model(rng):
    c, h = 3, 8
    inits = [
        init("mean", np.array([0.4914, 0.4822, 0.4465]).reshape(1, 3, 1, 1)),
        init("std", np.array([0.247, 0.243, 0.261]).reshape(1, 3, 1, 1)),
        init("conv1.weight", rng.normal(0, 0.4, (4, c, 3, 3))),
        init("conv1.bias", rng.normal(0, 0.1, 4)),
        init("bn.scale", rng.uniform(0.5, 1.5, 4)),
        init("bn.bias", rng.normal(0, 0.1, 4)),
        init("bn.mean", rng.normal(0, 0.1, 4)),
        init("bn.var", rng.uniform(0.5, 1.5, 4)),
        init("conv2.weight", rng.normal(0, 0.3, (4, 4, 3, 3))),
        init("conv2.bias", rng.normal(0, 0.1, 4)),
        init("down.weight", rng.normal(0, 0.3, (6, 4, 2, 2))),
        init("down.bias", rng.normal(0, 0.1, 6)),
        init("fc1.weight", rng.normal(0, 0.3, (16, 6 * 2 * 2))),
        init("fc1.bias", rng.normal(0, 0.1, 16)),
        init("fc2.weight", rng.normal(0, 0.3, (16, 5))),
        init("fc2.bias", rng.normal(0, 0.1, 5)),
    ]
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape_value")
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centered"], name="center"),
        helper.make_node("Div", ["centered", "std"], ["normalized"], name="scale"),
        helper.make_node("Conv", ["normalized", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"],
                         name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["r2"], name="relu2"),
        helper.make_node("AveragePool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "down.weight", "down.bias"], ["d"], name="down",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["d"], ["r3"], name="relu3"),
        helper.make_node("Constant", [], ["shape"], name="shape_const", value=shape),
        helper.make_node("Reshape", ["r3", "shape"], ["flat"], name="flat"),
        helper.make_node("Dropout", ["flat"], ["dropped"], name="drop"),
        helper.make_node("Gemm", ["dropped", "fc1.weight", "fc1.bias"], ["f1"], name="fc1", transB=1),
        helper.make_node("Relu", ["f1"], ["r4"], name="relu4"),
        helper.make_node("Identity", ["r4"], ["r4i"], name="ident"),
        helper.make_node("MatMul", ["r4i", "fc2.weight"], ["mm"], name="fc2"),
        helper.make_node("Add", ["mm", "fc2.bias"], ["logits"], name="fc2_bias"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, h])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make_onnx_fixtures")


def fc_model(rng):
    inits = [
        init("l1.weight", rng.normal(0, 0.6, (6, 12))),  # [in, out]: transB = 0
        init("l1.bias", rng.normal(0, 0.1, 12)),
        init("l2.weight", rng.normal(0, 0.4, (12, 12))),
        init("l2.bias", rng.normal(0, 0.1, 12)),
        init("l3.weight", rng.normal(0, 0.4, (3, 12))),
        init("l3.bias", rng.normal(0, 0.1, 3)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "l1.weight", "l1.bias"], ["h1"], name="l1", alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["h1"], ["a1"], name="a1"),
        helper.make_node("Gemm", ["a1", "l2.weight", "l2.bias"], ["h2"], name="l2", transB=1),
        helper.make_node("Relu", ["h2"], ["a2"], name="a2"),
        helper.make_node("Gemm", ["a2", "l3.weight", "l3.bias"], ["y"], name="l3", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make_onnx_fixtures")


def write(out, name, model, inputs):
    onnx.checker.check_model(model)
    path = os.path.join(out, name + ".onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    ins, outs = [], []
    for x in inputs:
        y = sess.run(None, {iname: x.astype(np.float32)})[0]
        ins.append([float(v) for v in x.astype(np.float32).ravel()])
        outs.append([float(v) for v in y.ravel()])
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump({"inputs": ins, "outputs": outs}, f)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/onnx"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(15)
    write(out, "tiny_conv", conv_model(rng), [rng.uniform(0, 1, (1, 3, 8, 8)) for _ in range(3)])
    write(out, "tiny_fc", fc_model(rng), [rng.uniform(-1, 1, (1, 6)) for _ in range(3)])


if __name__ == "__main__":
    main()
