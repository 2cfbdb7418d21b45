"""The data contract for a collection run: checks, a report, and quarantine.

Rules (``error`` rows are quarantined; ``warning`` rows are counted and kept):

=========================  ========  ==============================================
rule                       severity  what it checks
=========================  ========  ==============================================
``parse:<field>``          error     the item parses into a typed record (types)
``missing_id``             error     ``id`` is present
``missing_name``           error     ``name`` is present and not blank
``missing_published_at``   warning   ``published_at`` is present (third-party dumps often lack it)
``duplicate_id``           error     ids are unique within the run
``salary_from_gt_to``      error     ``salary.from <= salary.to``
``negative_salary``        error     salary bounds are not negative
``unknown_currency``       error     the currency is a known hh.ru code
``published_after_collected`` error  ``published_at`` is not after ``collected_at`` (+ skew)
``missing_collected_at``   error     the item carries ``collected_at``
``missing_responsibility`` warning   the responsibility snippet is present (the model input)
``unreadable``             error     a dump's line is JSON and an object (collect kept it aside)
=========================  ========  ==============================================

The report goes to ``raw/<run_id>/validation.json`` and ``validation.md``; bad rows go to
``quarantine/<run_id>/rows.jsonl.gz`` with their reasons. If the share of bad rows passes
``max_bad_fraction``, :class:`ValidationFailed` is raised after the report is written.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from hhpulse.data.runs import QUARANTINE_KEY, encode_items, latest_run, read_items
from hhpulse.data.store import Store
from hhpulse.hh.records import KNOWN_CURRENCIES, RecordError, parse_item

log = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.2
DEFAULT_SKEW = timedelta(hours=1)
SAMPLE_IDS = 10
WARNING_RULES = frozenset({"missing_responsibility", "missing_published_at"})


class ValidationFailed(RuntimeError):
    """Too many rows broke the data contract; the report says which rules."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class RuleResult:
    count: int = 0
    severity: str = "error"
    sample_ids: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    run_id: str | None
    total: int
    bad: int
    max_bad_fraction: float
    rules: dict[str, RuleResult]
    bad_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.total if self.total else 0.0

    @property
    def passed(self) -> bool:
        return self.bad_fraction <= self.max_bad_fraction

    @property
    def bad_ids(self) -> set[str]:
        return {str(r.get("id")) for r in self.bad_rows}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "total": self.total,
            "bad": self.bad,
            "bad_fraction": round(self.bad_fraction, 6),
            "max_bad_fraction": self.max_bad_fraction,
            "passed": self.passed,
            "rules": {k: asdict(v) for k, v in sorted(self.rules.items())},
        }

    def top_rules(self, n: int = 3) -> str:
        errors = [(k, v.count) for k, v in self.rules.items() if v.severity == "error" and v.count]
        errors.sort(key=lambda kv: -kv[1])
        return ", ".join(f"{k} ({c})" for k, c in errors[:n]) or "none"

    def summary_line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"validation {verdict}: {self.bad}/{self.total} rows quarantined "
            f"({self.bad_fraction:.1%}, threshold {self.max_bad_fraction:.0%}); top rules: {self.top_rules()}"
        )

    def to_markdown(self) -> str:
        lines = [
            f"# Data contract report: run `{self.run_id}`",
            "",
            f"**{'PASSED' if self.passed else 'FAILED'}**: {self.bad} of {self.total} rows quarantined "
            f"({self.bad_fraction:.2%}; the threshold is {self.max_bad_fraction:.0%}).",
            "",
            "| rule | severity | rows | sample ids |",
            "| --- | --- | ---: | --- |",
        ]
        for name, r in sorted(self.rules.items(), key=lambda kv: (-kv[1].count, kv[0])):
            lines.append(f"| `{name}` | {r.severity} | {r.count} | {', '.join(r.sample_ids) or '-'} |")
        if not self.rules:
            lines.append("| (no rule broken) | | 0 | |")
        lines += ["", "Error rows are quarantined with their reasons; warning rows are kept."]
        return "\n".join(lines) + "\n"


