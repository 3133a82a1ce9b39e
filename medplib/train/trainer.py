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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase
from transformers.models.llama.modeling_llama import LlamaAttention

from medplib.checkpoint import save_pretrained
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.train.attention_labels import (
    answer_query_positions,
    attention_label_loss,
    head_attention_logprobs,
)
from medplib.train.config import LoopSection, TrainConfig, dump_config
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

if TYPE_CHECKING:  # accelerate is imported when a stage runs, not when this module loads
    from accelerate import Accelerator

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


@dataclass
class _Run:
    """What `_setup` builds once and every later piece of the loop reads."""

    plan: StagePlan
    accelerator: Accelerator
    model: MedPLIBForCausalLM  # unwrapped, as built (LoRA adapters injected in place)
    lora_model: object | None  # peft's handle, kept to merge the adapters at the end
    tokenizer: PreTrainedTokenizerBase
    patch_head: PatchLabelHead | None
    wrapper: nn.Module  # `StageModule`, prepared by accelerate (DDP / DeepSpeed)
    params: list[nn.Parameter]  # the trainable ones: what gradient clipping sees
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    stream: BatchStream
    steps: int  # optimizer steps of the whole stage
    start: int  # optimizer steps done before this call (0 unless resumed)
    log: MetricsLog | None  # main process only
    val: dict[str, list]  # validation samples per task; main process only
    base_state: dict[str, Any]  # the trainer_state.json fields that never change

    @property
    def cfg(self) -> TrainConfig:
        return self.plan.config

    @property
    def out(self) -> Path:
        return self.plan.out_dir

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)


@dataclass
class _Tally:
    """Counters carried from one optimizer step to the next."""

    step: int
    train_s: float = 0.0  # wall time in training steps (no validation / saving)
    # CPU time next to wall time: on a shared machine it is the steadier measure of cost.
    cpu_s: float = 0.0
    grad_norm: float = float("nan")  # NaN until gradients are first clipped
    metrics: dict[str, float] = field(default_factory=dict)  # the last validation
    # Loss parts of the micro-batches since the last log line, averaged when it is written.
    window: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _train(plan: StagePlan, *, stop_after: int | None, progress: bool) -> StageResult:
    """Optimizer steps until the stage ends (final checkpoint) or `stop_after` (resumable one)."""
    run = _setup(plan)
    loop = run.cfg.loop
    tally = _Tally(step=run.start)
    batches = iter(make_loader(run.stream, run.start * loop.grad_accum, run.cfg.data.num_workers))
    bar = tqdm(
        total=run.steps,
        initial=run.start,
        desc=f"train {run.cfg.stage}",
        disable=not (progress and run.main),
        dynamic_ncols=True,
    )
    while tally.step < run.steps:
        lr = _train_step(run, batches, tally)
        bar.update(1)
        if run.main and (tally.step % loop.log_every == 0 or tally.step == run.steps):
            _log_train(run, tally, lr, bar)
        if loop.eval_every and tally.step % loop.eval_every == 0 and tally.step < run.steps:
            tally.metrics = _validate(run, tally.step)
        interrupted = stop_after is not None and stop_after <= tally.step < run.steps
        if _checkpoint_due(run, tally.step) or interrupted:
            _save_resumable(run, tally.step)
        if interrupted:
            bar.close()
            return _interrupted(run, tally)
    bar.close()
    return _finish(run, tally)


# ---------------------------------------------------------------------------------- setup
def _setup(plan: StagePlan) -> _Run:
    """Model, optimizer, data stream and (when resuming) restored state, in a fixed order.

    The order matters: everything that draws random numbers runs after `set_seed` and in the
    same sequence on a fresh and a resumed run, and `load_state` comes last so it overrides
    the RNG, model, optimizer and scheduler states built before it.
    """
    from accelerate.utils import set_seed

    cfg = plan.config
    accelerator = _accelerator(cfg.loop)
    main = accelerator.is_main_process
    _start_out_dir(plan, accelerator)
    set_seed(cfg.seed)
    model, tokenizer, lora_model, patch_head = _build_model(plan, accelerator)
    wrapper = StageModule(model, cfg, patch_head)
    params = [p for p in wrapper.parameters() if p.requires_grad]
    optimizer = _optimizer(params, cfg)
    assert plan.order is not None  # plan_stage builds it
    steps = total_steps(cfg, plan.order.epoch_length, accelerator.num_processes)
    scheduler = _scheduler(optimizer, cfg, steps)
    _size_deepspeed(accelerator, cfg)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    stream = _batch_stream(plan, accelerator, tokenizer, model, steps)
    start = _restore(plan, accelerator)
    resumed = start if plan.resume_from else None
    log = MetricsLog(plan.out_dir / METRICS_NAME, resume_step=resumed) if main else None
    val = {t: [d[i] for i in range(len(d))] for t, d in plan.val_sets.items()} if main else {}
    base_state = _base_state(plan, steps, model)
    if main and start == 0:
        _write_json(plan.out_dir / STATE_NAME, {**base_state, "step": 0, "complete": False})
    return _Run(
        plan=plan,
        accelerator=accelerator,
        model=model,
        lora_model=lora_model,
        tokenizer=tokenizer,
        patch_head=patch_head,
        wrapper=wrapper,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        stream=stream,
        steps=steps,
        start=start,
        log=log,
        val=val,
        base_state=base_state,
    )


