"""benchmarks/gpu_7b.py on CPU: argument parsing, JSON writer, model materialisation, a tiny run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from script_helpers import load_benchmark

from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.presets import build_config


@pytest.fixture(scope="module")
def gpu_7b():
    return load_benchmark("gpu_7b")


def test_arguments(gpu_7b, capsys):
    args = gpu_7b.parse_args([])
    assert (args.preset, args.device, args.dtype) == ("medplib-7b-2e", "cuda", "auto")
    assert (args.question_tokens, args.new_tokens) == (64, 32)
    with pytest.raises(SystemExit) as exc:
        gpu_7b.parse_args(["--help"])
    assert exc.value.code == 0 and "--preset" in capsys.readouterr().out
    for bad in (["--new-tokens", "0"], ["--warmup", "-1"], ["--preset", "huge"]):
        with pytest.raises(SystemExit) as exc:
            gpu_7b.parse_args(bad)
        assert exc.value.code == 2
    assert gpu_7b.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert gpu_7b.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_json_writer_is_strict_and_writes_the_file(gpu_7b, tmp_path):
    result = {"a": 1.5, "nan": math.nan, "nested": {"inf": [math.inf, 2]}, "p": "x"}
    path = tmp_path / "deep" / "r.json"
    text = gpu_7b.write_json(result, path)
    assert json.loads(text) == {"a": 1.5, "nan": None, "nested": {"inf": [None, 2]}, "p": "x"}
    assert json.loads(path.read_text()) == json.loads(text)
    assert gpu_7b.write_json({"b": 1}, None) == '{\n  "b": 1\n}'


def test_7b_preset_materialises_in_bf16_without_host_copies(gpu_7b):
    # On the meta device nothing is allocated: this checks the full-size wiring on a laptop.
    model = gpu_7b.build_random_model("medplib-7b-2e", torch.device("meta"), torch.bfloat16, 0)
    params = dict(model.named_parameters())
    assert 11.6e9 < sum(p.numel() for p in params.values()) < 11.8e9
    routers = {n for n in params if n.endswith(".mlp.router.weight")}
    assert len(routers) == 32
    assert all(params[n].dtype == torch.float32 for n in routers)
    assert all(p.dtype == torch.bfloat16 for n, p in params.items() if n not in routers)
    assert model.config.seg_token_id == 32000


def test_tiny_model_buffers_match_a_normal_build(gpu_7b):
    model = gpu_7b.build_random_model("tiny", torch.device("cpu"), torch.float32, 0)
    reference = MedPLIBForCausalLM(build_config("tiny"))
    ref_buffers = dict(reference.named_buffers())
    for name, buf in model.named_buffers():
        if "positional_encoding_gaussian_matrix" in name:
            assert buf.shape == ref_buffers[name].shape and buf.std() > 0.5  # random N(0, 1)
        else:
            assert torch.equal(buf, ref_buffers[name]), name
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if name.endswith("layernorm.weight"):
            assert torch.equal(p, torch.ones_like(p))
        if p.ndim == 2 and p.numel() > 1000:
            assert 0.015 < float(p.detach().std()) < 0.025, name


def test_tiny_cpu_run_end_to_end(gpu_7b, tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = ["--device", "cpu", "--preset", "tiny", "--repeats", "2", "--warmup", "0"]
    argv += ["--new-tokens", "4", "--image-px", "96", "--out", str(out)]
    assert gpu_7b.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(out.read_text())
    assert "error" not in doc
    assert doc["prompt_tokens"] == 1 + 64 + 64  # BOS + 8x8 visual tokens + question
    assert doc["mask_hw"] == [96, 96] and doc["mask_finite"] is True
    assert len(doc["runs"]) == 2
    for key in ("encode_clip_s", "encode_sam_s", "prefill_s", "decode_s", "seg_decode_s"):
        assert doc["timings_median_s"][key] > 0
    assert doc["decode_tokens_per_s"] == pytest.approx(4 / doc["timings_median_s"]["decode_s"])
    assert doc["weights_bytes"] == 4 * doc["parameters"]
