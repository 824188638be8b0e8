"""Import and export of backbone weights in the official DINO / DINOv2 layouts.

Reads (issue 2 §3):
* official ``.pth`` state dicts of DINO and DINOv2 (``register_tokens`` included), also
  DINOv2's chunked ``blocks.<chunk>.<i>.`` form;
* training checkpoints that wrap them: DINO-style ``{"teacher": ..., "student": ...}``
  (CrOC, CrIBo), Lightning ``{"state_dict": ...}`` (NeCo), with ``module.``, ``backbone.``,
  ``model.``/``teacher.`` prefixes; the wrapper to read is chosen by ``select``;
* timm ``.safetensors`` (``reg_token``) and Hugging Face ``Dinov2Model`` / ``ViTModel``
  layouts (separate q/k/v), renamed to the official keys;
* ``.npz`` archives of an official-layout state dict.

``.safetensors`` and ``.npz`` need no torch. ``.pth`` uses torch when it is installed
(``weights_only=True``) and otherwise says how to install it.

Export writes Flax params back to the official layout (``.safetensors``, ``.npz``, or
``.pth`` when torch is present), so models trained here load in PyTorch tools.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dense_jax.core.errors import ReportedError
from dense_jax.models.registry import VARIANTS, create, variant_config
from dense_jax.models.vit import VisionTransformer

StateDict = dict[str, np.ndarray]

# Wrapper keys of training checkpoints, tried in this order when no explicit `select`.
_CONTAINERS = ("teacher", "state_dict", "model", "module", "student", "backbone")
# Prefixes that wrap the backbone inside a flat training state dict.
_PREFIX_RE = re.compile(r"^(.*?)(?:cls_token|embeddings\.cls_token)$")
# Keys of heads/projectors that sit beside the backbone and are never imported.
_HEAD_RE = re.compile(r"^(head|dino_head|ibot_head|projection_head|proj_head|mlp_head|fc|pooler)\.")

TORCH_HINT = (
    "reading .pth files needs PyTorch (CPU build is enough): "
    "`pip install torch==2.13.0`, or convert the file to .safetensors on a machine "
    "that has torch: `python -m dense_jax.convert --in FILE.pth --out FILE.safetensors`"
)


# Keys a backbone may leave unused without changing its outputs: DINOv2's mask token (only
# iBOT's masked training reads it). Reported, then ignored.
HARMLESS_UNUSED = (r"^mask_token$",)


class CheckpointMismatchError(ReportedError, ValueError):
    """A state dict does not fit the requested backbone."""


class WeightsFileError(ReportedError, ValueError):
    """A weights file that is not what its extension says (corrupt, truncated, not weights)."""


def _torch_load(path: str) -> Any:
    """``torch.load(weights_only=True)``; a file it refuses raises `WeightsFileError` in one line
    that never passes on torch's advice to unpickle arbitrary objects."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        objects = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))
        if objects:
            reason = (
                f"it pickles Python objects besides tensors ({', '.join(objects)}), which dense_jax "
                "never unpickles; save just the backbone's state dict from a session you trust"
            )
        else:
            reason = "torch cannot read it as saved tensors (corrupt, truncated, or another format)"
        raise WeightsFileError(f"{path} is not a PyTorch checkpoint: {reason}") from None


# ---------------------------------------------------------------- reading files


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Raw (possibly nested) mapping of arrays stored in a weight file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"weights file {path!r} not found. Download the checkpoint (e.g. "
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth "
            "or https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/"
            "dino_deitsmall16_pretrain.pth) and pass its local path."
        )
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsFileError(f"{path} is not a valid .safetensors file ({err})") from None
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):  # numpy's text suggests pickle
            raise WeightsFileError(f"{path} is not a valid .npz archive of arrays") from None
    if ext in (".pth", ".pt", ".ckpt", ".bin"):
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise ImportError(TORCH_HINT) from err
        return _torch_to_numpy(_torch_load(path))
    raise ValueError(
        f"unsupported weights format {ext!r} for {path!r}: use .pth/.pt/.ckpt, .safetensors or .npz"
    )


def _torch_to_numpy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _torch_to_numpy(v) for k, v in obj.items()}
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):
        tensor = obj.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return obj


# ---------------------------------------------------------------- normalising layouts


