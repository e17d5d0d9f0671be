"""A resume is the same run: it takes the run's recorded config; the command line may change only what
cannot change the result.

The recorded config is the resolved run config that every checkpoint holds (``pspl_config``). A key that
this command line sets (named in an override, or changed from the defaults by one, as ``experiment=...``
does) must equal the recorded value unless it is in :data:`FREE_KEYS` (steps to train, loggers, loader
workers, what is saved and shown) or is a device key (:data:`WORLD_KEYS`) that keeps the world size; every
other key takes the recorded value. One line names each key that differs, with both values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pspl_lightning.errors import ConfigError
from pspl_lightning.legacy import model_config

log = logging.getLogger("pspl_lightning")

# Keys (with everything under them) a resume may change: they cannot change the weights the run reaches.
FREE_KEYS: tuple[str, ...] = (
    "trainer.max_steps", "schedule.max_steps",  # how many steps to train
    "logger", "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "data.num_workers", "data.persistent_workers", "data.pin_memory", "data.prefetch_factor",
    "data.cache_dir", "data.cache_workers", "data.progress",  # how the same samples are loaded
    "data.root", "data.benchmark_root",  # where the same images are (a copy on a node's local disk)
    "callbacks", "schedule.checkpoint_every_n_steps",  # what is saved and shown (but see HELD_KEYS)
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch", "schedule.val_every_n_steps",
    "trainer.num_sanity_val_steps",  # how often to validate: validation does not train
    "paths", "hydra", "resume", "ckpt_path", "init_from", "run_name", "task_name", "optimized_metric",
)
# Keys under a free key that change the result all the same: held to the recorded value.
HELD_KEYS: tuple[str, ...] = ("callbacks.ema",)
# Which processes run the run: free while devices x nodes stays the same (see world_size_rule).
WORLD_KEYS: tuple[str, ...] = ("trainer.devices", "trainer.num_nodes", "trainer.strategy",
                               "trainer.accelerator")
# Derived copies of other keys (the module node repeats model, loss, optimizer, ...): restored, not reported.
DERIVED_KEYS: tuple[str, ...] = ("module",)
_MISSING = object()


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _rule(key: str) -> str:
    """'free', 'held' or 'world' for ``key``: the most specific rule that covers it (default 'held')."""
    rules = [(p, "free") for p in FREE_KEYS] + [(p, "held") for p in HELD_KEYS] + \
        [(p, "world") for p in WORLD_KEYS]
    covering = [(len(p), verdict) for p, verdict in rules if _under(key, p)]
    return max(covering)[1] if covering else "held"


def _mixed(key: str) -> bool:
    """True when a rule for a key strictly below ``key`` differs from ``key``'s own."""
    own = _rule(key)
    return any(p.startswith(key + ".") and _rule(p) != own for p in (*FREE_KEYS, *HELD_KEYS, *WORLD_KEYS))


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Plain nested data as {dotted key: value}; lists are values."""
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node} if prefix else {}


def _world(trainer: Mapping[str, Any]) -> int | None:
    """devices x num_nodes, None where a value does not fix it (``auto``, -1)."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1) or 1
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        parts = [p for p in devices.split(",") if p.strip()]
        count = len(parts) if len(parts) > 1 or devices.endswith(",") else int(parts[0])
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        count = devices
    else:
        return None
    return count * int(nodes)


def world_size_rule(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """Why a resume on ``wanted``'s processes is refused (the trainer nodes), or None where it is allowed:
    for now only on the recorded world size (devices x num_nodes)."""
    old, new = _world(recorded), _world(wanted)
    same = old == new if old is not None and new is not None else all(
        recorded.get(k) == wanted.get(k) for k in ("devices", "num_nodes"))
    if same:
        return None
    return (f"the run trained on trainer.devices={recorded.get('devices')} x trainer.num_nodes="
            f"{recorded.get('num_nodes', 1)} processes and this command asks for trainer.devices="
            f"{wanted.get('devices')} x trainer.num_nodes={wanted.get('num_nodes', 1)}: a resume on another "
            f"number of processes is not supported yet; keep the run's devices and nodes")


def _short(value: Any) -> str:
    """A config value in one short piece: a node with ``_target_`` as ``Class(key=value, ...)``."""
    if isinstance(value, Mapping) and "_target_" in value:
        args = ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "_target_" and not k.startswith("_"))
        return f"{str(value['_target_']).rsplit('.', 1)[-1]}({args})"
    return "(not set)" if value is _MISSING else repr(value) if isinstance(value, str) else str(value)


def _select(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], touched: Iterable[str]) -> list[str]:
    """'key was X, now Y' for each key this command line set to another value than the run's, keys of a
    node whose class changed reported once as the node."""
    found: dict[str, str] = {}
    for key in sorted(touched):
        if _rule(key) != "held" or any(_under(key, d) for d in DERIVED_KEYS):
            continue
        old, new = _select(recorded, key), _select(current, key)
        if old == new:
            continue
        node = key  # the highest node above the key whose class (_target_) changed stands for it
        for i in range(key.count(".") + 1):
            prefix = ".".join(key.split(".")[:i + 1])
            o, n = _select(recorded, prefix), _select(current, prefix)
            if isinstance(o, Mapping) and isinstance(n, Mapping) and o.get("_target_") != n.get("_target_"):
                node, old, new = prefix, o, n
                break
        found.setdefault(node, f"{node} was {_short(old)}, now {_short(new)}")
    return list(found.values())


