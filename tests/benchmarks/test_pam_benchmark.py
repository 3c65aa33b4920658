"""The PAM benchmark's bookkeeping: equal-budget verdict and code-versioned caches."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import pam as pam_bench  # noqa: E402

EVERY = "+".join(pam_bench.TASKS)


def _result(separate: int, equal: int, mtz: int, pam: int) -> dict:
    row = lambda flops: {s: (flops, 1) for s in ("classes_0_2", EVERY)}  # noqa: E731
    return {"separate": row(separate), "separate_equal": row(equal), "mtz": row(mtz), "pam": row(pam)}


def test_verdict_compares_pam_with_the_equal_budget_separate_networks():
    v = pam_bench.verdict(_result(separate=400, equal=200, mtz=500, pam=160))
    assert v["all_tasks_ratio_vs_separate_equal_budget"] == 200 / 160
    assert v["all_tasks_ratio_vs_separate_pruned_once"] == 400 / 160
    assert not v["met"]  # 2.5x against the once-pruned networks, only 1.25x at equal budget
    assert pam_bench.verdict(_result(separate=400, equal=300, mtz=500, pam=160))["met"]


def test_verdict_counts_a_subset_worse_than_any_baseline():
    v = pam_bench.verdict(_result(separate=400, equal=150, mtz=500, pam=160))
    assert v["subsets_worse_than_a_baseline"] == ["classes_0_2", EVERY] and not v["met"]


def test_caches_are_keyed_by_the_code_version(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    first = pam_bench._cached(True, "stage", lambda: calls.append(1) or "value")
    again = pam_bench._cached(True, "stage", lambda: calls.append(1) or "other")
    assert (first, again, len(calls)) == ("value", "value", 1)
    monkeypatch.setattr(pam_bench, "code_version", lambda: "changedcode0")
    assert pam_bench._cached(True, "stage", lambda: "recomputed") == "recomputed"
    names = sorted(p.name for p in (tmp_path / "out" / "pam_cache").iterdir())
    assert len(names) == 2 and any(n.endswith("_changedcode0.pkl") for n in names)
