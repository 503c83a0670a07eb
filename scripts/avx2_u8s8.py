#!/usr/bin/env python3
"""ONNX Runtime's AVX2 u8s8 integer GEMM, written out as plain ONNX operators.

On x86 CPUs without VNNI, ONNX Runtime's MLAS runs MatMulInteger (and the DynamicQuantizeMatMul
it fuses into) with `vpmaddubsw`: four consecutive K values of a uint8 activation row are
broadcast, multiplied with four int8 weights of a column, and each *adjacent pair* of products is
added into a signed 16-bit lane with saturation; `vpmaddwd` with ones then adds the two 16-bit
lanes into int32 exactly (MLAS QgemmU8S8KernelAvx2.asm, MultiplyAccumulateRowU8S8Avx2). Zero
points are corrected afterwards from row and column sums, exactly. With VNNI (`vpdpbusd[s]`) the
four products go straight into int32 and nothing saturates.

`rewrite(model)` replaces every MatMulInteger by the same arithmetic in int32 operators:

    pair[..., m, j, n] = A[..., m, 2j] * B[2j, n] + A[..., m, 2j+1] * B[2j+1, n]
    Y = sum_j clip(pair, -32768, 32767) - a_zp * colsum(B) - b_zp * rowsum(A) + K * a_zp * b_zp

so any runtime (ONNX Runtime on a VNNI machine included) computes what the AVX2 kernel computes.
With `count_saturation=True` each replaced node also gets a float32 graph output
`saturated_pairs/<node>`: how many pairs left the int16 range on the inputs it ran on.

Usage: avx2_u8s8.py IN.onnx OUT.onnx [--count]   (the rewritten model is written self-contained)
       avx2_u8s8.py --self-test   (checks the rewrite against numpy and ONNX Runtime's own kernel)
"""
import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _const(graph_nodes, name, value):
    graph_nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name)))
    return name


def _initializers(model):
    return {i.name: i for i in model.graph.initializer}


