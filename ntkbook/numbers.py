"""Numbers (and table cells) as a reader should see them: with the digits their uncertainty
supports, and text that cannot break a markdown table."""

from __future__ import annotations

import math
from typing import Any


def sig(v: float | None, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits (default 3); ``—`` for ``None``."""
    if v is None:
        return "—"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def with_error(v: float | None, err: float | None) -> str:
    """``v ± err`` rounded at the error's second significant digit (``3.82 ± 0.08``, not
    ``3.82024 ± 0.0831406``); without an error, three significant digits."""
    if v is None or err is None or not (math.isfinite(err) and err > 0) or not math.isfinite(v):
        return sig(v)
    place = math.floor(math.log10(err)) - 1  # the error's second significant digit
    decimals = max(0, -place)
    return f"{round(v, -place):.{decimals}f} ± {round(err, -place):.{decimals}f}"


def status_word(c: dict[str, Any]) -> str:
    """A check's verdict, one word wherever it is shown: ``PASS``; ``POWERLESS`` (failed
    because its alternative is not excluded); ``FAIL``."""
    return "PASS" if c["passed"] else ("POWERLESS" if c.get("powerless") else "FAIL")


def status_mark(c: dict[str, Any]) -> str:
    """``✓`` for a passing check, else ``✗`` and its :func:`status_word`."""
    return "✓" if c["passed"] else f"✗ {status_word(c)}"


def comparison_text(c: dict[str, Any]) -> str:
    """A check's comparison in words, with the digits its uncertainty supports."""
    num = {k: number(c, k) for k in ("measured", "predicted", "tolerance", "uncertainty")}
    meas = with_error(num["measured"], num["uncertainty"])
    p, t = num["predicted"], num["tolerance"]
    cmp = c.get("comparison", "within")
    if cmp == "within":
        return f"{meas}, predicted {sig(p)}, within {sig(t, 2)}"
    if cmp == "at_most":
        bound = None if p is None or t is None else p + t
        return f"{meas} ≤ {sig(bound)}" + ("" if not p else f" (= {sig(p)} + {sig(t, 2)})")
    bound = None if p is None or t is None else p - t
    return f"{meas} ≥ {sig(bound)}" + ("" if not p else f" (= {sig(p)} − {sig(t, 2)})")


def power_hint(c: dict[str, Any]) -> str:
    """For a powerless check (its claim holds, its alternative is not excluded): the tolerance
    that would exclude the alternative, and the factor of networks or samples that gives it (a
    standard error falls like ``1/sqrt(n)``); ``""`` for any other check."""
    alt, t = c.get("alternative") or {}, number(c, "tolerance")
    if not c.get("powerless") or alt.get("value") is None or not t:
        return ""
    m, v = number(c, "measured"), alt["value"]
    own = alt.get("measured") is not None and alt["measured"] != m
    if own or m is None:
        return "powerless: its statistic cannot tell the alternative from the claim"
    need = abs(v - m)  # the tolerance must fall below the distance to the alternative
    if need == 0:
        return "powerless: the measurement sits on the alternative"
    return (
        f"powerless: a tolerance below {sig(need, 2)} (now {sig(t, 2)}) would exclude the "
        f"alternative: about {sig((t / need) ** 2, 2)} times the networks or samples"
    )


def number(c: dict[str, Any], key: str) -> float | None:
    """A check record's number (a non-finite one is stored as text in ``nonfinite``)."""
    if key in c.get("nonfinite", {}):
        return float(c["nonfinite"][key])
    return c.get(key)


def cell(s: Any) -> str:
    """``s`` as one markdown table cell: ``|`` escaped, newlines joined."""
    return str(s).replace("|", "\\|").replace("\n", " ")
