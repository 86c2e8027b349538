"""How numbers are written: significant figures, percentages, exponents and markdown tables (refusing NaN/Inf)."""
from __future__ import annotations

import math


def fmt(value: float, digits: int = 3) -> str:
    """About ``digits`` significant figures, never in exponent form; refuses NaN/Inf (a broken measurement)."""
    if not math.isfinite(value):
        raise ValueError(f"non-finite benchmark value {value!r}")
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1) or value == 0:
        return f"{value:.0f}"
    decimals = digits - 1 - int(math.floor(math.log10(magnitude)))
    return f"{value:.{min(decimals, 8)}f}"


def pct(fraction: float) -> str:
    if not math.isfinite(fraction):
        raise ValueError(f"non-finite benchmark fraction {fraction!r}")
    return f"{100 * fraction:.1f}%" if fraction >= 0.001 else f"{100 * fraction:.3f}%"


def sci(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"non-finite benchmark value {value!r}")
    return f"{value:.1e}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]