def _accelerator(loop: LoopSection) -> Accelerator:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(
        mixed_precision=_mixed_precision(loop.mixed_precision),
        gradient_accumulation_steps=loop.grad_accum,
        # Region and mask modules sit idle in batches without regions or <SEG>.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _start_out_dir(plan: StagePlan, accelerator: Accelerator) -> None:
    """The resolved config goes in first, so even a run that dies early says what it was."""
    if accelerator.is_main_process:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        (plan.out_dir / "train_config.yaml").write_text(dump_config(plan.config), encoding="utf-8")
    accelerator.wait_for_everyone()


def _build_model(
    plan: StagePlan, accelerator: Accelerator
) -> tuple[MedPLIBForCausalLM, PreTrainedTokenizerBase, object | None, PatchLabelHead | None]:
    """(model, tokenizer, peft LoRA handle or None, patch-label probe or None)."""
    cfg = plan.config
    tokenizer = _tokenizer_for_align(plan, accelerator) if cfg.stage == "align" else None
    model, tokenizer = build_stage_model(cfg, tokenizer, plan.init_dir, plan.experts)
    lora_model = configure_trainable(model, cfg.train_modules, cfg.lora, cfg.seed)
    if cfg.loop.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    patch_head = _patch_head(plan, model) if plan.patch_labels is not None else None
    return model, tokenizer, lora_model, patch_head


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def _scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    o = cfg.optim
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s,
            steps,
            warmup_fraction=o.warmup_fraction,
            decay_fraction=o.decay_fraction,
            min_ratio=o.min_lr_ratio,
        ),
    )


