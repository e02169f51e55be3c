"""Prompt templates (files in templates/) and the paper's budget: EHR tokens = context - 256 for
generation - the tokens of the prompt with the instruction and an empty EHR, in the model's own
tokenizer (chat template included); the peers' templates and budgets beside it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

from .tokenizers import Tokenizer

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES / "medalign_prompt.txt"
REFINE_TEMPLATE = TEMPLATES / "medalign_refine.txt"
HELM_TEMPLATE = TEMPLATES / "helm_prompt.txt"
# The record, then the instruction: every instruction of a patient can share the record as a prefix.
EHR_FIRST_TEMPLATE = TEMPLATES / "medalign_ehr_first.txt"


# ------------------------------------------------------------------ templates and budget


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template file with `{question}` and `{ehr}` (and other named) fields."""

    text: str
    name: str = "medalign"

    @classmethod
    def from_file(cls, path: str | Path = DEFAULT_TEMPLATE, keep_trailing_newline: bool = False) -> PromptTemplate:
        """A template file; its trailing newline is dropped unless `keep_trailing_newline` (as a
        peer's loader that keeps it does)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"prompt template {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if not keep_trailing_newline:
            text = text.rstrip("\n")
        if "{ehr}" not in text:
            raise ValueError(f"prompt template {path} has no {{ehr}} field")
        return cls(text, path.stem)

    @property
    def record_first(self) -> bool:
        """Whether the EHR comes before the question (`medalign_ehr_first`): the prompts of one
        patient then share everything up to the question, and the grid cuts the record once for them."""
        return "{question}" in self.text and self.text.index("{ehr}") < self.text.index("{question}")

    def parse(self, prompt: str) -> dict[str, str] | None:
        """The fields of a prompt rendered from this template without a chat template (a
        `user_message`), or None when the prompt does not have the template's shape."""
        pattern, names = "", []
        for literal, name, _, _ in string.Formatter().parse(self.text):
            pattern += re.escape(literal)
            if name:
                pattern += f"(?P<{name}>.*)" if name == "ehr" else f"(?P<{name}>.*?)"
                names.append(name)
        m = re.fullmatch(pattern, prompt, flags=re.S)
        return m.groupdict() if m else None

    def render(self, ehr: str = "", **fields) -> str:
        return self.text.replace("{ehr}", "\x00EHR\x00").format(**fields).replace("\x00EHR\x00", ehr)

    def parts(self, tokenizer: Tokenizer | None = None, use_chat_template: bool = True, **fields) -> tuple[str, str]:
        """(prefix, suffix): the full prompt text before and after the EHR, chat template applied
        when the tokenizer has one (and `use_chat_template`)."""
        marker = "\x00EHR\x00"
        user = self.render(marker, **fields)
        if tokenizer is not None and use_chat_template and tokenizer.has_chat_template:
            user = tokenizer.apply_chat_template(user)
        prefix, _, suffix = user.partition(marker)
        return prefix, suffix


def template_named(name_or_path: str | Path | None) -> PromptTemplate:
    """A prompt template by name or file: None or "paper" the paper's (question, then the EHR),
    "ehr_first" the record first (`EHR_FIRST_TEMPLATE`), else a template file's path."""
    if name_or_path in (None, "paper", "medalign_prompt"):
        return PromptTemplate.from_file(DEFAULT_TEMPLATE)
    if name_or_path in ("ehr_first", "medalign_ehr_first"):
        return PromptTemplate.from_file(EHR_FIRST_TEMPLATE)
    return PromptTemplate.from_file(name_or_path)


class BudgetError(ValueError):
    """The context cannot hold the template, the instruction and the generation reserve."""


def ehr_budget(
    tokenizer: Tokenizer,
    context_length: int,
    question: str,
    template: PromptTemplate,
    *,
    reserve: int = 256,
    use_chat_template: bool = True,
    parts: tuple[str, str] | None = None,
) -> int:
    """EHR tokens available: context - reserve - tokens of the prompt with an empty EHR. `parts`
    (the template's prefix and suffix for this question) saves rebuilding them."""
    prefix, suffix = parts or template.parts(tokenizer, use_chat_template, question=question)
    overhead = tokenizer.count(prefix + suffix)
    budget = context_length - reserve - overhead
    if budget <= 0:
        raise BudgetError(
            f"context {context_length} cannot hold the prompt ({overhead} tokens with this instruction) "
            f"and the {reserve}-token generation reserve"
        )
    return budget


def peer_template(name: str) -> PromptTemplate:
    """The prompt a peer's published code uses: HELM's own, or TIMER's MedAlign template file read
    as is (its trailing newline kept, as TIMER's loader keeps it)."""
    if name == "helm":
        return PromptTemplate.from_file(HELM_TEMPLATE)
    if name == "timer":
        return PromptTemplate(PromptTemplate.from_file(DEFAULT_TEMPLATE, keep_trailing_newline=True).text, "timer")
    raise ValueError(f"no peer template {name!r}")


def helm_sent_template() -> PromptTemplate:
    """What HELM's MedAlign adapter sends: `"\nQuestion: " + packed prompt + "\n"` around its own
    template (its budget is still counted on the packed template alone, `peer_budget`)."""
    return PromptTemplate("\nQuestion: " + peer_template("helm").text + "\n", "helm")


def peer_budget(cl100k: Tokenizer, context: int, question: str, template: PromptTemplate, *, reserve: int = 256) -> int:
    """The peers' EHR budget: context - reserve - cl100k tokens of the raw template text (with its
    literal placeholders) - cl100k tokens of the instruction, counted apart."""
    return context - reserve - len(cl100k.encode(template.text)) - len(cl100k.encode(question))
