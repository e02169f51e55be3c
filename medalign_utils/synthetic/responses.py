"""Six systems' responses: the reference answer kept, dropped or distorted by the response's planted
quality and correctness, with filler, so metrics agree with clinicians positively but imperfectly.
"""

from __future__ import annotations

import numpy as np


def perturb_answer(reference: str, quality: float, correct: bool, style: int, *, rng: np.random.Generator) -> str:
    """A system's response: close to the reference when quality is high, drifting when low; wrong
    facts when incorrect. Closeness follows quality with noise, so metrics agree with clinicians
    positively but imperfectly."""
    words = reference.split()
    keep = float(np.clip(0.55 + 0.18 * quality + rng.normal(0, 0.15), 0.15, 1.0))
    kept = [w for w in words if rng.random() < keep] or words[:1]
    if not correct:
        mode = int(rng.integers(0, 3))
        if mode == 0:
            kept = ["I could not find this information in the provided EHR."]
        else:
            out = []
            for w in kept:
                digits = "".join(ch for ch in w if ch.isdigit())
                if digits and rng.random() < 0.7:
                    w = w.replace(digits[-1], str((int(digits[-1]) + int(rng.integers(1, 9))) % 10), 1)
                out.append(w)
            kept = out
            if mode == 2:
                kept = kept[: max(2, len(kept) // 2)] + ["though", "this", "is", "uncertain."]
    prefix = ["", "Based on the EHR, ", "According to the record, ", "Answer: ", "", "The EHR indicates that "][
        style % 6
    ]
    filler_n = int(np.clip(rng.normal(4 - quality * 2, 2), 0, 12))
    filler = " ".join(
        _FILLER[int(j)] for j in rng.choice(len(_FILLER), size=min(filler_n, len(_FILLER)), replace=False)
    )
    return (prefix + " ".join(kept) + (" " + filler if filler else "")).strip()


_FILLER = [
    "Please consult the treating physician.",
    "Further evaluation may be needed.",
    "This should be confirmed clinically.",
    "Other details are not available.",
    "The record contains several related entries.",
    "Follow-up is recommended.",
    "No other abnormalities were noted.",
    "Clinical correlation is advised.",
    "The patient should discuss this with their care team.",
    "This is based on the available documentation.",
    "Trends over time may also be relevant.",
    "Some information may be missing from the record.",
]


def paraphrase(reference: str, rng: np.random.Generator) -> str:
    swaps = {"was": "is", "The": "Their", "on": "dated", "documented": "recorded", "includes": "would include"}
    return " ".join(swaps.get(w, w) if rng.random() < 0.5 else w for w in reference.split())
