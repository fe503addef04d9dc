"""The table of variants ``lte experiment`` compares (issue 13)."""

from __future__ import annotations

from dataclasses import dataclass

from lte_core.errors import ConfigError

MEAN, RECENCY, AE = "mean", "recency", "ae"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    description: str
    #: the input covers ``long_factor x max_len`` items (PerSRec: long segment + recent)
    long_factor: int = 1
    integration: str = "none"
    encoder: str = MEAN
    #: the LTE window ends where the input begins; False: at the prediction (the leak)
    lagged: bool = True
    persrec_tokens: int = 0
    dare: bool = False

    @property
    def uses_lte(self) -> bool:
        return self.integration != "none"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("none", "no LTE, the last max-len items"),
        Variant("none_long", "no LTE, the last 10xmax-len items", long_factor=10),
        Variant(
            "prefix_lagged",
            "LTE prefix token, window ends where the input begins",
            integration="prefix",
        ),
        Variant(
            "prefix_unlagged",
            "LTE prefix token, window ends at the prediction (leak)",
            integration="prefix",
            lagged=False,
        ),
        Variant("late_fusion", "LTE added to the last hidden state", integration="late_fusion"),
        Variant(
            "feature_injection",
            "LTE added to every input embedding",
            integration="feature_injection",
        ),
        Variant(
            "prefix_recency",
            "prefix token from the recency encoder",
            integration="prefix",
            encoder=RECENCY,
        ),
        Variant(
            "prefix_ae",
            "prefix token from the fixed-decoder autoencoder",
            integration="prefix",
            encoder=AE,
        ),
        Variant(
            "persrec",
            "PerSRec: 4 learnable tokens compress the long segment",
            long_factor=10,
            persrec_tokens=4,
        ),
        Variant("dare", "DARE: separate attention and representation item tables", dare=True),
        Variant(
            "dare_prefix", "DARE with the lagged LTE prefix token", integration="prefix", dare=True
        ),
    )
}


def parse_variants(text: str) -> list[Variant]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ConfigError(
            f"--variants: unknown {', '.join(unknown) or '(empty)'}; choose from "
            f"{', '.join(VARIANTS)}"
        )
    return [VARIANTS[n] for n in dict.fromkeys(names)]
