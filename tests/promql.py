"""Reading PromQL and Prometheus's text format, for the tests of the monitoring files (tests/system/test_monitoring.py,
tests/compose): which metrics an expression names, which a /metrics page exports."""

from __future__ import annotations

import re

# Names in PromQL that are not metrics: its operators.
_OPERATORS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers less label matchers, ranges, grouping labels,
    functions and operators."""
    expression = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)
    expression = re.sub(r"\{[^}]*\}", "", expression)
    expression = re.sub(r"\[[^\]]*\]", "", expression)
    expression = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expression)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression):
        if expression[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group() not in _OPERATORS:
            names.add(match.group())
    return names


def exported(text: str) -> set[str]:
    """The sample names a /metrics page exports, with those of its families that have no sample yet (a counter with
    labels, before its first increment)."""
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE))
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
    return names
