"""Write a committed Hugging Face fixture as a Mesh-TensorFlow T5 checkpoint (a TF tensor bundle).

    python scripts/make_tf_checkpoint.py FIXTURE_DIR OUT_DIR [--step N] [--shards K] [--rms-norm]
    python scripts/make_tf_checkpoint.py --verify FIXTURE_DIR OUT_DIR
    python scripts/make_tf_checkpoint.py --partitioned - OUT_DIR

Needs TensorFlow, which is not part of cbqa's venv: run it from a throwaway venv
(`python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu safetensors`).
The tests read the committed output and need no TensorFlow. The committed fixtures were made with

    python scripts/make_tf_checkpoint.py tests/fixtures/t5_v1_0 tests/fixtures/tf_bundle/t5_v1_0
    python scripts/make_tf_checkpoint.py tests/fixtures/t5_v1_1 tests/fixtures/tf_bundle/t5_v1_1 --shards 2 --rms-norm \\
        --step 2000
    python scripts/make_tf_checkpoint.py --partitioned - tests/fixtures/tf_bundle/partitioned

(TensorFlow 2.21.0, tensorflow-cpu from PyPI), and each of the first two checked with --verify.

OUT_DIR receives what a Mesh-TF run directory holds:
  checkpoint                          `model_checkpoint_path: "model.ckpt-N"` (relative paths)
  model.ckpt-N.index                  the bundle's table (tensor name -> BundleEntryProto)
  model.ckpt-N.data-0000i-of-0000K    the tensor bytes (K = --shards; `tf.compat.v1.train.Saver`
                                      with sharded=True and one CPU device per shard)
  operative_config.gin                the gin bindings Mesh-TF's T5 writes, from config.json
(no tokenizer: Mesh-TF keeps the sentencepiece model elsewhere; the tests copy the fixture's
tokenizer.json in when they open the directory as a ModelDir).

Variables are named as Mesh-TF's T5 names them (`shared/embedding`,
`encoder/block_000/layer_000/SelfAttention/q`, `.../layer_001/DenseReluDense/wi_0/kernel`,
`encoder/final_layer_norm/scale` or with --rms-norm `encoder/block_000/layer_000/rms_norm/scale`
and `encoder/rms_norm/scale`, `decoder/logits/kernel`), weights in TF's [in, out] layout (the
transpose of torch's nn.Linear weight; `relative_attention_bias` as [heads, buckets]), plus what a
training run leaves beside them and a reader must skip: `global_step` (int64) and Adafactor slot
variables (`..._slot_vc`, `..._slot_vr`, `..._slot_v`).

--partitioned writes a bundle of one partitioned variable, `shared/embedding` [8, 4] saved as two
slices (`tf.compat.v1.fixed_size_partitioner(2)`), which a reader of whole tensors must refuse.

--verify loads OUT_DIR's checkpoint with transformers' own `load_tf_weights_in_t5` into a
`T5ForConditionalGeneration` of FIXTURE_DIR's config and checks every tensor equals the fixture's
model.safetensors bit for bit (needs torch and transformers next to TensorFlow).
"""

import argparse
import json
import os
import re
import sys

import numpy as np