def touched_keys(current: Mapping[str, Any], defaults: Mapping[str, Any] | None, named: Iterable[str],
                 recorded: Mapping[str, Any]) -> set[str]:
    """The keys this command line set: those it names, and those whose value differs from the defaults."""
    cur = leaves(current)
    keys = set(cur) | set(leaves(recorded))
    touched = {k for k in keys if any(_under(k, n) for n in named)}
    if defaults is None:  # the defaults could not be composed: every key counts as set
        return keys
    base = leaves(defaults)
    touched |= {k for k in set(cur) | set(base) if cur.get(k, _MISSING) != base.get(k, _MISSING)}
    return touched


def override_keys(overrides: Iterable[str]) -> list[str]:
    """The config keys (or groups) that Hydra overrides name: ``+a.b=1`` -> ``a.b``, ``model=tiny`` ->
    ``model``, ``loss@x=y`` -> ``x``."""
    keys = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        keys.append(key.split("@", 1)[1] if "@" in key else key)
    return [k for k in keys if k and not k.startswith("hydra")]


def restore(cfg: DictConfig, recorded: Mapping[str, Any], prefix: str = "") -> None:
    """Set every key of ``cfg`` that a resume holds to its recorded value (free keys keep this command's)."""
    with open_dict(cfg):
        for key in sorted({*cfg.keys(), *recorded.keys()}, key=str):
            full = f"{prefix}{key}"
            verdict = _rule(full)
            if _mixed(full) and key in cfg and isinstance(cfg.get(key), DictConfig) and \
                    isinstance(recorded.get(key), Mapping):
                restore(cfg[key], recorded[key], full + ".")
            elif verdict == "free":
                continue
            elif verdict == "world" and key in cfg:
                continue  # decided by world_size_rule before: this command's devices, same world size
            elif key in recorded:
                cfg[key] = recorded[key]
            elif key in cfg:
                del cfg[key]


def recorded_config(ckpt: Path) -> tuple[dict[str, Any] | None, int]:
    """(the resolved run config a checkpoint holds, ``pspl_config``, or None; its global step)."""
    import torch  # only on resume

    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    state = state if isinstance(state, dict) else {}
    saved, step = state.get("pspl_config"), int(state.get("global_step", 0))
    if not saved:
        return None, step
    saved = dict(saved)
    if isinstance(saved.get("model"), dict):  # an older run's model config may hold init_from
        saved["model"] = model_config(saved["model"])
    return saved, step


def take_recorded_config(cfg: DictConfig, recorded: Mapping[str, Any], named: Iterable[str],
                         defaults: Mapping[str, Any] | None, what: str) -> None:
    """Make ``cfg`` the recorded run config plus this command's free keys; refuse (one line, ConfigError)
    a command line that changes anything else. ``what`` names the resume in the message."""
    from pspl_lightning.cli.run_folder import resolved_config

    current = resolved_config(cfg)
    touched = touched_keys(current, defaults, list(named), recorded)
    found = differences(recorded, current, touched)
    world = {k.split(".", 1)[1] for k in touched if _rule(k) == "world"}
    rec_trainer, cur_trainer = dict(recorded.get("trainer") or {}), dict(current.get("trainer") or {})
    wanted = {**rec_trainer, **{k: cur_trainer.get(k) for k in world if k in cur_trainer}}
    refusal = world_size_rule(rec_trainer, wanted)
    if found or refusal:
        reasons = "; ".join([*found, *([refusal] if refusal else [])])
        raise ConfigError(f"{what} continues the run as it was recorded; this command line changes it: "
                          f"{reasons}. Leave these keys out (the run's values are taken), or start a new "
                          f"run (init_from=<checkpoint> for its weights)")
    with open_dict(cfg):
        trainer = cfg.trainer
        for key in [k.split(".", 1)[1] for k in WORLD_KEYS if k.split(".", 1)[1] not in world]:
            if key in rec_trainer:  # not set by this command: the run's own
                trainer[key] = rec_trainer[key]
    restore(cfg, recorded)


def hydra_overrides() -> tuple[list[str], str]:
    """(this command's overrides, its config name) as Hydra recorded them; none outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
    except ValueError:  # composed directly (notebooks)
        return [], "train"
    return list(hc.overrides.task), str(hc.job.config_name or "train")


def defaults_config(config_name: str) -> dict[str, Any] | None:
    """The config with no command-line overrides, resolved (the keys a resume compares), or None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pspl_lightning.cli.hydra_setup import config_dir

    def held_part(composed: DictConfig) -> dict[str, Any]:
        with open_dict(composed):
            composed.paths.output_dir = ""  # Hydra's runtime folder: not known here, and free
        resolved = OmegaConf.to_container(composed, resolve=True)
        return {k: v for k, v in resolved.items() if _rule(str(k)) != "free" or _mixed(str(k))}

    try:
        if GlobalHydra.instance().is_initialized():
            return held_part(compose(config_name=config_name, overrides=[]))
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return held_part(compose(config_name=config_name, overrides=[]))
    except Exception as exc:  # noqa: BLE001 - every key then counts as set by the command line
        log.debug("resume: could not compose the defaults (%s)", exc)
        return None
