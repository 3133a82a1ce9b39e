"""`medplib bench moe` / `medplib bench generate` at toy size: JSON shape and exact FLOP counts."""

from __future__ import annotations

import json

import pytest

from medplib.cli import main


def _bench(capsys, *argv: str) -> dict:
    code = main(["bench", *argv])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    return json.loads(cap.out)


def test_moe_quick_reports_flops_wall_and_ratios(capsys):
    doc = _bench(capsys, "moe", "--json", "--quick")
    assert doc["benchmark"] == "moe"
    for name in ("dense", "moe"):
        assert set(doc["flops"][name]) == {"prefill", "decode_token"}
        assert doc["wall"][name]["prefill_s"] > 0 and doc["wall"][name]["decode_token_s"] > 0
    assert set(doc["ratios"]) == {
        "flops_prefill",
        "flops_decode_token",
        "wall_prefill",
        "wall_decode_token",
        "cpu_prefill",
        "cpu_decode_token",
    }
    for name in ("dense", "moe"):
        cpu = doc["cpu_time"][name]
        assert cpu["prefill_cpu_s"] > 0 and cpu["decode_token_cpu_s"] > 0
    assert isinstance(doc["meets_targets"]["wall"], bool)
    assert doc["machine"]["torch_threads"] == 2
    assert set(doc["ffn_layer"]) == {"decode_1_token", f"prefill_{doc['prompt_tokens']}_tokens"}
    shares = doc["moe_prompt_expert_share"]
    assert len(shares) == doc["settings"]["size"]["num_layers"]
    assert all(abs(sum(s) - 1) < 1e-9 for s in shares)

    # Dense FLOPs follow from the shapes: per token and layer 4 D×D attention projections and
    # 3 D×F FFN matrices (2 FLOPs per multiply-add), and the LM head on the last position. The
    # RoPE angles are an elementwise product in transformers 5, which the counter (matrix
    # products only) does not see.
    size = doc["settings"]["size"]
    d, f, layers, v = (
        size[k] for k in ("hidden_size", "intermediate_size", "num_layers", "vocab_size")
    )
    per_token = layers * 2 * (4 * d * d + 3 * d * f)
    dense = doc["flops"]["dense"]
    if doc["flops_include_attention_scores"]:
        assert dense["prefill"] > doc["prompt_tokens"] * per_token + 2 * d * v
    else:
        assert dense["prefill"] == doc["prompt_tokens"] * per_token + 2 * d * v
        assert dense["decode_token"] == per_token + 2 * d * v
    # Top-1 routing: one expert per token, plus a D×2 router.
    moe = doc["flops"]["moe"]
    assert moe["decode_token"] == dense["decode_token"] + layers * 2 * d * 2
    assert 1.0 < doc["ratios"]["flops_prefill"] <= 1.01
    assert doc["meets_targets"]["flops"] is True


def test_generate_quick_reports_cache_speed_and_memory(capsys):
    doc = _bench(capsys, "generate", "--json", "--quick", "--new-tokens", "3")
    assert doc["benchmark"] == "generate"
    assert set(doc["sizes"]) == {"tiny", "mid"}
    for entry in doc["sizes"].values():
        assert entry["new_tokens"] == 3 and entry["prompt_tokens"] > 3
        assert entry["llm"]["num_experts"] == 2
        for mode in ("kv_cache", "no_cache"):
            m = entry[mode]
            assert m["decode_tokens_per_s"] > 0 and m["end_to_end_tokens_per_s"] > 0
            assert m["decode_tokens_per_cpu_s"] > 0
            assert isinstance(m["peak_rss_delta_bytes"], int) and m["peak_rss_delta_bytes"] >= 0
            assert m["memory_method"].split("+")[0] in {"VmHWM", "ru_maxrss"}
        assert entry["speedup_decode"] == pytest.approx(
            entry["kv_cache"]["decode_tokens_per_s"] / entry["no_cache"]["decode_tokens_per_s"]
        )
    assert doc["sizes"]["mid"]["llm"]["hidden_size"] == doc["settings"]["mid"]["hidden_size"]
    assert doc["sizes"]["tiny"]["llm"]["hidden_size"] == 256  # the tiny preset


@pytest.mark.parametrize("argv", [["moe", "--repeats", "0"], ["generate", "--new-tokens", "1"]])
def test_bad_settings_exit_2(capsys, argv):
    assert main(["bench", *argv, "--quick"]) == 2
    assert "must be at least" in capsys.readouterr().err