def _size_deepspeed(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """DeepSpeed reads batch sizes from a prepared DataLoader; ours is not prepared."""
    ds_plugin = accelerator.state.deepspeed_plugin
    if ds_plugin is not None:
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.loop.batch_size
        ds_plugin.deepspeed_config["gradient_accumulation_steps"] = cfg.loop.grad_accum


def _batch_stream(
    plan: StagePlan,
    accelerator: Accelerator,
    tokenizer: PreTrainedTokenizerBase,
    model: MedPLIBForCausalLM,
    steps: int,
) -> BatchStream:
    """Every micro-batch of the stage, addressable by index so a resume can start mid-way."""
    cfg = plan.config
    assert plan.order is not None
    sam_spec = None
    if plan.sam_sets:
        sam_order = RecordOrder(
            {t: len(d) for t, d in plan.sam_sets.items()}, {"grounding": 1.0}, cfg.seed + 1
        )
        sam_spec = StreamSpec(plan.sam_sets, sam_order, cfg.align.sam_batch_size)
    return BatchStream(
        StreamSpec(plan.train_sets, plan.order, cfg.loop.batch_size),
        tokenizer,
        model.config,
        num_micro_batches=steps * cfg.loop.grad_accum,
        sam=sam_spec,
        max_length=cfg.data.max_length,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        patch_labels=plan.patch_labels,
        attention_labels=plan.attention_labels,
        augment=cfg.augment,
        augment_seed=cfg.seed,
    )


def _restore(plan: StagePlan, accelerator: Accelerator) -> int:
    """Load the checkpoint being resumed from (if any); the optimizer steps it had done."""
    if plan.resume_from is None:
        return 0
    accelerator.load_state(str(plan.resume_from))
    return int(json.loads((plan.resume_from / STATE_NAME).read_text())["step"])


def _base_state(plan: StagePlan, steps: int, model: nn.Module) -> dict[str, Any]:
    return {
        "stage": plan.config.stage,
        "config_fingerprint": plan.config.fingerprint(),
        "total_steps": steps,
        "data_dir": str(plan.data_dir),
        "init": str(plan.init_dir) if plan.init_dir else None,
        "experts": [str(p) for p in plan.experts] if plan.experts else None,
        **trainable_summary(model),
    }


# ---------------------------------------------------------------------------------- steps
def _train_step(run: _Run, batches: Iterator[dict], tally: _Tally) -> float:
    """One optimizer step over `grad_accum` micro-batches; returns the learning rate it used."""
    accelerator, loop, o = run.accelerator, run.cfg.loop, run.cfg.optim
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(loop.grad_accum):
        batch = {k: b.to(accelerator.device) for k, b in next(batches).items()}
        # accelerate skips the optimizer step and the gradient sync until the last micro-batch.
        with accelerator.accumulate(run.wrapper):
            parts = run.wrapper(batch)
            accelerator.backward(parts["loss"])
            if accelerator.sync_gradients and o.grad_clip > 0:
                tally.grad_norm = float(accelerator.clip_grad_norm_(run.params, o.grad_clip))
            run.optimizer.step()
            run.optimizer.zero_grad()
        for name, value in parts.items():
            tally.window[name].append(float(value.detach()))
    lr = float(run.scheduler.get_last_lr()[0])  # read before stepping: the rate this step used
    run.scheduler.step()
    tally.step += 1
    tally.train_s += time.perf_counter() - t0
    tally.cpu_s += time.process_time() - c0
    return lr


def _log_train(run: _Run, tally: _Tally, lr: float, bar: tqdm) -> None:
    """One `train` line in metrics.jsonl: the window's mean losses, then a fresh window."""
    loop = run.cfg.loop
    means = {k: sum(v) / len(v) for k, v in tally.window.items()}
    bar.set_postfix(loss=f"{means['loss']:.3f}")
    assert run.log is not None
    run.log.write(
        {
            "kind": "train",
            "step": tally.step,
            "samples": tally.step
            * loop.batch_size
            * loop.grad_accum
            * run.accelerator.num_processes,
            "lr": lr,
            "grad_norm": tally.grad_norm,
            **means,
            "train_s": round(tally.train_s, 3),
            "cpu_s": round(tally.cpu_s, 3),
        }
    )
    tally.window.clear()


# ------------------------------------------------------------------------------ validation
def _validate(run: _Run, step: int) -> dict[str, float]:
    """Teacher-forced validation on the main process only; {} elsewhere or without samples."""
    if not run.main or not run.val:
        return {}
    inner = run.accelerator.unwrap_model(run.wrapper).model
    with run.accelerator.autocast():
        metrics = validate(
            inner,
            run.tokenizer,
            run.val,
            batch_size=run.cfg.loop.batch_size,
            device=run.accelerator.device,
            max_length=run.cfg.data.max_length,
        )
    assert run.log is not None
    run.log.write({"kind": "val", "step": step, **metrics})
    return metrics


# ---------------------------------------------------------------------------- checkpoints
def _checkpoint_due(run: _Run, step: int) -> bool:
    every = run.cfg.loop.checkpoint_every
    return step == run.steps or bool(every and step % every == 0)


def _save_resumable(run: _Run, step: int) -> None:
    """A resumable checkpoint, and trainer_state.json pointing at its step."""
    loop = run.cfg.loop
    _save_checkpoint(run.accelerator, run.out, step, loop.grad_accum, loop.keep_checkpoints)
    if run.main:
        _write_json(run.out / STATE_NAME, {**run.base_state, "step": step, "complete": False})
    run.accelerator.wait_for_everyone()


def _interrupted(run: _Run, tally: _Tally) -> StageResult:
    """Curves so far and a result saying how to continue; the checkpoint is already written."""
    if run.main:
        plot_curves(run.out / METRICS_NAME, run.out / CURVES_NAME, f"{run.cfg.stage} (interrupted)")
    return _result(
        run,
        tally,
        complete=False,
        message=f"stopped after step {tally.step} of {run.steps}; continue with --resume",
    )


def _finish(run: _Run, tally: _Tally) -> StageResult:
    """Last validation, then the finished model (LoRA merged), probe, export and state."""
    tally.metrics = _validate(run, tally.step) or tally.metrics
    if run.main:
        _save_final(run, tally)
    run.accelerator.wait_for_everyone()
    return _result(run, tally, complete=True)


def _save_final(run: _Run, tally: _Tally) -> None:
    out, cfg, accelerator = run.out, run.cfg, run.accelerator
    final = merge_lora(accelerator.unwrap_model(run.wrapper).model, run.lora_model)
    final.config.trained = True
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else None
    save_pretrained(final, run.tokenizer, out, dtype=dtype)
    if run.patch_head is not None:
        save_file(accelerator.unwrap_model(run.wrapper).patch_head.state_dict(), out / HEAD_NAME)
    if run.plan.export_dir is not None:
        save_pretrained(final, run.tokenizer, run.plan.export_dir, dtype=torch.float16)
    state = {
        **run.base_state,
        "step": tally.step,
        "complete": True,
        "steps_per_second": _speed(run, tally),
        "metrics": tally.metrics,
        # Samples longer than data.max_length, left out (counted in this process only).
        "skipped_samples": run.stream.skipped,
    }
    _write_json(out / STATE_NAME, state)
    plot_curves(
        out / METRICS_NAME, out / CURVES_NAME, f"{cfg.stage} ({cfg.model.name or cfg.model.preset})"
    )


def _speed(run: _Run, tally: _Tally) -> float:
    return (tally.step - run.start) / max(tally.train_s, 1e-9)


def _result(run: _Run, tally: _Tally, *, complete: bool, message: str = "") -> StageResult:
    return StageResult(
        run.cfg.stage,
        run.out,
        complete=complete,
        step=tally.step,
        total_steps=run.steps,
        start_step=run.start,
        seconds=tally.train_s,
        steps_per_second=_speed(run, tally),
        metrics=tally.metrics,
        message=message,
    )