def _unwrap(raw: Mapping[str, Any], select: str | None) -> Mapping[str, Any]:
    """Descend into nested training-checkpoint containers until arrays are reached."""
    current = raw
    while True:
        nested = {k: v for k, v in current.items() if isinstance(v, Mapping)}
        if not nested:
            return current
        if any(_PREFIX_RE.match(k) for k in current if k not in nested):
            return current
        if select is not None and select in nested:
            current = nested[select]
            continue
        for key in _CONTAINERS:
            if key in nested:
                current = nested[key]
                break
        else:
            raise CheckpointMismatchError(
                f"cannot find a backbone state dict among containers {sorted(nested)}; "
                "pass select=<container name>"
            )


def _strip_prefix(flat: Mapping[str, Any], select: str | None) -> StateDict:
    """Keep the keys under one backbone prefix (``teacher.backbone.`` etc.), prefix removed."""
    prefixes = sorted({m.group(1) for k in flat if (m := _PREFIX_RE.match(k))})
    if not prefixes:
        raise CheckpointMismatchError(
            "no `cls_token` key found: this is not a ViT backbone state dict "
            f"(first keys: {sorted(flat)[:8]})"
        )
    if len(prefixes) > 1:
        wanted = [p for p in prefixes if select and p.startswith(select)]
        if len(wanted) != 1:
            raise CheckpointMismatchError(
                f"several backbones in this file (prefixes {prefixes}); choose one with select=..."
            )
        prefixes = wanted
    prefix = prefixes[0]
    if prefix.endswith("embeddings."):
        prefix = prefix[: -len("embeddings.")]
    return {
        k[len(prefix) :]: np.asarray(v)
        for k, v in flat.items()
        if k.startswith(prefix) and not isinstance(v, Mapping)
    }


def _from_hf(state: StateDict) -> StateDict:
    """Rename a Hugging Face ViTModel / Dinov2Model state dict to the official keys."""
    out: StateDict = {}
    fixed = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.mask_token": "mask_token",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    per_block = {
        "norm1": "norm1",
        "layernorm_before": "norm1",
        "norm2": "norm2",
        "layernorm_after": "norm2",
        "attention.output.dense": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "intermediate.dense": "mlp.fc1",
        "output.dense": "mlp.fc2",
        "layer_scale1.lambda1": "ls1.gamma",
        "layer_scale2.lambda1": "ls2.gamma",
    }
    qkv: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        m = re.match(r"^encoder\.layer\.(\d+)\.(.+?)(?:\.(weight|bias))?$", key)
        if not m:
            out[key] = value  # reported as unexpected later
            continue
        idx, name, kind = int(m.group(1)), m.group(2), m.group(3)
        qm = re.match(r"^attention\.attention\.(query|key|value)$", name)
        if qm:
            qkv.setdefault((idx, kind), {})[qm.group(1)] = value
        elif name in per_block:
            target = per_block[name]
            out[f"blocks.{idx}.{target}" + ("" if target.endswith("gamma") else f".{kind}")] = value
        else:
            out[key] = value
    for (idx, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointMismatchError(f"block {idx}: incomplete q/k/v {kind} tensors {sorted(parts)}")
        out[f"blocks.{idx}.attn.qkv.{kind}"] = np.concatenate([parts["query"], parts["key"], parts["value"]])
    return out


def normalize_state_dict(raw: Mapping[str, Any], select: str | None = None) -> StateDict:
    """Official-layout backbone state dict from any supported file's contents.

    ``select`` names the backbone to take from a checkpoint holding several (e.g.
    ``"teacher"`` or ``"student"``; the teacher is the default, as in the papers' evals).
    """
    flat = _strip_prefix(_unwrap(raw, select), select or "teacher")
    if "embeddings.cls_token" in flat:
        flat = _from_hf(flat)
    state: StateDict = {}
    for key, value in flat.items():
        if _HEAD_RE.match(key):
            continue
        key = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key)  # DINOv2 block chunks
        key = {"reg_token": "register_tokens"}.get(key, key)  # timm
        state[key] = value
    return state


# ---------------------------------------------------------------- official <-> flax


def _block_pairs(depth: int, layerscale: bool):
    """(official key, flax path, kind) for each tensor of each block."""
    for i in range(depth):
        b, f = f"blocks.{i}.", (f"block_{i}",)
        for norm in ("norm1", "norm2"):
            yield b + norm + ".weight", f + (norm, "scale"), "vector"
            yield b + norm + ".bias", f + (norm, "bias"), "vector"
        for tk, fk in (
            ("attn.qkv", ("attn", "qkv")),
            ("attn.proj", ("attn", "proj")),
            ("mlp.fc1", ("mlp", "fc1")),
            ("mlp.fc2", ("mlp", "fc2")),
        ):
            yield b + tk + ".weight", f + fk + ("kernel",), "linear"
            yield b + tk + ".bias", f + fk + ("bias",), "vector"
        if layerscale:
            yield b + "ls1.gamma", f + ("ls1", "gamma"), "vector"
            yield b + "ls2.gamma", f + ("ls2", "gamma"), "vector"


