"""What a chapter records: theorem checks and figures with provenance.

A chapter calls :func:`check` once per theorem it verifies and :func:`save_figure` for every
figure. Both display something readable in the notebook and attach a machine-readable record
to the output's metadata (:data:`ntkbook.protocol.METADATA_KEY`), which the chapter runner
collects into the dashboard and ``checks.json``. Under ``python -m ntkbook`` the runner says
where to write (:mod:`ntkbook.protocol`) and adds the parameters in force, which reach the
chapter through papermill's cell alone; run by hand, files go to ``./ntkbook_output``.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import io
import json
import math
from typing import Any, Literal, NamedTuple

import matplotlib
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import display, publish_display_data

from ntkbook.files import atomic_write_bytes
from ntkbook.numbers import comparison_text, sig, status_word
from ntkbook.protocol import METADATA_KEY, context

Comparison = Literal["within", "at_most", "at_least"]
Source = Literal["paper", "derived", "measured"]
SOURCES = {"paper": "the paper's statement", "derived": "derived here", "measured": "measured here"}


class Alternative(NamedTuple):
    """The competing prediction a skeptic would offer, which a check must rule out.

    Attributes:
        value: the alternative's prediction. For a ``within`` check, compared with the
            measurement under the check's tolerance. For a bound (``at_most``/``at_least``)
            without ``measured``: a *violation* of the bound (above it for ``at_most``, below
            it for ``at_least``: a weaker power, no decay), which the measurement with its
            tolerance must exclude; a value on the claim's side is refused.
        meaning: one line: what the alternative claims (``"exponent -1/2: the size of the
            initial fluctuation"``, ``"no convergence"``, ``"the infinite-width value"``).
        measured: the check's statistic computed under the alternative hypothesis (a z-score
            against the alternative's prediction, or the same statistic on a configuration
            where the alternative holds), compared with the same threshold: ``value`` must then
            equal the check's ``predicted``. Default ``None``: the check's own ``measured``.
    """

    value: float
    meaning: str
    measured: float | None = None


def _finite(*values: float | None) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def _holds(measured: float, predicted: float, tolerance: float, comparison: Comparison) -> bool:
    if not _finite(measured, predicted, tolerance):
        return False
    if comparison == "within":
        return abs(measured - predicted) <= tolerance
    if comparison == "at_most":
        return measured <= predicted + tolerance
    return measured >= predicted - tolerance


def rules_out(
    measured: float,
    predicted: float,
    tolerance: float,
    comparison: Comparison,
    alternative: Alternative,
) -> bool:
    """Whether a check's measurement, with its tolerance, excludes ``alternative``.

    ``within``: the alternative's value fails ``|measured - value| <= tolerance``. A bound with
    a violating value (``at_most``: ``value > predicted``): ``measured + tolerance < value``
    (``at_least``: ``measured - tolerance > value``). A bound whose alternative carries its own
    statistic (``alternative.measured``, against the same threshold ``predicted``): that
    statistic fails the bound. Raises ``ValueError`` for a bound's alternative on the claim's
    side (a stronger bound, which a passing check can never exclude) or, with its own
    statistic, against another threshold.
    """
    value = float(alternative.value)
    alt_meas = None if alternative.measured is None else float(alternative.measured)
    if comparison == "within":
        return not _holds(measured if alt_meas is None else alt_meas, value, tolerance, "within")
    if alt_meas is not None:
        if value != predicted:
            raise ValueError(
                f"a bound's alternative with its own statistic is judged against the same "
                f"threshold: its value must equal predicted ({predicted}), got {value}"
            )
        return _finite(alt_meas) and not _holds(alt_meas, predicted, tolerance, comparison)
    violating = value > predicted if comparison == "at_most" else value < predicted
    if not violating:
        side = "above" if comparison == "at_most" else "below"
        raise ValueError(
            f"an {comparison} check's alternative must violate the bound ({side} {predicted}): "
            f"{value} is on the claim's side, a stronger claim the check cannot exclude"
        )
    if not _finite(measured, tolerance):
        return False
    if comparison == "at_most":
        return measured + tolerance < value
    return measured - tolerance > value


_POWER_Z = 1.2816  # Phi^-1(0.9): a check is made when it excludes its alternative 9 times in 10


def can_exclude(
    name: str,
    *,
    tolerance: float,
    predicted: float,
    alternative: float,
    n: int,
    unit: str = "networks",
    uncertainty: float | None = None,
) -> bool:
    """Whether a bound check has the precision to exclude its violating ``alternative``, decided
    from its error estimates alone, before the measurement is compared. Without
    ``uncertainty``: even a measurement right at the bound excludes the alternative only when
    ``tolerance < gap = |alternative - predicted|``. With the measurement's standard error
    ``uncertainty = s``: the check must exclude the alternative with probability at least 90 %
    when the claim holds exactly (the measurement ``~ N(predicted, s^2)``), that is
    ``tolerance + 1.28 s <= gap``; a tolerance just under the gap would leave a measurement one
    standard error off the bound powerless (hierarchy at ``quick``: tolerance 0.46 against a
    gap of 0.5, measured 0.21 off the bound, powerless). When it cannot, the chapter shows that
    the check is *not made* at this profile, and how many ``unit`` would give it the power (a
    standard error falls like ``1/sqrt(n)``: ``n ((tolerance + 1.28 s) / gap)^2``), rather than
    making a powerless check.

    Arguments:
        name: the check's name, as :func:`check` would record it.
        tolerance: the check's tolerance. predicted: the bound. alternative: the violation.
        n: the sample size behind the tolerance. unit: what ``n`` counts, default
            ``"networks"``.
        uncertainty: the measurement's standard error, default ``None`` (the tolerance alone).
    """
    gap = abs(float(alternative) - float(predicted))
    tolerance = float(tolerance)
    spread = 0.0 if uncertainty is None else _POWER_Z * float(uncertainty)
    if math.isfinite(tolerance + spread) and tolerance + spread < gap:
        return True
    need = (
        math.ceil(n * ((tolerance + spread) / gap) ** 2)
        if math.isfinite(tolerance + spread)
        else None
    )
    power = "" if uncertainty is None else f" with 90 % power (+ 1.28 s.e. = {sig(spread)})"
    text = (
        f"[NOT CHECKED at this profile] {name}: its tolerance {sig(tolerance)} cannot exclude "
        f"the violation {sig(alternative)}{power} (|{sig(alternative)} - {sig(predicted)}| = "
        f"{sig(gap)}); about {need if need else 'many more'} {unit} instead of {n} would"
    )
    ctx = context()
    declined = {
        "chapter": ctx["chapter"],
        "name": name,
        "profile": ctx["profile"],
        "tolerance": _json_num(tolerance),
        "predicted": float(predicted),
        "alternative": float(alternative),
        "n": n,
        "needed": need,
        "unit": unit,
    }
    _emit(
        {"text/plain": text, "text/html": f"<p><b>{html.escape(text)}</b></p>"},
        {METADATA_KEY: {"declined": declined}},
    )
    return False


def check(
    name: str,
    *,
    paper: str,
    theorem: str,
    measured: float,
    predicted: float,
    tolerance: float,
    why: str,
    alternative: Alternative | tuple | None = None,
    source: Source = "paper",
    uncertainty: float | None = None,
    comparison: Comparison = "within",
    exact: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> CheckRecord:
    """Record a theorem check and display it; return the record.

    A check compares a measurement with a prediction under ``comparison``: ``"within"``
    passes when ``|measured - predicted| <= tolerance``, ``"at_most"`` when ``measured <=
    predicted + tolerance`` (an upper bound, checked as a bound), ``"at_least"`` when
    ``measured >= predicted - tolerance``. It must also rule out its ``alternative``
    (:func:`rules_out`): a ``within`` check fails for the alternative's value; a bound's
    alternative is a violation of the bound that ``measured`` with its tolerance excludes (or
    another hypothesis whose own statistic fails the bound). A check that cannot exclude its
    alternative is *powerless* and fails like a failed check. A NaN or infinite value never
    passes.

    Arguments:
        name: one line naming what is checked.
        paper: a bibtex key of ``book/references.bib``. theorem: the statement ("Thm. 1, eq.
            (4)"), in the numbering of the version the chapter cites.
        measured, predicted: the measurement and the prediction it is compared with.
        tolerance: from an independent error estimate (a standard error, a truncation or
            rounding bound), never from the deviation tested; finite and > 0, or 0 with
            ``exact``; a negative or non-finite tolerance fails the check, a 0 without
            ``exact`` is recorded as ``tolerance_ok: false``.
        why: where the tolerance comes from.
        alternative: an :class:`Alternative` or a tuple ``(value, meaning[, measured])``;
            ``None`` (the default, for checks not yet given one) is recorded as missing, which
            the dashboard shows and the test of the check standard refuses.
        source: ``"paper"`` (default: the paper's statement), ``"derived"`` (a prediction
            derived here) or ``"measured"`` (a typical size measured here, e.g. an exponent
            sharper than the paper's bound).
        uncertainty: the measurement's standard error, default ``None``.
        comparison: ``"within"`` (default), ``"at_most"`` or ``"at_least"``.
        exact: why an exact equality is checked with tolerance 0 (default ``None``: a
            tolerance of 0 is recorded as not justified).
        parameters: the parameters to record, default ``None`` (the runner attaches the
            run's: :func:`ntkbook.protocol.attach_parameters`).
    """
    measured, predicted, tolerance = float(measured), float(predicted), float(tolerance)
    unc = None if uncertainty is None else float(uncertainty)
    if comparison not in ("within", "at_most", "at_least"):
        raise ValueError(f"comparison must be within, at_most or at_least, got {comparison!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    alt = Alternative(*alternative) if isinstance(alternative, tuple) else alternative
    if alt is not None and (not isinstance(alt, Alternative) or not str(alt.meaning).strip()):
        raise ValueError("alternative needs a value and a one-line meaning")
    # a tolerance is finite and > 0, or exactly 0 for an exact equality that says why; a
    # negative or non-finite one fails, a 0 without a reason is recorded (tolerance_ok) and
    # refused by the test of the check standard (tests/test_check_standard.py)
    tolerance_ok = math.isfinite(tolerance) and (tolerance > 0 or (tolerance == 0 and bool(exact)))
    ok = _holds(measured, predicted, tolerance, comparison) and _finite(unc) and tolerance >= 0
    if alt is None:
        alt_record, excluded = None, None
    else:
        alt_value = float(alt.value)
        alt_meas = float(measured if alt.measured is None else alt.measured)
        excluded = rules_out(measured, predicted, tolerance, comparison, alt)
        alt_record = {
            "value": _json_num(alt_value),
            "meaning": alt.meaning,
            "measured": _json_num(alt_meas),
        }
    ctx = context()
    numbers = {
        "measured": measured,
        "uncertainty": unc,
        "predicted": predicted,
        "tolerance": tolerance,
    }
    record = {
        "chapter": ctx["chapter"],
        "name": name,
        "paper": paper,
        "theorem": theorem,
        "source": source,
        # JSON has no NaN or infinity: a non-finite number is stored as null and named in
        # "nonfinite" with its value as text, so every reader sees it and it can never pass.
        **{k: _json_num(v) for k, v in numbers.items()},
        "nonfinite": {
            k: str(v) for k, v in numbers.items() if v is not None and not math.isfinite(v)
        },
        "comparison": comparison,
        "why": why,
        "exact": exact,
        "tolerance_ok": tolerance_ok,
        "alternative": alt_record,
        "rules_out": excluded,
        # powerless: the claim holds but its alternative is not excluded (a failed comparison
        # is a failure, whatever the alternative)
        "powerless": bool(ok and excluded is False),
        "passed": bool(ok and excluded is not False),
        "profile": ctx["profile"],
        # the run's parameters are attached by the runner (ntkbook.protocol.attach_parameters)
        **({} if parameters is None else {"parameters": parameters}),
    }
    _display_check(record)
    return CheckRecord(record)


class CheckRecord(dict):
    """A check's record (a ``dict``), returned by :func:`check`, which has already displayed
    it: a cell that ends with ``check(...)`` shows the check once, not again as a dict."""

    def _ipython_display_(self) -> None:
        pass


def _json_num(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def _display_check(record: dict[str, Any]) -> None:
    status = status_word(record)
    source = {"derived": "; derived here", "measured": "; measured here"}.get(record["source"], "")
    compared = comparison_text(record)
    alt = record["alternative"]
    if alt is None:
        alt_text = "no alternative named"
    else:
        verdict = "rules out" if record["rules_out"] else "does NOT rule out"
        alt_text = f"{verdict}: {alt['meaning']} ({sig(alt['value'])})"
    text = f"[{status}] {record['name']} ({record['theorem']}{source}): {compared}; {alt_text}"
    color = "#1a7f37" if record["passed"] else "#cf222e"
    esc = html.escape
    body = (
        f'<div class="ntkbook-check" style="border-left:4px solid {color};padding:0.3em 0.8em;'
        f'margin:0.5em 0"><b style="color:{color}">{status}</b> '
        f"<b>{esc(record['name'])}</b> — {esc(record['theorem'])}{esc(source)}<br>"
        f"<code>{esc(compared)}</code><br>{esc(alt_text)}<br>"
        f"<small>tolerance: {esc(record['why'])}</small></div>"
    )
    _emit({"text/plain": text, "text/html": body}, {METADATA_KEY: {"check": record}})


def _emit(data: dict[str, str], metadata: dict[str, Any]) -> None:
    if get_ipython() is None:  # plain Python: print what a notebook would show
        print(data["text/plain"])
        return
    publish_display_data(data, metadata=metadata)


def save_figure(fig: Any, name: str, caption: str = "") -> None:
    """Save a matplotlib figure as PNG and SVG with a provenance record ``name.json``.

    Files go to ``<outdir>/figures/``; each is written to a temporary name and moved into
    place. In a notebook the figure is then shown, followed by its caption and the command
    that regenerates it, and closed (so the chapter needs no ``plt.show()``). The provenance
    record goes to ``<name>.json``; the PNG and SVG are byte-for-byte reproducible (no
    timestamps, fixed SVG ids).
    """
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    ctx = context()
    figdir = ctx["outdir"] / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        meta = {"Date": None} if ext == "svg" else {"Software": None}
        with matplotlib.rc_context({"svg.hashsalt": name}):
            fig.savefig(buf, format=ext, dpi=120, bbox_inches="tight", metadata=meta)
        atomic_write_bytes(figdir / f"{name}.{ext}", buf.getvalue())
    prov = {
        "figure": name,
        "caption": caption,
        "chapter": ctx["chapter"],
        "profile": ctx["profile"],
        # the installed distribution's version: a chapter that does not use ntklib (the tests'
        # demo) then never imports JAX
        "ntklib_version": importlib.metadata.version("ntklib"),
        "git_commit": ctx["git_commit"],
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": [f"{name}.png", f"{name}.svg"],
        "command": ctx["command"],
    }
    atomic_write_bytes(figdir / f"{name}.json", json.dumps(prov, indent=2).encode())
    cmd = ctx["command"] or "(run this chapter with python -m ntkbook run)"
    cap = f"{caption} " if caption else ""
    text = f"Figure {name}: {cap}({name}.png, {name}.svg). Regenerate with: {cmd}"
    body = (
        f'<p class="ntklib-figure"><small><b>Figure <code>{html.escape(name)}</code>.</b> '
        f"{html.escape(cap)}(PNG and SVG, provenance in <code>{html.escape(name)}.json</code>.) "
        f"Regenerate with: <code>{html.escape(cmd)}</code></small></p>"
    )
    _show(fig)
    _emit({"text/plain": text, "text/html": body}, {METADATA_KEY: {"figure": prov}})


def _show(fig: Any) -> None:
    """Display ``fig`` in a notebook (then close it, so it is not shown twice)."""
    if get_ipython() is not None:
        display(fig)
        plt.close(fig)
