"""The project's paths and the suite's configuration: one loader, one typed schema.

A config file is YAML. It may name another file to start from (``extends: base.yaml``, relative to
itself); mappings merge key by key, anything else replaces. ``configs/base.yaml`` holds what every
run shares; ``configs/synthetic.yaml`` (the default) and ``configs/medalign.yaml`` (the real
release) hold only what differs. Overrides passed as data (``load_config(path, {"data_dir": ...})``)
merge last. An unknown or misspelt key is an error naming it and the file.

Global keys go to every notebook that declares them in its ``parameters`` cell; a section under
``notebooks: {name: {...}}`` sets parameters for one notebook (checked against what it declares
when the suite runs).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_CONFIG = "configs/synthetic.yaml"


# ------------------------------------------------------------------ paths


def project_root(start: str | Path | None = None) -> Path:
    """The repository root (the folder with pyproject.toml and medalign_utils/), from `start`, the
    working directory or this package; the working directory when none is found (an installed
    package run outside a checkout)."""
    for base in ([Path(start).resolve()] if start else []) + [Path.cwd().resolve(), Path(__file__).resolve().parent]:
        for p in [base, *base.parents]:
            if (p / "pyproject.toml").exists() and (p / "medalign_utils").is_dir():
                return p
    return Path.cwd()


def project_path(path: str | Path) -> Path:
    """A path from a config or notebook parameter: absolute as given, else relative to the repo root,
    so notebooks work the same from papermill and from `jupyter lab` in notebooks/."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def cache_root() -> Path:
    """Every cache of the suite (parsed EHRs, tokens, converted models) lives below this folder:
    $MEDALIGN_CACHE_DIR, else ~/.cache/medalign."""
    return Path(os.environ.get("MEDALIGN_CACHE_DIR", Path.home() / ".cache" / "medalign"))


_FALLBACKS: dict[Path, Path] = {}  # folder -> itself when writable, else its temporary stand-in


def writable_dir(path: str | Path, what: str = "cache") -> Path:
    """`path`, created if needed, when it can be written; else a temporary folder for this process,
    with a warning (a read-only cache must not make the release unusable)."""
    import tempfile
    import warnings

    path = Path(path)
    if path in _FALLBACKS:
        return _FALLBACKS[path]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
        _FALLBACKS[path] = path  # checked once per process
        return path
    except OSError as err:
        fallback = Path(tempfile.mkdtemp(prefix=f"medalign-{what.replace(' ', '-')}-"))
        warnings.warn(
            f"{path} cannot be written ({err.strerror}): the {what} goes to {fallback} for this run", stacklevel=2
        )
        _FALLBACKS[path] = fallback
        return fallback


# ------------------------------------------------------------------ schema


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class SyntheticSettings:
    """How `medalign run` makes the synthetic cohort when `data_dir` is absent (never implicitly
    elsewhere: `open_release` only reads)."""

    generate_if_missing: bool = False
    scale: str = "default"
    seed: int = 0