def _key_table(cfg: Mapping[str, Any]):
    table = [
        ("cls_token", ("cls_token",), "same"),
        ("pos_embed", ("pos_embed",), "same"),
        ("patch_embed.proj.weight", ("patch_embed", "kernel"), "conv"),
        ("patch_embed.proj.bias", ("patch_embed", "bias"), "vector"),
    ]
    if cfg.get("mask_token"):
        table.append(("mask_token", ("mask_token",), "same"))
    if cfg.get("num_registers"):
        table.append(("register_tokens", ("register_tokens",), "same"))
    table += list(_block_pairs(cfg["depth"], cfg.get("layerscale") is not None))
    table += [("norm.weight", ("norm", "scale"), "vector"), ("norm.bias", ("norm", "bias"), "vector")]
    return table


_TO_FLAX = {
    "same": lambda a: a,
    "vector": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 3, 1, 0),
}
_TO_TORCH = {
    "same": lambda a: a,
    "vector": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(3, 2, 0, 1),
}


def _abstract_params(cfg: Mapping[str, Any]) -> dict:
    model = VisionTransformer(**cfg)
    size = cfg["patch_size"] * 2
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
    return nn.unbox(shapes["params"])


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def official_to_flax(
    state: StateDict, cfg: Mapping[str, Any], ignore_unexpected: tuple[str, ...] = ()
) -> dict:
    """Flax params (float32 numpy) from an official-layout state dict, strictly checked.

    Raises `CheckpointMismatchError` listing every missing, unexpected and mis-shaped key.
    ``ignore_unexpected`` are regexes of keys allowed to be left unused (e.g. NeCo's
    ``register_tokens`` when registers are switched off). Unused keys that cannot change the
    outputs (`HARMLESS_UNUSED`: DINOv2's ``mask_token``) are logged and ignored.
    """
    abstract = _abstract_params(cfg)
    params: dict = {}
    missing, misshaped = [], []
    used = set()
    for key, path, kind in _key_table(cfg):
        want = _get(abstract, path).shape
        if key not in state:
            missing.append(f"{key} {tuple(want)}")
            continue
        used.add(key)
        value = _TO_FLAX[kind](np.asarray(state[key]))
        if value.shape != want:
            misshaped.append(
                f"{key}: file {tuple(np.asarray(state[key]).shape)} -> {tuple(value.shape)}, "
                f"model wants {tuple(want)}"
            )
            continue
        _set(params, path, np.ascontiguousarray(value, dtype=np.float32))
    unused = [k for k in state if k not in used and not any(re.search(p, k) for p in ignore_unexpected)]
    harmless = [k for k in unused if any(re.search(p, k) for p in HARMLESS_UNUSED)]
    unexpected = [k for k in unused if k not in harmless]
    if missing or unexpected or misshaped:
        lines = [
            "checkpoint does not fit the backbone "
            f"(dim {cfg['embed_dim']}, depth {cfg['depth']}, patch {cfg['patch_size']}, "
            f"registers {cfg.get('num_registers', 0)}, layerscale {cfg.get('layerscale')}):"
        ]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(
                    f"  {len(items)} {title}: " + "; ".join(items[:12]) + (" ..." if len(items) > 12 else "")
                )
        guess = infer_variant(state)
        if guess and _architecture_of(VARIANTS[guess]) != _architecture_of(cfg):
            lines.append(f"  the file looks like variant {guess!r}")
        raise CheckpointMismatchError("\n".join(lines))
    if harmless:
        logging.warning("weights: ignoring %s, which this backbone does not use", ", ".join(harmless))
    return params


def flax_to_official(params: Mapping, cfg: Mapping[str, Any]) -> StateDict:
    """Official DINO/DINOv2 state dict (float32 numpy) from Flax backbone params."""
    params = nn.unbox(params)
    return {
        key: np.ascontiguousarray(_TO_TORCH[kind](np.asarray(jax.device_get(_get(params, path)))))
        for key, path, kind in _key_table(cfg)
    }