def rewrite(model: onnx.ModelProto, count_saturation: bool = False) -> onnx.ModelProto:
    """A copy of `model` whose MatMulInteger nodes compute with AVX2's saturating pair sums."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = _initializers(model)
    nodes = []
    replaced = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            nodes.append(node)
            continue
        a, b = node.input[0], node.input[1]
        a_zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        b_zp = node.input[3] if len(node.input) > 3 and node.input[3] else None
        if b not in inits:
            raise SystemExit(f"{node.name}: weight input {b} is not an initializer (expected a constant [K, N] matrix)")
        k = inits[b].dims[0]
        # Node names need not be unique (scoped exporters reuse them): number the replacements.
        p = f"avx2/{replaced}/"
        new = []
        i32 = TensorProto.INT32
        new.append(helper.make_node("Cast", [a], [p + "a"], to=i32))
        new.append(helper.make_node("Cast", [b], [p + "b"], to=i32))
        a32, b32 = p + "a", p + "b"
        if k % 2:
            # MLAS pads K with zeros to its packing width; T5's K (d_model, d_ff, inner dim) is even.
            raise SystemExit(f"{node.name}: odd K={k} is not handled by this emulation")
        zero = _const(new, p + "zero", np.array([0], dtype=np.int64))
        one = _const(new, p + "one", np.array([1], dtype=np.int64))
        kk = _const(new, p + "k", np.array([k], dtype=np.int64))
        two = _const(new, p + "two", np.array([2], dtype=np.int64))
        last = _const(new, p + "last", np.array([-1], dtype=np.int64))
        first = _const(new, p + "first", np.array([0], dtype=np.int64))
        new.append(helper.make_node("Slice", [a32, zero, kk, last, two], [p + "ae"]))
        new.append(helper.make_node("Slice", [a32, one, kk, last, two], [p + "ao"]))
        new.append(helper.make_node("Slice", [b32, zero, kk, first, two], [p + "be"]))
        new.append(helper.make_node("Slice", [b32, one, kk, first, two], [p + "bo"]))
        new.append(helper.make_node("Unsqueeze", [p + "ae", last], [p + "ae4"]))
        new.append(helper.make_node("Unsqueeze", [p + "ao", last], [p + "ao4"]))
        new.append(helper.make_node("Mul", [p + "ae4", p + "be"], [p + "pe"]))
        new.append(helper.make_node("Mul", [p + "ao4", p + "bo"], [p + "po"]))
        new.append(helper.make_node("Add", [p + "pe", p + "po"], [p + "pair"]))
        hi = _const(new, p + "hi", np.array(32767, dtype=np.int32))
        lo = _const(new, p + "lo", np.array(-32768, dtype=np.int32))
        new.append(helper.make_node("Min", [p + "pair", hi], [p + "pair_hi"]))
        new.append(helper.make_node("Max", [p + "pair_hi", lo], [p + "pair_sat"]))
        pen = _const(new, p + "pen", np.array([-2], dtype=np.int64))
        new.append(helper.make_node("ReduceSum", [p + "pair_sat", pen], [p + "acc"], keepdims=0))
        out = p + "acc"
        if a_zp:
            new.append(helper.make_node("Cast", [a_zp], [p + "azp"], to=i32))
            new.append(helper.make_node("ReduceSum", [b32, first], [p + "colsum"], keepdims=0))
            new.append(helper.make_node("Mul", [p + "azp", p + "colsum"], [p + "acorr"]))
            new.append(helper.make_node("Sub", [out, p + "acorr"], [p + "acc_a"]))
            out = p + "acc_a"
        if b_zp:
            new.append(helper.make_node("Cast", [b_zp], [p + "bzp"], to=i32))
            new.append(helper.make_node("ReduceSum", [a32, last], [p + "rowsum"], keepdims=1))
            new.append(helper.make_node("Mul", [p + "rowsum", p + "bzp"], [p + "bcorr"]))
            new.append(helper.make_node("Sub", [out, p + "bcorr"], [p + "acc_b"]))
            out = p + "acc_b"
            if a_zp:
                kz = _const(new, p + "kz", np.array(k, dtype=np.int32))
                new.append(helper.make_node("Mul", [p + "azp", p + "bzp"], [p + "zz"]))
                new.append(helper.make_node("Mul", [p + "zz", kz], [p + "kzz"]))
                new.append(helper.make_node("Add", [out, p + "kzz"], [p + "acc_ab"]))
                out = p + "acc_ab"
        new.append(helper.make_node("Identity", [out], [node.output[0]]))
        if count_saturation:
            new.append(helper.make_node("Equal", [p + "pair", p + "pair_sat"], [p + "kept"]))
            new.append(helper.make_node("Not", [p + "kept"], [p + "clipped"]))
            new.append(helper.make_node("Cast", [p + "clipped"], [p + "clipped_f"], to=TensorProto.FLOAT))
            name = f"saturated_pairs/{replaced}/{node.name}"
            new.append(helper.make_node("ReduceSum", [p + "clipped_f"], [name], keepdims=0))
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
            total = f"pairs/{replaced}/{node.name}"
            new.append(helper.make_node("Size", [p + "pair"], [p + "size"]))
            new.append(helper.make_node("Cast", [p + "size"], [total], to=TensorProto.FLOAT))
            model.graph.output.append(helper.make_tensor_value_info(total, TensorProto.FLOAT, []))
        nodes.extend(new)
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # Shapes recorded by the producer (quantize_dynamic keeps stale ones) are re-inferred.
    del model.graph.value_info[:]
    if replaced == 0:
        raise SystemExit("no MatMulInteger node in the model: nothing to emulate")
    return model


def self_test():
    """The rewrite equals numpy's saturating pair sums on inputs that saturate, and ONNX Runtime's
    own MatMulInteger (with an activation zero point) on inputs that cannot."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    k, n = 8, 5
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "az"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 3, k]),
         helper.make_tensor_value_info("az", TensorProto.UINT8, [])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3, n])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    exact = ort.InferenceSession(model.SerializeToString())
    emulated = ort.InferenceSession(rewrite(model, True).SerializeToString())
    az = np.array(128, np.uint8)
    a = rng.integers(0, 256, (2, 3, k)).astype(np.uint8)
    y, saturated, pairs = emulated.run(None, {"a": a, "az": az})
    a64, w64 = a.astype(np.int64), w.astype(np.int64)
    pair = a64[..., 0::2, None] * w64[0::2] + a64[..., 1::2, None] * w64[1::2]
    want = np.clip(pair, -32768, 32767).sum(-2) - 128 * w64.sum(0)
    assert (y == want).all(), "rewrite differs from numpy's saturating pair sums"
    assert saturated == (pair != np.clip(pair, -32768, 32767)).sum() > 0, saturated
    small = (a // 4).astype(np.uint8)
    y_small, sat_small, _ = emulated.run(None, {"a": small, "az": az})
    assert sat_small == 0 and (y_small == exact.run(None, {"a": small, "az": az})[0]).all()
    print(f"self-test passed: {int(saturated)} of {int(pairs)} pairs saturated on full-range inputs, "
          "none and ONNX Runtime's exact result on small ones")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--count", action="store_true", help="add saturated_pairs/<node> outputs")
    args = ap.parse_args()
    model = onnx.load(args.input)
    out = rewrite(model, args.count)
    onnx.save(out, args.output)
    n = sum(1 for x in model.graph.node if x.op_type == "MatMulInteger")
    print(f"{args.output}: {n} MatMulInteger nodes as AVX2 u8s8 (saturating int16 pair sums)", file=sys.stderr)


if __name__ == "__main__":
    main()
