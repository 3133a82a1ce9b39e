"""Checkpoints in Hugging Face layout, and the default checkpoint used when none is given.

A checkpoint directory holds ``config.json`` (`MedPLIBConfig.to_dict()`), the weights as
``model.safetensors`` or, above the shard size, ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json``, and the tokenizer files. Every weight file records a SHA-256
fingerprint of the weights in its metadata so a checkpoint can be identified without rehashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights

from medplib.conversation import SYSTEM_PROMPT
from medplib.errors import UserInputError
from medplib.modeling.configuration import MedPLIBConfig
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.presets import build_config
from medplib.tokenization import SEG_TOKEN, TOKENIZER_FILES, train_tokenizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FINGERPRINT_KEY = "medplib_weights_sha256"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # Hugging Face's default shard size
ASSET_DEMO_DIR = Path(__file__).resolve().parent / "assets" / "tiny-demo"
UNTRAINED_NAME = "tiny-untrained"
# Bump when the built-in untrained checkpoint changes. 2: transformers 5 draws the initial
# weights in another order, so the same seed gives other weights than version 1 did.
UNTRAINED_VERSION = 2


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of the tensors, in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_id(config: MedPLIBConfig, fingerprint: str) -> str:
    """Human-readable id: config name + short weights hash, e.g. ``tiny-untrained-3fa9c01b2d``."""
    return f"{config.name}-{fingerprint[:10]}"


def build_model(
    config: MedPLIBConfig | str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int | None = 0,
) -> MedPLIBForCausalLM:
    """A randomly initialised model whose vocabulary and `<SEG>` id match `tokenizer`."""
    cfg = (
        build_config(config)
        if isinstance(config, str)
        else MedPLIBConfig.from_dict(config.to_dict())
    )
    cfg.language.llama["vocab_size"] = len(tokenizer)
    seg_id = tokenizer.convert_tokens_to_ids(cfg.seg_token)
    if not isinstance(seg_id, int) or seg_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {cfg.seg_token!r} token")
    cfg.seg_token_id = seg_id
    for key, value in (
        ("pad_token_id", tokenizer.pad_token_id),
        ("bos_token_id", tokenizer.bos_token_id),
        ("eos_token_id", tokenizer.eos_token_id),
    ):
        if value is not None:
            cfg.language.llama[key] = int(value)
    if seed is not None:
        torch.manual_seed(seed)
    return MedPLIBForCausalLM(cfg)


def _storage_tensors(model: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.data_ptr() in seen or not t.is_contiguous():
            t = t.clone().contiguous()  # safetensors refuses shared or strided storage
        seen.add(t.data_ptr())
        out[name] = t
    return out


def save_pretrained(
    model: MedPLIBForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | os.PathLike,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write config, weights (sharded above `max_shard_bytes`; `dtype` e.g. float16 to halve size) and tokenizer."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model*.safetensors")) + [out / INDEX_NAME]:
        old.unlink(missing_ok=True)
    tensors = _storage_tensors(model, dtype)
    fingerprint = weights_fingerprint(tensors)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    meta = {"format": "pt", FINGERPRINT_KEY: fingerprint}
    if len(shards) == 1:
        save_file(shards[0], str(out / WEIGHTS_NAME), metadata=meta)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / fname), metadata=meta)
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {
            "metadata": {"total_size": total, FINGERPRINT_KEY: fingerprint},
            "weight_map": weight_map,
        }
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True))
    (out / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2))
    # A file an earlier tokenizer left here (another release writes other files) would be read
    # back with this one and could change its special tokens.
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


def weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX_NAME
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / n for n in names]
    single = directory / WEIGHTS_NAME
    return [single] if single.exists() else []


def read_fingerprint(directory: str | os.PathLike) -> str | None:
    """The weights fingerprint stored at save time, or None for checkpoints written elsewhere."""
    files = weight_files(Path(directory))
    if not files:
        return None
    with safe_open(str(files[0]), framework="pt") as f:
        return (f.metadata() or {}).get(FINGERPRINT_KEY)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Context in which new parameters are created in `dtype` (no later cast needed)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def default_dtype_for(device: torch.device | str) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that support it, else fp16."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dev.type in ("mps", "xpu"):
        return torch.float16
    return torch.float32


def load_pretrained(
    directory: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[MedPLIBForCausalLM, PreTrainedTokenizerBase, MedPLIBConfig]:
    """Load (model in eval mode, tokenizer, config); weights are not initialised twice."""
    path = Path(directory)
    if not (path / CONFIG_NAME).is_file():
        raise UserInputError(
            f"{path} is not a MedPLIB checkpoint (no {CONFIG_NAME}); pass a directory made by save_pretrained."
        )
    files = weight_files(path)
    if not files:
        raise UserInputError(
            f"{path} has no {WEIGHTS_NAME} or {INDEX_NAME}; the checkpoint is incomplete."
        )
    config = MedPLIBConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
    dev = torch.device(device)
    dtype = dtype or default_dtype_for(dev)
    with no_init_weights(), default_dtype(dtype), dev:
        model = MedPLIBForCausalLM(config)
    model.sam.reset_pixel_stats()
    expected = set(model.state_dict())
    seen: set[str] = set()
    for f in files:
        state = load_file(str(f), device=str(dev))
        unexpected = sorted(set(state) - expected)
        if unexpected:
            raise ValueError(f"{f.name} has weights the model does not know: {unexpected[:5]}")
        model.load_state_dict(state, strict=False)
        seen.update(state)
        del state
    missing = sorted(expected - seen)
    if missing:
        raise ValueError(
            f"checkpoint {path} lacks weights for {missing[:5]} ({len(missing)} in all)"
        )
    # No model.to(dtype): parameters were created in `dtype` already, and a blanket cast would
    # also round fp32-only state (router weights, rotary frequencies).
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer, config


# ------------------------------------------------------------------------------ default checkpoint
_BUILTIN_TEXT = [
    SYSTEM_PROMPT,
    "USER: ASSISTANT: What can you interpret from the overall image?",
    "Please provide an interpretation from this image.",
    "Can you provide an interpretation of the overall findings from this image?",
    "What can you infer from the overall situation in this image?",
    "Can you describe what is seen at the area? Can you describe the visual features of the area?",
    "Could you segment out the liver in this image? Please generate a mask that segments the target in this image.",
    "Where is the lesion? Is there an abnormality? Yes. No. The image shows a normal scan.",
    "liver spleen kidney lung heart bone brain tumour tumor lesion nodule cyst fracture vessel aorta "
    "pancreas stomach bladder prostate colon polyp retina optic disc skin melanoma nevus",
    "CT MRI MR PET X-ray ultrasound endoscopy fundus photography dermoscopy axial coronal sagittal slice",
    "left right upper lower anterior posterior region area organ mass density intensity contrast",
]


def _cache_root() -> Path:
    env = os.environ.get("MEDPLIB_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "medplib"


def build_untrained_checkpoint(directory: str | os.PathLike) -> Path:
    """Write the clearly labelled untrained tiny checkpoint (seed 0) to `directory`."""
    tokenizer = train_tokenizer(_BUILTIN_TEXT * 4, vocab_size=512)
    config = build_config("tiny")
    config.name, config.trained = UNTRAINED_NAME, False
    model = build_model(config, tokenizer, seed=0)
    return save_pretrained(model, tokenizer, directory)


def default_checkpoint_dir() -> Path:
    """The shipped demo checkpoint if present, else the untrained tiny one (built once, then cached)."""
    if (ASSET_DEMO_DIR / CONFIG_NAME).is_file():
        return ASSET_DEMO_DIR
    target = _cache_root() / f"{UNTRAINED_NAME}-v{UNTRAINED_VERSION}"
    if (target / CONFIG_NAME).is_file() and weight_files(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_untrained_checkpoint(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp is private; the cache is shared by every process of the user
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        try:
            os.rename(tmp, target)  # atomic: concurrent builders race harmlessly
        except OSError:
            if not (target / CONFIG_NAME).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


__all__ = [
    "SEG_TOKEN",
    "build_model",
    "build_untrained_checkpoint",
    "checkpoint_id",
    "default_checkpoint_dir",
    "default_dtype",
    "default_dtype_for",
    "load_pretrained",
    "read_fingerprint",
    "save_pretrained",
    "weights_fingerprint",
]