def check_item(item: Any, skew: timedelta = DEFAULT_SKEW) -> list[str]:
    """The rules one item breaks (empty when it is clean)."""
    if not isinstance(item, Mapping):
        return ["parse:item"]
    reasons: list[str] = []
    try:
        rec = parse_item(item)
    except RecordError as exc:
        return ["missing_id"] if exc.field == "id" else [f"parse:{exc.field}"]
    if not (rec.name or "").strip():
        reasons.append("missing_name")
    if rec.published_at is None:
        reasons.append("missing_published_at")
    if rec.collected_at is None:
        reasons.append("missing_collected_at")
    if rec.salary_from is not None and rec.salary_to is not None and rec.salary_from > rec.salary_to:
        reasons.append("salary_from_gt_to")
    if any(v is not None and v < 0 for v in (rec.salary_from, rec.salary_to)):
        reasons.append("negative_salary")
    has_amount = rec.salary_from is not None or rec.salary_to is not None
    if has_amount and rec.salary_currency not in KNOWN_CURRENCIES:
        reasons.append("unknown_currency")
    if rec.published_at and rec.collected_at and rec.published_at > rec.collected_at + skew:
        reasons.append("published_after_collected")
    if not (rec.responsibility or "").strip():
        reasons.append("missing_responsibility")
    return reasons


def validate_items(
    items: Iterable[Any],
    *,
    run_id: str | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    skew: timedelta = DEFAULT_SKEW,
) -> ValidationReport:
    """Check items against the contract (pure: nothing is written)."""
    counts: Counter[str] = Counter()
    samples: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    bad_rows: list[dict[str, Any]] = []
    total = 0
    for item in items:
        total += 1
        reasons = check_item(item, skew)
        vid = str(item.get("id")) if isinstance(item, Mapping) else f"#{total}"
        if isinstance(item, Mapping) and item.get("id") is not None:
            if vid in seen:
                reasons.append("duplicate_id")
            seen.add(vid)
        for r in reasons:
            counts[r] += 1
            if len(samples[r]) < SAMPLE_IDS:
                samples[r].append(vid)
        errors = [r for r in reasons if r not in WARNING_RULES]
        if errors:
            row = dict(item) if isinstance(item, Mapping) else {"value": item}
            row["_reasons"] = errors
            bad_rows.append(row)
    rules = {
        k: RuleResult(count=c, severity="warning" if k in WARNING_RULES else "error", sample_ids=samples[k])
        for k, c in counts.items()
    }
    return ValidationReport(run_id, total, len(bad_rows), max_bad_fraction, rules, bad_rows)


def validate_run(
    store: Store,
    run_id: str,
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    skew: timedelta = DEFAULT_SKEW,
) -> ValidationReport:
    """Validate a stored run, write its report and quarantine, and fail over the threshold.

    ``run_id`` may be ``latest``: the newest run by ``collected_at``. Lines of a dump that
    could not be read as items at all (``meta.counts.unreadable``, quarantined by collect)
    count as bad rows under the rule ``unreadable``.
    """
    if run_id == "latest":
        latest = latest_run(store)
        if latest is None:
            raise ValueError(f"no finished collection run in {store.uri('raw/')}")
        run_id = latest
    report = validate_items(
        read_items(store, run_id), run_id=run_id, max_bad_fraction=max_bad_fraction, skew=skew
    )
    _count_unreadable(store, run_id, report)
    if report.bad_rows:
        store.put_bytes(QUARANTINE_KEY.format(run_id=run_id), encode_items(report.bad_rows))
    store.put_json(f"raw/{run_id}/validation.json", report.to_dict())
    store.put_bytes(f"raw/{run_id}/validation.md", report.to_markdown().encode())
    log.info("%s (report: %s)", report.summary_line(), store.uri(f"raw/{run_id}/validation.md"))
    if not report.passed:
        raise ValidationFailed(
            f"run {run_id} failed the data contract: {report.bad_fraction:.1%} of {report.total} rows are bad, "
            f"over the {max_bad_fraction:.0%} threshold; top rules: {report.top_rules()}. "
            f"Report: {store.uri(f'raw/{run_id}/validation.md')}",
            report,
        )
    return report


def _count_unreadable(store: Store, run_id: str, report: ValidationReport) -> None:
    key = f"raw/{run_id}/meta.json"
    unreadable = (
        int((store.get_json(key).get("counts") or {}).get("unreadable") or 0) if store.exists(key) else 0
    )
    if unreadable:
        report.total += unreadable
        report.bad += unreadable
        report.rules["unreadable"] = RuleResult(count=unreadable, severity="error", sample_ids=[])
