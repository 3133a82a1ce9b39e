"""`medplib bench moe` / `generate` / `predict` at toy size: JSON shape, exact FLOP counts and
per-question timings that add up."""

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


def test_predict_quick_times_every_question_of_the_demo_checkpoint(capsys):
    from medplib.bench.predict import QUICK, questions

    doc = _bench(capsys, "predict", "--json", "--quick", "--questions", "4", "--threads", "1")
    assert doc["benchmark"] == "predict" and doc["settings"]["questions"] == 4
    assert doc["checkpoint_id"]  # the served checkpoint names itself
    per, enc, ans = doc["per_question"], doc["encode"], doc["answer"]
    assert 0 < per["p50_s"] <= per["p95_s"] <= per["max_s"]
    # Each question's time is its encoding plus its answer, so the means add up.
    assert per["mean_s"] == pytest.approx(enc["mean_s"] + ans["mean_s"], rel=1e-6)
    assert set(doc["by_kind"]) == {"grounding", "closed"}
    asked = questions(QUICK.__class__(questions=4, warmup=0, image_size_px=64))
    assert [q for _, q, _, _ in asked][0].startswith("Please generate a mask that segments the ")
    assert doc["machine"]["torch_threads"] == 1
    # the shipped config averages each mask with its mirror's; the flag times the plain decode
    assert doc["flip_tta_min_agreement"] == 0.7 and doc["settings"]["mirror_tta"] is True
    plain = _bench(capsys, "predict", "--json", "--quick", "--questions", "2", "--no-mirror-tta")
    assert plain["flip_tta_min_agreement"] is None and plain["settings"]["mirror_tta"] is False
    assert plain["side_tta_max_margin"] is None


def test_predict_times_the_left_right_check_on_side_questions(capsys):
    doc = _bench(capsys, "predict", "--json", "--quick", "--questions", "4", "--side-questions")
    assert set(doc["by_kind"]) == {"grounding", "side"} and doc["side_tta_max_margin"] == 2.0
    # Every bare left/right answer to a side question is checked (overturned or not).
    assert doc["side_answers_checked"] == 2
    assert 0 <= doc["side_answers_overturned"] <= doc["side_answers_checked"]
    plain = _bench(
        capsys,
        "predict",
        "--json",
        "--quick",
        "--questions",
        "4",
        "--side-questions",
        "--no-mirror-tta",
    )
    assert plain["side_answers_checked"] == 0


def test_predict_counts_the_presence_checks_and_can_turn_them_off(capsys):
    doc = _bench(capsys, "predict", "--json", "--quick", "--questions", "6")
    assert doc["presence_check_max_margin"] == 0.5 and doc["settings"]["presence_check"]
    # Every bare yes/no answer to a presence question is weighed; only unsure ones are grounded.
    assert doc["presence_answers_checked"] == 3
    assert 0 <= doc["presence_answers_overturned"] <= doc["presence_answers_grounded"] <= 3
    plain = _bench(
        capsys, "predict", "--json", "--quick", "--questions", "6", "--no-presence-check"
    )
    assert plain["presence_check_max_margin"] is None
    assert plain["presence_answers_checked"] == 0


def test_predict_times_the_region_check_on_region_questions(capsys):
    doc = _bench(capsys, "predict", "--json", "--quick", "--questions", "4", "--region-questions")
    assert set(doc["by_kind"]) == {"grounding", "region"} and doc["region_check_max_margin"] == 4.0
    assert doc["region_answers_checked"] == 2 and doc["presence_answers_checked"] == 0
    assert 0 <= doc["region_answers_overturned"] <= doc["region_answers_grounded"] <= 2
    off = _bench(
        capsys,
        "predict",
        "--json",
        "--quick",
        "--questions",
        "4",
        "--region-questions",
        "--no-presence-check",
    )
    assert off["region_check_max_margin"] is None and off["region_answers_checked"] == 0


def test_predict_refuses_two_kinds_of_closed_question(capsys):
    argv = ["bench", "predict", "--quick", "--side-questions", "--region-questions"]
    assert main(argv) == 2
    assert "choose one" in capsys.readouterr().err


def test_predict_refuses_zero_questions(capsys):
    assert main(["bench", "predict", "--questions", "0", "--quick"]) == 2
    assert "--questions must be at least 1" in capsys.readouterr().err


def test_predict_can_ask_several_questions_about_each_image(capsys):
    from medplib.bench.predict import QUICK, questions

    settings = QUICK.__class__(questions=6, warmup=0, image_size_px=64, questions_per_image=3)
    asked = questions(settings)
    images = [image for image, _, _, _ in asked]
    assert images[0] is images[1] is images[2] and images[3] is not images[2]
    assert images[3] is images[4] is images[5]
    # Grounding and closed questions still alternate.
    assert [kind for _, _, kind, _ in asked] == ["grounding", "closed"] * 3
    doc = _bench(
        capsys, "predict", "--json", "--quick", "--questions", "6", "--questions-per-image", "3"
    )
    assert doc["settings"]["questions_per_image"] == 3
    # Only the first question about an image pays for its encoding.
    assert doc["encode"]["p50_s"] < 1e-3 < doc["encode"]["max_s"]
    assert main(["bench", "predict", "--json", "--quick", "--questions-per-image", "0"]) == 2
    assert "--questions-per-image must be at least 1" in capsys.readouterr().err


def test_predict_can_run_every_prompt_whole(capsys):
    doc = _bench(capsys, "predict", "--json", "--quick", "--questions", "4", "--no-prompt-reuse")
    reused = _bench(capsys, "predict", "--json", "--quick", "--questions", "4")
    assert doc["settings"]["reuse_prompt_start"] is False
    assert reused["settings"]["reuse_prompt_start"] is True
    # The same answers either way: only the time differs.
    for key in ("answer_tokens_mean", "answers_with_a_mask", "presence_answers_overturned"):
        assert doc[key] == reused[key]
