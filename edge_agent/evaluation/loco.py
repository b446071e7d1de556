"""NAB leave-one-category-out: how much of a tuned setting's score survives on data it never saw.

For each value of one setting (say ``detector.params.threshold``), every file is scored once.
Then, for each category (the folder of a file: ``realTweets``, ``realAWSCloudwatch``, ...),
the value that scores best on the *other* categories is chosen, and the category is scored
with it. The held-out raw scores of all categories, pooled, give the leave-one-category-out
corpus score: what tuning on the development data is worth on a kind of data it has not
seen. Beside it: the best in-sample value (tuned on everything) and the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from edge_agent.evaluation import nab


def parse_grid(spec: str) -> tuple[str, list[Any]]:
    """``key=v1,v2,...`` -> (key, [values as YAML scalars])."""
    key, sep, raw = spec.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise ValueError(f"--loco expects key=v1,v2,..., got {spec!r}")
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if len(values) < 2:
        raise ValueError(f"--loco {key}: give at least two values to choose from")
    return key.strip(), values


def category(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else "."


def leave_one_category_out(per_value: dict[Any, dict[str, Any]], profile: nab.Profile = nab.STANDARD) -> dict[str, Any]:
    """``per_value``: {value: evaluate.summarise() output}. Returns the LOCO report."""
    values = list(per_value)
    files = [f["file"] for f in per_value[values[0]]["files"]]
    cats = sorted({category(f) for f in files})
    # raw[value][file], windows[file]
    raw = {v: {f["file"]: f["raw"][profile.name] for f in per_value[v]["files"]} for v in values}
    windows = {f["file"]: f["windows"] for f in per_value[values[0]]["files"]}

    def corpus(value: Any, keep: Callable[[str], bool]) -> float:
        names = [f for f in files if keep(f)]
        return nab.normalized([raw[value][f] for f in names], [windows[f] for f in names], profile)

    chosen: dict[str, Any] = {}
    held_out_raw: list[float] = []
    held_out_windows: list[int] = []
    per_category = []
    for cat in cats:
        best = max(values, key=lambda v, c=cat: corpus(v, lambda f: category(f) != c))
        chosen[cat] = best
        names = [f for f in files if category(f) == cat]
        held_out_raw += [raw[best][f] for f in names]
        held_out_windows += [windows[f] for f in names]
        per_category.append({
            "category": cat, "files": len(names), "windows": sum(windows[f] for f in names), "chosen": best,
            "raw_held_out": sum(raw[best][f] for f in names),
        })
    in_sample = max(values, key=lambda v: corpus(v, lambda f: True))
    return {
        "profile": profile.name,
        "values": values,
        "score_by_value": {str(v): corpus(v, lambda f: True) for v in values},
        "in_sample_best": {"value": in_sample, "score": corpus(in_sample, lambda f: True)},
        "loco_score": nab.normalized(held_out_raw, held_out_windows, profile),
        "per_category": per_category,
    }


def format_report(key: str, reports: dict[str, dict[str, Any]]) -> str:
    lines = [f"leave-one-category-out over {key}"]
    for name, r in reports.items():
        lines.append(f"  {name}: in-sample best {key}={r['in_sample_best']['value']} scores {r['in_sample_best']['score']:.1f}; "
                     f"leave-one-category-out {r['loco_score']:.1f}")
        lines.append("    by value: " + ", ".join(f"{v}: {s:.1f}" for v, s in r["score_by_value"].items()))
        lines.append("    chosen per held-out category: " + ", ".join(f"{c['category']}={c['chosen']}" for c in r["per_category"]))
    return "\n".join(lines)