def tf_name(hf_name, rms_norm):
    """The Mesh-TF variable name of a Hugging Face T5 tensor, and whether TF stores it transposed."""
    if hf_name == "shared.weight":
        return "shared/embedding", False
    if hf_name == "lm_head.weight":
        return "decoder/logits/kernel", True
    m = re.fullmatch(r"(encoder|decoder)\.final_layer_norm\.weight", hf_name)
    if m:
        return f"{m[1]}/{'rms_norm' if rms_norm else 'final_layer_norm'}/scale", False
    m = re.fullmatch(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight", hf_name)
    if not m:
        raise ValueError(f"no Mesh-TF name for {hf_name}")
    stack, block, layer, module = m[1], int(m[2]), int(m[3]), m[4]
    prefix = f"{stack}/block_{block:03d}/layer_{layer:03d}"
    if module == "layer_norm":
        return f"{prefix}/{'rms_norm' if rms_norm else 'layer_norm'}/scale", False
    parts = module.split(".")
    if parts[0] in ("SelfAttention", "EncDecAttention"):
        return f"{prefix}/{parts[0]}/{parts[1]}", True
    if parts[0] == "DenseReluDense":
        return f"{prefix}/DenseReluDense/{parts[1]}/kernel", True
    raise ValueError(f"no Mesh-TF name for {hf_name}")


def gin_text(cfg):
    """An operative_config.gin with the bindings Mesh-TF's T5 writes, for the config `cfg`."""
    ff = cfg["feed_forward_proj"]
    activation = {"relu": "'relu'", "gated-gelu": "['gelu', 'linear']", "gated-relu": "['relu', 'linear']"}[ff]
    tied = cfg.get("tie_word_embeddings", True)
    dec_layers = cfg.get("num_decoder_layers") or cfg["num_layers"]
    lines = [
        "import mesh_tensorflow.optimize",
        "import mesh_tensorflow.transformer.transformer",
        "import mesh_tensorflow.transformer.transformer_layers",
        "import t5.models.mesh_transformer",
        "",
        "# Macros:",
        "# " + "=" * 78,
        f"d_ff = {cfg['d_ff']}",
        f"d_kv = {cfg['d_kv']}",
        f"d_model = {cfg['d_model']}",
        f"dropout_rate = {cfg['dropout_rate']}",
        "inputs_length = 512",
        "MIXTURE_NAME = 'natural_questions_open'",
        f"num_heads = {cfg['num_heads']}",
        f"num_layers = {cfg['num_layers']}",
        "",
        "# Parameters for AdafactorOptimizer:",
        "# " + "=" * 78,
        "AdafactorOptimizer.beta1 = 0.0",
        "AdafactorOptimizer.decay_rate = None",
        "AdafactorOptimizer.epsilon1 = 1e-30",
        "AdafactorOptimizer.factored = True",
        "",
    ]
    for stack in ("decoder", "encoder"):
        lines += [
            f"# Parameters for {stack}/DenseReluDense:",
            "# " + "=" * 78,
            f"{stack}/DenseReluDense.activation = {activation}",
            f"{stack}/DenseReluDense.dropout_rate = %dropout_rate",
            f"{stack}/DenseReluDense.hidden_size = %d_ff",
            f"{stack}/DenseReluDense.use_bias = False",
            "",
        ]
    layers = {
        "decoder": ["SelfAttention", "EncDecAttention", "DenseReluDense"],
        "encoder": ["SelfAttention", "DenseReluDense"],
    }
    depth = {"decoder": dec_layers if dec_layers != cfg["num_layers"] else "%num_layers", "encoder": "%num_layers"}
    for stack in ("decoder", "encoder"):
        refs = [f"@mesh_tensorflow.transformer.transformer_layers.{name}" for name in layers[stack]]
        lines += [
            f"# Parameters for {stack}/make_layer_stack:",
            "# " + "=" * 78,
            f"{stack}/make_layer_stack.block_scope = True",
            f"{stack}/make_layer_stack.layers = \\",
            "    [" + ",\n     ".join(refs) + "]",
            f"{stack}/make_layer_stack.num_layers = {depth[stack]}",
            "",
        ]
    for stack in ("decoder", "encoder"):
        lines += [
            f"# Parameters for {stack}/SelfAttention:",
            "# " + "=" * 78,
            f"{stack}/SelfAttention.attention_func = None",
            f"{stack}/SelfAttention.dropout_rate = %dropout_rate",
            f"{stack}/SelfAttention.key_value_size = %d_kv",
            f"{stack}/SelfAttention.num_heads = %num_heads",
            f"{stack}/SelfAttention.relative_attention_num_buckets = {cfg['relative_attention_num_buckets']}",
            f"{stack}/SelfAttention.relative_attention_type = 'bias_shared'",
            f"{stack}/SelfAttention.shared_kv = False",
            "",
        ]
    lines += [
        "# Parameters for sublayer_rms_norm:",
        "# " + "=" * 78,
        f"sublayer_rms_norm.epsilon = {cfg['layer_norm_epsilon']}",
        "sublayer_rms_norm.name = 'rms_norm'",
        "",
    ]
    for stack in ("decoder", "encoder"):
        lines += [
            f"# Parameters for {stack}/Unitransformer:",
            "# " + "=" * 78,
            f"{stack}/Unitransformer.d_model = %d_model",
            f"{stack}/Unitransformer.positional_embedding = False",
            f"{stack}/Unitransformer.shared_embedding_and_softmax_weights = {tied}",
            f"{stack}/Unitransformer.vocab_divisor = 128",
            "",
        ]
    return "\n".join(lines)


def slot_variables(weights):
    """Adafactor slots of a few variables and global_step, as a Mesh-TF training run leaves them."""
    q = weights["encoder/block_000/layer_000/SelfAttention/q"]
    embedding = weights["shared/embedding"]
    norm = next(n for n in sorted(weights) if n.startswith("encoder/block_000/layer_000/") and n.endswith("/scale"))
    return {
        "encoder/block_000/layer_000/SelfAttention/q_slot_vc": np.full(q.shape[1], 0.25, np.float32),
        "encoder/block_000/layer_000/SelfAttention/q_slot_vr": np.full(q.shape[0], 0.5, np.float32),
        "shared/embedding_slot_vc": np.full(embedding.shape[1], 0.125, np.float32),
        norm + "_slot_v": np.ones(weights[norm].shape, np.float32),
        "global_step": np.int64(1000),
    }


def mesh_tf_weights(fixture, rms_norm):
    from safetensors.numpy import load_file

    weights = {}
    for hf, array in load_file(os.path.join(fixture, "model.safetensors")).items():
        name, transpose = tf_name(hf, rms_norm)
        weights[name] = np.ascontiguousarray(array.T if transpose else array)
    return weights


def save_bundle(weights, out, step, shards):
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        variables = {}
        for i, (name, value) in enumerate(sorted(weights.items())):
            with tf.device(f"/cpu:{i % shards}"):
                variables[name] = tf.compat.v1.Variable(value, name=name.replace("/", "__"))
        saver = tf.compat.v1.train.Saver(variables, sharded=shards > 1, save_relative_paths=True)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": shards})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step, write_meta_graph=False)


def save_partitioned(out):
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        var = tf.compat.v1.get_variable(
            "shared/embedding",
            shape=[8, 4],
            initializer=tf.compat.v1.ones_initializer(),
            partitioner=tf.compat.v1.fixed_size_partitioner(2),
        )
        saver = tf.compat.v1.train.Saver([var], save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=1, write_meta_graph=False)


def make(args):
    with open(os.path.join(args.fixture, "config.json")) as f:
        cfg = json.load(f)
    weights = mesh_tf_weights(args.fixture, args.rms_norm)
    weights.update(slot_variables(weights))
    os.makedirs(args.out, exist_ok=True)
    save_bundle(weights, args.out, args.step, args.shards)
    with open(os.path.join(args.out, "operative_config.gin"), "w") as f:
        f.write(gin_text(cfg))
    print(f"wrote {args.out}: {sorted(os.listdir(args.out))}")


def verify(args):
    """transformers' load_tf_weights_in_t5 on OUT_DIR equals the fixture's tensors bit for bit."""
    import torch
    from safetensors.numpy import load_file
    from transformers import T5Config, T5ForConditionalGeneration
    from transformers.models.t5.modeling_t5 import load_tf_weights_in_t5

    config = T5Config.from_pretrained(args.fixture)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    load_tf_weights_in_t5(model, config, os.path.join(args.out, "model.ckpt-%d" % args.step))
    state = model.state_dict()
    reference = load_file(os.path.join(args.fixture, "model.safetensors"))
    for name, expected in sorted(reference.items()):
        got = state[name].numpy()
        if got.shape != expected.shape or got.tobytes() != expected.tobytes():
            sys.exit(f"MISMATCH {name}: {got.shape} vs {expected.shape}")
    print(f"transformers load_tf_weights_in_t5: {len(reference)} tensors equal bit for bit")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture")
    parser.add_argument("out")
    parser.add_argument("--step", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--rms-norm", action="store_true", help="name layer norms rms_norm (T5.1.1 style)")
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--partitioned", action="store_true")
    args = parser.parse_args()
    if args.partitioned:
        os.makedirs(args.out, exist_ok=True)
        save_partitioned(args.out)
    elif args.verify:
        verify(args)
    else:
        make(args)


if __name__ == "__main__":
    main()