def _architecture_of(cfg: Mapping[str, Any]) -> tuple:
    """What an official state dict fixes about a backbone config: (dim, patch, depth, position
    grid, registers, layerscale)."""
    return (
        cfg["embed_dim"],
        cfg["patch_size"],
        cfg["depth"],
        cfg["pos_grid"],
        cfg.get("num_registers", 0),
        cfg.get("layerscale") is not None,
    )


def _architecture(state: Mapping[str, np.ndarray]) -> tuple:
    """`_architecture_of` read off an official state dict; CheckpointMismatchError if keys lack."""
    needed = ("cls_token", "patch_embed.proj.weight", "pos_embed")
    depths = [int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))]
    missing = [k for k in needed if k not in state] + ([] if depths else ["blocks.<i>.*"])
    if missing:
        raise CheckpointMismatchError(f"the file has no {', '.join(missing)}")
    return (
        state["cls_token"].shape[-1],
        state["patch_embed.proj.weight"].shape[-1],
        1 + max(depths),
        int(round(np.sqrt(state["pos_embed"].shape[1] - 1))),
        state["register_tokens"].shape[1] if "register_tokens" in state else 0,
        "blocks.0.ls1.gamma" in state,
    )


def infer_variant(state: Mapping[str, np.ndarray]) -> str | None:
    """Name of the registry variant whose architecture fits an official state dict."""
    try:
        architecture = _architecture(state)
    except CheckpointMismatchError:
        return None
    return next((name for name, cfg in VARIANTS.items() if _architecture_of(cfg) == architecture), None)


def resolve_variant(state: Mapping[str, np.ndarray], path) -> str:
    """`infer_variant`, or CheckpointMismatchError saying why no variant fits the file."""
    variant = infer_variant(state)
    if variant is not None:
        return variant
    try:
        dim, patch, depth, grid, registers, layerscale = _architecture(state)
        why = (
            f"its architecture (dim {dim}, patch {patch}, depth {depth}, position grid {grid}, "
            f"registers {registers}, layerscale {layerscale}) is none of the known variants"
        )
    except CheckpointMismatchError as err:
        why = str(err)
    raise CheckpointMismatchError(
        f"could not infer the backbone variant of {os.fspath(path)}: {why}; name the variant "
        f"explicitly (one of {', '.join(VARIANTS)}) to see what does not fit"
    )


# ---------------------------------------------------------------- public API


def load_backbone_params(
    path: str | os.PathLike,
    variant_cfg: Mapping[str, Any],
    select: str | None = None,
    ignore_unexpected: tuple[str, ...] = (),
) -> dict:
    """Flax params for a backbone config from any supported weight file."""
    state = normalize_state_dict(read_state_dict(path), select)
    return official_to_flax(state, variant_cfg, ignore_unexpected)


def save_official(params: Mapping, cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write Flax backbone params as an official state dict (.safetensors, .npz or .pth)."""
    write_state_dict(flax_to_official(params, cfg), path)


def write_state_dict(state: StateDict, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)
    elif ext == ".npz":
        np.savez(path, **state)
    elif ext in (".pth", ".pt"):
        try:
            import torch
        except ImportError as err:
            raise ImportError(TORCH_HINT.replace("reading", "writing")) from err
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)
    else:
        raise ValueError(f"unsupported output format {ext!r}: use .safetensors, .npz or .pth")


def load(
    variant: str, path: str | os.PathLike | None = None, select: str | None = None, seed: int = 0, **overrides
):
    """``(model, params)`` for a named variant, from a weight file or random init (path=None).

    ``variant="auto"`` reads the architecture from the file. Example::

        model, params = dense_jax.models.load("dinov2_vits14_reg4", "dinov2_vits14_reg4_pretrain.pth")
        feats = model.apply({"params": params}, images)   # feats["patch"]: (B, h, w, D)
    """
    state = None
    if variant == "auto":
        if path is None:
            raise ValueError("variant='auto' needs a weights path")
        state = normalize_state_dict(read_state_dict(path), select)
        variant = resolve_variant(state, path)
    cfg = variant_config(variant, **overrides)
    model = create(variant, **overrides)
    if path is None:
        size = cfg["patch_size"] * 2
        params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))["params"])
        return model, params
    if state is None:
        state = normalize_state_dict(read_state_dict(path), select)
    params = official_to_flax(state, cfg)
    return model, jax.tree.map(jnp.asarray, params)
