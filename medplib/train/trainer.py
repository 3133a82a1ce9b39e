"""Run one training stage with `accelerate`: one CPU, one GPU, or many through `accelerate launch`.

Output folder of a stage::

    OUT/config.json, model.safetensors, tokenizer files   the finished checkpoint (HF layout)
    OUT/trainer_state.json                                stage, step, complete, speed
    OUT/train_config.yaml                                 the resolved stage config
    OUT/metrics.jsonl, OUT/loss_curves.png                training and validation curves
    OUT/checkpoints/step-NNNNNN/                          resumable: model, optimizer,
                                                          scheduler and RNG states
    OUT/tokenizer/                                        align only: the trained tokenizer

Resuming restores all of that and restarts the data stream at the saved micro-batch, so an
interrupted run continued with `--resume` ends with the same weights as one never stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers.models.llama.modeling_llama import LlamaAttention

from medplib.checkpoint import save_pretrained
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.train.attention_labels import (
    answer_query_positions,
    attention_label_loss,
    head_attention_logprobs,
)
from medplib.train.config import TrainConfig, dump_config
from medplib.train.data import BatchStream, RecordOrder, StreamSpec, corpus_texts, make_loader
from medplib.train.logbook import CURVES_NAME, METRICS_NAME, MetricsLog, plot_curves
from medplib.train.patch_labels import HEAD_NAME, PatchLabelHead, patch_label_loss
from medplib.train.preflight import (
    CHECKPOINTS_DIR,
    STATE_NAME,
    StagePlan,
    plan_stage,
    read_state,
)
from medplib.train.schedule import lr_factor
from medplib.train.stages import (
    build_stage_model,
    configure_trainable,
    merge_lora,
    micro_batch_losses,
    trainable_summary,
)
from medplib.train.validation import validate

TOKENIZER_DIR = "tokenizer"


@dataclass
class StageResult:
    """What a call to `run_stage` did."""

    stage: str
    out_dir: Path
    complete: bool  # the final checkpoint is written
    step: int = 0  # optimizer steps done in total
    total_steps: int = 0
    start_step: int = 0  # > 0 when resumed
    seconds: float = 0.0  # time in training steps during this call (no validation / saving)
    steps_per_second: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # last validation
    message: str = ""


class StageModule(nn.Module):
    """The model plus the stage's loss, so DDP / DeepSpeed see one forward per micro-batch.

    `patch_head` (training only) reads the CLIP patches of the model's own forward pass
    through a hook, so the tower runs once per micro-batch; the attention labels read the
    supervised layer's input and the model's expanded labels the same way.
    """

    def __init__(
        self, model: nn.Module, config: TrainConfig, patch_head: PatchLabelHead | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.patch_head = patch_head

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        hooks, seen = self._hooks(batch)
        try:
            parts = micro_batch_losses(self.model, batch, self.config)  # type: ignore[arg-type]
        finally:
            for hook in hooks:
                hook.remove()
        if "patches" in seen and self.patch_head is not None:
            loss = patch_label_loss(self.patch_head(seen["patches"]), batch["patch_labels"])
            parts["loss"] = parts["loss"] + self.config.patch_labels.weight * loss
            parts["patch"] = loss.detach()
        if "attention_input" in seen:
            a = self.config.attention_labels
            out = seen["output"]
            hidden, rotary = seen["attention_input"]
            logprobs = head_attention_logprobs(
                self._attention_module(),
                hidden,
                rotary,
                answer_query_positions(out.labels),
                a.head,
            )
            loss = attention_label_loss(logprobs, out.token_ids, batch["attention_labels"])
            parts["loss"] = parts["loss"] + a.weight * loss
            parts["attn"] = loss.detach()
        return parts

    def _attention_module(self) -> LlamaAttention:
        lm: Any = self.model.language_model
        return lm.model.layers[self.config.attention_labels.layer].self_attn

    def _hooks(self, batch: dict) -> tuple[list, dict]:
        seen: dict = {}
        hooks = []

        def first(key: str, value) -> None:
            seen.setdefault(key, value)  # the first call is the LM batch's

        if self.patch_head is not None and "patch_labels" in batch:
            hooks.append(
                self.model.vision_tower.register_forward_hook(  # type: ignore[union-attr]
                    lambda _m, _i, out: first("patches", out)  # (B, N, C)
                )
            )
        if self.config.attention_labels.weight > 0 and "attention_labels" in batch:
            hooks.append(
                self._attention_module().register_forward_pre_hook(
                    lambda _m, _a, kw: first(
                        "attention_input", (kw["hidden_states"], kw["position_embeddings"])
                    ),
                    with_kwargs=True,
                )
            )
            hooks.append(self.model.register_forward_hook(lambda _m, _i, out: first("output", out)))
        return hooks, seen


def total_steps(config: TrainConfig, epoch_length: int, world_size: int) -> int:
    loop = config.loop
    if loop.steps is not None:
        return loop.steps
    assert loop.epochs is not None
    per_step = loop.batch_size * loop.grad_accum * world_size
    return max(1, math.ceil(loop.epochs * epoch_length / per_step))


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def run_stage(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    init_dir: str | Path | None = None,
    experts: tuple[str | Path, str | Path] | None = None,
    resume: bool = False,
    export_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> StageResult:
    """Validate every input, then train the stage (see the module docstring for the output).

    `export_dir` also receives the final checkpoint in fp16 (for shipping). `stop_after`
    ends the call after that many optimizer steps with a checkpoint, as an interruption would.
    Raises `UserInputError` (nothing written) for bad input.
    """
    plan = plan_stage(
        config,
        data_dir,
        out_dir,
        init_dir=init_dir,
        experts=experts,
        resume=resume,
        export_dir=export_dir,
    )
    if plan.skip_message is not None:
        return StageResult(config.stage, plan.out_dir, complete=False, message=plan.skip_message)
    if plan.already_complete:
        state = read_state(plan.out_dir) or {}
        return StageResult(
            config.stage,
            plan.out_dir,
            complete=True,
            step=int(state.get("step", 0)),
            total_steps=int(state.get("total_steps", 0)),
            start_step=int(state.get("step", 0)),
            metrics=dict(state.get("metrics", {})),
            message=f"{plan.out_dir} already holds the finished {config.stage} run; nothing to do.",
        )
    return _train(plan, stop_after=stop_after, progress=progress)


def _patch_head(plan: StagePlan, model: MedPLIBForCausalLM) -> PatchLabelHead:
    """A fresh probe, or the previous stage's one when it has the same outputs and width."""
    assert plan.patch_labels is not None
    vision = model.config.vision
    outputs = plan.patch_labels.num_outputs(vision.image_size // vision.patch_size)
    head = PatchLabelHead(vision.hidden_size, outputs, seed=plan.config.seed)
    previous = plan.init_dir / HEAD_NAME if plan.init_dir is not None else None
    if previous is not None and previous.is_file():
        state = load_file(previous)
        mine = head.state_dict()
        if state.keys() == mine.keys() and all(state[k].shape == mine[k].shape for k in mine):
            head.load_state_dict(state)
    return head


def _tokenizer_for_align(plan: StagePlan, accelerator):
    from transformers import AutoTokenizer

    from medplib.tokenization import train_tokenizer

    path = plan.out_dir / TOKENIZER_DIR
    if accelerator.is_main_process and not (path / "tokenizer.json").is_file():
        sets = list(plan.train_sets.values()) + list(plan.sam_sets.values())
        tok = train_tokenizer(corpus_texts(sets), plan.config.model.vocab_size)
        tok.save_pretrained(str(path))
    accelerator.wait_for_everyone()
    # Always read it back, so a fresh and a resumed run use byte-identical tokenizers.
    return AutoTokenizer.from_pretrained(str(path))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def _save_checkpoint(accelerator, out: Path, step: int, grad_accum: int, keep: int) -> Path:
    """Resumable state in OUT/checkpoints/step-N (written under .tmp, then renamed)."""
    root = out / CHECKPOINTS_DIR
    final, tmp = root / f"step-{step:06d}", root / f"step-{step:06d}.tmp"
    main = accelerator.is_main_process
    if main and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process: each saves its own RNG state
    accelerator.wait_for_everyone()
    if main:
        _write_json(tmp / STATE_NAME, {"step": step, "micro_batch": step * grad_accum})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        done = sorted(
            (p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _train(plan: StagePlan, *, stop_after: int | None, progress: bool) -> StageResult:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    cfg, out = plan.config, plan.out_dir
    loop = cfg.loop
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(loop.mixed_precision),
        gradient_accumulation_steps=loop.grad_accum,
        # Region and mask modules sit idle in batches without regions or <SEG>.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)

    tokenizer = _tokenizer_for_align(plan, accelerator) if cfg.stage == "align" else None
    model, tokenizer = build_stage_model(cfg, tokenizer, plan.init_dir, plan.experts)
    lora_model = configure_trainable(model, cfg.train_modules, cfg.lora, cfg.seed)
    if loop.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    patch_head = _patch_head(plan, model) if plan.patch_labels is not None else None
    wrapper = StageModule(model, cfg, patch_head)
    params = [p for p in wrapper.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    )

    world = accelerator.num_processes
    order = plan.order
    assert order is not None  # plan_stage builds it
    steps = total_steps(cfg, order.epoch_length, world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s,
            steps,
            warmup_fraction=o.warmup_fraction,
            decay_fraction=o.decay_fraction,
            min_ratio=o.min_lr_ratio,
        ),
    )
    ds_plugin = accelerator.state.deepspeed_plugin
    if ds_plugin is not None:  # no prepared DataLoader to read these from
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = loop.batch_size
        ds_plugin.deepspeed_config["gradient_accumulation_steps"] = loop.grad_accum
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    sam_spec = None
    if plan.sam_sets:
        sam_order = RecordOrder(
            {t: len(d) for t, d in plan.sam_sets.items()}, {"grounding": 1.0}, cfg.seed + 1
        )
        sam_spec = StreamSpec(plan.sam_sets, sam_order, cfg.align.sam_batch_size)
    stream = BatchStream(
        StreamSpec(plan.train_sets, order, loop.batch_size),
        tokenizer,
        model.config,
        num_micro_batches=steps * loop.grad_accum,
        sam=sam_spec,
        max_length=cfg.data.max_length,
        rank=accelerator.process_index,
        world_size=world,
        patch_labels=plan.patch_labels,
        attention_labels=plan.attention_labels,
    )
    start = 0
    if plan.resume_from is not None:
        accelerator.load_state(str(plan.resume_from))
        start = int(json.loads((plan.resume_from / STATE_NAME).read_text())["step"])
    log = (
        MetricsLog(out / METRICS_NAME, resume_step=start if plan.resume_from else None)
        if main
        else None
    )
    val = {t: [d[i] for i in range(len(d))] for t, d in plan.val_sets.items()} if main else {}
    summary = trainable_summary(model)
    base_state = {
        "stage": cfg.stage,
        "config_fingerprint": cfg.fingerprint(),
        "total_steps": steps,
        "data_dir": str(plan.data_dir),
        "init": str(plan.init_dir) if plan.init_dir else None,
        "experts": [str(p) for p in plan.experts] if plan.experts else None,
        **summary,
    }
    if main and start == 0:
        _write_json(out / STATE_NAME, {**base_state, "step": 0, "complete": False})

    def save_checkpoint(step: int) -> None:
        _save_checkpoint(accelerator, out, step, loop.grad_accum, loop.keep_checkpoints)
        if main:
            _write_json(out / STATE_NAME, {**base_state, "step": step, "complete": False})
        accelerator.wait_for_everyone()

    def run_validation(step: int) -> dict[str, float]:
        if not main or not val:
            return {}
        inner = accelerator.unwrap_model(wrapper).model
        with accelerator.autocast():
            metrics = validate(
                inner,
                tokenizer,
                val,
                batch_size=loop.batch_size,
                device=accelerator.device,
                max_length=cfg.data.max_length,
            )
        assert log is not None
        log.write({"kind": "val", "step": step, **metrics})
        return metrics

    batches = iter(make_loader(stream, start * loop.grad_accum, cfg.data.num_workers))
    window: dict[str, list[float]] = defaultdict(list)
    bar = tqdm(
        total=steps,
        initial=start,
        desc=f"train {cfg.stage}",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    # CPU time next to wall time: on a shared machine it is the steadier measure of cost.
    step, train_s, cpu_s, metrics = start, 0.0, 0.0, {}
    grad_norm = float("nan")
    while step < steps:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(loop.grad_accum):
            batch = {k: b.to(accelerator.device) for k, b in next(batches).items()}
            with accelerator.accumulate(wrapper):
                parts = wrapper(batch)
                accelerator.backward(parts["loss"])
                if accelerator.sync_gradients and o.grad_clip > 0:
                    grad_norm = float(accelerator.clip_grad_norm_(params, o.grad_clip))
                optimizer.step()
                optimizer.zero_grad()
            for name, value in parts.items():
                window[name].append(float(value.detach()))
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scheduler.step()
        step += 1
        train_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        bar.update(1)
        if main and (step % loop.log_every == 0 or step == steps):
            means = {k: sum(v) / len(v) for k, v in window.items()}
            bar.set_postfix(loss=f"{means['loss']:.3f}")
            assert log is not None
            log.write(
                {
                    "kind": "train",
                    "step": step,
                    "samples": step * loop.batch_size * loop.grad_accum * world,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    **means,
                    "train_s": round(train_s, 3),
                    "cpu_s": round(cpu_s, 3),
                }
            )
            window.clear()
        if loop.eval_every and step % loop.eval_every == 0 and step < steps:
            metrics = run_validation(step)
        interrupted = stop_after is not None and step >= stop_after and step < steps
        if (
            step == steps
            or interrupted
            or (loop.checkpoint_every and step % loop.checkpoint_every == 0)
        ):
            save_checkpoint(step)
        if interrupted:
            bar.close()
            if main:
                plot_curves(out / METRICS_NAME, out / CURVES_NAME, f"{cfg.stage} (interrupted)")
            return StageResult(
                cfg.stage,
                out,
                complete=False,
                step=step,
                total_steps=steps,
                start_step=start,
                seconds=train_s,
                steps_per_second=(step - start) / max(train_s, 1e-9),
                metrics=metrics,
                message=f"stopped after step {step} of {steps}; continue with --resume",
            )
    bar.close()
    metrics = run_validation(step) or metrics
    speed = (step - start) / max(train_s, 1e-9)
    if main:
        final = merge_lora(accelerator.unwrap_model(wrapper).model, lora_model)
        final.config.trained = True
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else None
        save_pretrained(final, tokenizer, out, dtype=dtype)
        if patch_head is not None:
            save_file(accelerator.unwrap_model(wrapper).patch_head.state_dict(), out / HEAD_NAME)
        if plan.export_dir is not None:
            save_pretrained(final, tokenizer, plan.export_dir, dtype=torch.float16)
        _write_json(
            out / STATE_NAME,
            {
                **base_state,
                "step": step,
                "complete": True,
                "steps_per_second": speed,
                "metrics": metrics,
                # Samples longer than data.max_length, left out (counted in this process only).
                "skipped_samples": stream.skipped,
            },
        )
        plot_curves(
            out / METRICS_NAME,
            out / CURVES_NAME,
            f"{cfg.stage} ({cfg.model.name or cfg.model.preset})",
        )
    accelerator.wait_for_everyone()
    return StageResult(
        cfg.stage,
        out,
        complete=True,
        step=step,
        total_steps=steps,
        start_step=start,
        seconds=train_s,
        steps_per_second=speed,
        metrics=metrics,
    )