@dataclass
class SuiteConfig:
    """Every key a config may hold at its top level."""

    data_dir: str = "data/synthetic"
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    share_safe: bool = True  # real release only: the scan of every page; false marks the index in red
    # Endpoints besides loopback the DUA allows: on the real release each must be listed as
    # {host: NAME, zero_retention: true} (an API that keeps nothing it is sent), or nothing is sent.
    allowed_hosts: list[str | dict] = field(default_factory=list)
    follow_external_links: bool = False  # read release files that are links to outside its folder
    min_cell_patients: int = 11  # real release only: a table cell of fewer patients is suppressed
    seed: int = 0
    tokenizers: list[str] = field(default_factory=lambda: ["cl100k", "smollm2"])
    context_lengths: list[int] = field(default_factory=lambda: [2048, 4096, 8192, 16384, 32768, 65536, 131072])
    generation_reserve: int = 256
    n_resamples: int = 2000
    bootstrap_unit: str = "instruction"  # instruction (the paper's) | patient: what every CI resamples
    combine_raters: str = "primary"
    progress: bool = False
    concurrent_notebooks: int = 0  # notebooks `medalign run` runs at once (0: one per core, at most 4)
    prompts_path: str = "data/prompts/prompts.parquet"  # written by 02, read by 03
    generations_path: str = "data/generations/generations.jsonl"  # written by 03, scored by 05
    notebooks: dict[str, dict] = field(default_factory=dict)
    source: str = ""  # the file it was read from (set by the loader)

    def global_parameters(self) -> dict:
        """The keys every notebook may receive (those it declares)."""
        out = dataclasses.asdict(self)
        for k in ("notebooks", "source", "synthetic"):
            out.pop(k)
        return out

    def notebook_parameters(self, name: str, declared: set[str]) -> dict:
        """What one notebook receives: the global keys it declares, then its own section. A key in
        its section that it does not declare is an error (a typo would otherwise do nothing)."""
        own = self.notebooks.get(name) or {}
        unknown = sorted(set(own) - declared)
        if unknown:
            raise ConfigError(
                f"{self.source}: notebooks.{name} sets {', '.join(unknown)}, which {name} does not "
                f"declare in its parameters cell ({', '.join(sorted(declared))})"
            )
        merged = {**self.global_parameters(), **own}
        return {k: v for k, v in merged.items() if k in declared}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ loading


def deep_merge(base: dict, override: dict) -> dict:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_yaml_mapping(path: Path, *, what: str = "config") -> dict:
    """A YAML file that must be a mapping; bad YAML is one line naming the file, line and column."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{what} {path}{where}: not valid YAML ({problem})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a mapping of keys to values")
    return raw


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"config {path} extends itself (through {' -> '.join(map(str, seen))})")
    if not path.exists():
        raise ConfigError(f"config {path} does not exist")
    raw = read_yaml_mapping(path, what="config")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return deep_merge(_read_layers((path.parent / parent).resolve(), (*seen, path)), raw)


def _check_type(value, annotation, where: str) -> None:
    """A light type check of one value against a field's annotation (enough to catch a string where
    a list belongs, which would otherwise be iterated character by character)."""
    origin = typing.get_origin(annotation) or annotation
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, not {type(value).__name__} ({value!r})")
        (item,) = typing.get_args(annotation) or (object,)
        for i, v in enumerate(value):
            _check_type(v, item, f"{where}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, not {type(value).__name__}")
    elif origin is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
    elif origin is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
    elif origin is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")


def _build(cls, raw: dict, where: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(
                f"{where}: unknown key {key!r}"
                + (f" (did you mean {near[0]!r}?)" if near else "")
                + f"; known keys: {', '.join(sorted(known))}"
            )
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a mapping")
            kwargs[key] = _build(hint, value, f"{where}: {key}")
            continue
        _check_type(value, hint, f"{where}: {key}")
        kwargs[key] = value
    return cls(**kwargs)


def _config_path(config: str | Path | None) -> Path:
    """A config named on the command line: relative to the current folder, as a shell user means
    it (else to the repository root, where the suite's own configs live); the default, the root's."""
    if config is None:
        return project_path(DEFAULT_CONFIG).resolve()
    given = Path(config).expanduser()
    if given.is_absolute() or given.exists() or not project_path(given).exists():
        return given.resolve()
    return project_path(given).resolve()


def load_config(config: str | Path | None = None, overrides: dict | None = None) -> SuiteConfig:
    """Read a config (default `configs/synthetic.yaml`), its `extends` chain and `overrides`, and
    check every key against the schema."""
    path = _config_path(config)
    raw = deep_merge(_read_layers(path), overrides or {})
    cfg = _build(SuiteConfig, raw, str(path))
    for name, section in cfg.notebooks.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: notebooks.{name} must be a mapping of parameters")
    cfg.source = str(path)
    return cfg
