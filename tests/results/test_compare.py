"""Comparing two runs: compare_rows on hand-made rows, Result.compare on real runs, and the
``compare`` command, with the statistics checked against statsmodels and hand-worked cases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runner import Experiment
from runner.results.compare import compare_rows, row_key
from tests.doors import Door


def row(
    rid: str,
    scores: dict[str, float],
    *,
    trial: int = 0,
    output: Any = "out",
    status: str = "success",
    row_hash: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"row_id": rid, "trial": trial}
    if row_hash is not None:
        meta["row_hash"] = row_hash
    return {
        "inputs": {"q": f"question {rid}"},
        "output": output,
        "status": status,
        "metadata": meta,
        "scores": [{"name": k, "score": v} for k, v in scores.items()],
        **extra,
    }


# -- pairing ------------------------------------------------------------------------------------------
def test_trials_are_averaged_per_row_before_pairing() -> None:
    a = [row("r1", {"em": 1}, trial=0), row("r1", {"em": 0}, trial=1), row("r2", {"em": 1})]
    b = [row("r1", {"em": 1}, trial=0), row("r1", {"em": 1}, trial=1), row("r2", {"em": 1})]
    c = compare_rows(a, b)
    s = c.get("em")
    assert s is not None
    assert s.mean_a == pytest.approx(0.75) and s.mean_b == 1.0  # row means 0.5 and 1, not 2/3 over trials
    assert s.n_shared == 2 and (s.wins, s.ties, s.losses) == (1, 1, 0)
    assert s.test == "paired-permutation"  # a row mean of 0.5 is not a 0/1 value: no McNemar
    assert c.n_rows_a == c.n_rows_b == c.n_shared_rows == 2


def test_rows_in_one_run_only_are_counted_and_reported() -> None:
    a = [row("r1", {"em": 1}), row("r2", {"em": 0}), row("r3", {"em": 1})]
    b = [row("r2", {"em": 1}), row("r3", {"em": 1}), row("r4", {"em": 0}), row("r5", {"em": 0})]
    c = compare_rows(a, b, label_a="base", label_b="cand")
    assert (c.n_shared_rows, c.only_a, c.only_b) == (2, 1, 2)
    s = c.get("em")
    assert s is not None and (s.n_shared, s.only_a, s.only_b) == (2, 1, 2)
    assert (s.mean_a, s.mean_b) == (0.5, 1.0)  # means over the shared rows: diff is their difference
    assert "Rows: 2 in both runs, 1 only in base, 2 only in cand" in c.to_text()
    assert c.to_dict()["only_b"] == 2


def test_a_row_that_errored_in_one_run_is_named_per_score_and_as_a_regression() -> None:
    a = [row("r1", {"em": 1}), row("r2", {"em": 1}), row("r3", {"em": 0})]
    b = [
        row("r1", {"em": 1}),
        row("r2", {}, status="error", error="Traceback ...\nValueError: no answer"),
        row("r3", {"em": 1}),
    ]
    c = compare_rows(a, b, label_a="A", label_b="B")
    s = c.get("em")
    assert s is not None and (s.n_shared, s.only_a, s.only_b) == (2, 1, 0)
    text = c.to_text()
    assert "em: 1 row(s) scored only in A, 0 only in B (errors or missing scores)" in text
    assert "Errored row-trials: 0/3 in A, 1/3 in B." in text
    (worst,) = c.regressions
    assert worst.row_id == "r2" and worst.status_b == "error" and worst.scores == {"em": (1.0, None)}
    assert worst.output("b") == "error: ValueError: no answer"
    assert [x.row_id for x in c.improvements] == ["r3"]


def test_rows_without_a_row_id_pair_by_their_inputs_and_target() -> None:
    def logged(q: str, score: float) -> dict[str, Any]:  # as another Parea client would store it
        return {
            "trace_id": f"t-{q}-{score}",
            "inputs": {"q": q},
            "target": "x",
            "scores": [{"name": "em", "score": score}],
        }

    c = compare_rows([logged("a", 0), logged("b", 1)], [logged("b", 1), logged("a", 1)])
    assert c.n_shared_rows == 2 and c.get("em").diff == 0.5  # type: ignore[union-attr]
    assert row_key(logged("a", 0)) == row_key(logged("a", 1)) != row_key(logged("b", 0))


def test_regressions_and_improvements_rank_by_the_largest_scaled_change() -> None:
    # "len" is on another scale: its +40 must not outweigh the em drop of the same row.
    a = [row(f"r{i}", {"em": 1, "len": 10}) for i in range(4)]
    b = [
        row("r0", {"em": 0, "len": 50}),  # em fell, len rose: in both lists
        row("r1", {"em": 1, "len": 20}),  # len rose by a quarter of its range
        row("r2", {"em": 1, "len": 10}),  # unchanged: in neither
        row("r3", {"em": 0, "len": 10}),
    ]
    c = compare_rows(a, b, top=5)
    assert [x.row_id for x in c.regressions] == ["r0", "r3"]
    assert [x.row_id for x in c.improvements] == ["r0", "r1"]
    assert c.improvements[1].best == pytest.approx(0.25)
    assert compare_rows(a, b, top=1).regressions[0].row_id == "r0"


def test_few_shared_rows_or_changed_rows_warn() -> None:
    a = [row(f"a{i}", {"em": 1}) for i in range(10)]
    b = [row(f"b{i}", {"em": 1}) for i in range(9)] + [row("a0", {"em": 1})]
    c = compare_rows(a, b, label_a="A", label_b="B")
    assert c.warnings and "only 1 of the 10 rows of A and 10 rows of B are in both runs" in c.warnings[0]
    assert "warning: only 1 of the 10 rows" in c.to_markdown()
    same = compare_rows([row("r1", {"em": 1}, row_hash="h1")], [row("r1", {"em": 1}, row_hash="h2")])
    assert same.warnings == [
        "1 row(s) in both runs have different content (e.g. row r1): the dataset changed between the runs"
    ]
    assert compare_rows(a, a).warnings == []


def test_usage_deltas() -> None:
    a = [row("r1", {"em": 1}, latency=0.2, total_tokens=100, cost=0.001)]
    b = [row("r1", {"em": 1}, latency=0.5, total_tokens=150, cost=0.003)]
    c = compare_rows(a, b)
    assert c.usage["latency (s)"] == (0.2, 0.5)
    assert c.usage["total tokens"] == (100, 150) and c.usage["cost ($)"] == (0.001, 0.003)
    assert "Per row-trial: latency 200 ms → 500 ms (+300 ms); total tokens 100 → 150 (+50); cost $0.001 → $0.003" in (
        c.to_text()
    )


# -- the statistics, against independent computations -------------------------------------------------
def mcnemar_rows(n11: int, n10: int, n01: int, n00: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows whose (A, B) exact-match values make the 2x2 table [[n11, n10], [n01, n00]]."""
    pairs = [(1, 1)] * n11 + [(1, 0)] * n10 + [(0, 1)] * n01 + [(0, 0)] * n00
    a = [row(f"r{i}", {"em": x}) for i, (x, _) in enumerate(pairs)]
    b = [row(f"r{i}", {"em": y}) for i, (_, y) in enumerate(pairs)]
    return a, b


def test_a_known_mcnemar_table_matches_statsmodels_and_the_hand_computation() -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = mcnemar_rows(n11=20, n10=10, n01=3, n00=7)
    s = compare_rows(a, b).get("em")
    assert s is not None and s.test == "mcnemar-exact"
    expected = mcnemar([[20, 10], [3, 7]], exact=True).pvalue
    # by hand: 13 discordant pairs, 3 of one kind: 2 * P(X <= 3), X ~ Binomial(13, 1/2)
    assert expected == pytest.approx(2 * (1 + 13 + 78 + 286) / 2**13)
    assert s.p_value == pytest.approx(expected, rel=1e-12)
    assert (s.wins, s.ties, s.losses) == (3, 27, 10)
    assert s.diff == pytest.approx((3 - 10) / 40)


@pytest.mark.parametrize("n", [1, 2, 7, 13, 40, 41, 1000, 20001])
def test_mcnemar_equals_scipys_binomtest_on_every_split(n: int) -> None:
    import scipy.stats

    from runner.results.paired import _mcnemar_exact

    for worse in sorted({0, 1, 2, n // 3, n // 2, n // 2 + 1, n - 2, n - 1, n} & set(range(n + 1))):
        a = np.array([1.0] * worse + [0.0] * (n - worse))
        expected = scipy.stats.binomtest(worse, n, 0.5).pvalue
        assert _mcnemar_exact(a, 1 - a) == pytest.approx(expected, rel=1e-9, abs=1e-300), (worse, n)


def test_a_compare_does_not_import_scipy_stats() -> None:
    # The compare page's first view must not pay scipy.stats' import (~0.7 s): its tests use
    # scipy.special only. A fresh process, so nothing else has imported it.
    code = textwrap.dedent("""
        import sys
        from runner.results.compare import compare_rows
        def row(i, em, sim):
            return {"inputs": {"q": i}, "output": "o", "status": "success",
                    "metadata": {"row_id": str(i), "trial": 0},
                    "scores": [{"name": "em", "score": em}, {"name": "sim", "score": sim}]}
        a = [row(i, i % 2, (i * 7 % 11) / 11) for i in range(300)]
        b = [row(i, (i // 2) % 2, (i * 5 % 11) / 11) for i in range(300)]
        small = compare_rows(a[:5], b[:5])
        big = compare_rows(a, b)
        assert all(s.p_value is not None for s in big.scores), big.to_text()
        print(sorted({s.test for s in big.scores} | {s.test for s in small.scores if s.test}))
        print("scipy.stats" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    tests, loaded = out.splitlines()
    assert "mcnemar-exact" in tests and "paired-permutation" in tests
    assert loaded == "False"


def test_a_permutation_test_with_an_exact_answer() -> None:
    # Differences 0.5, 1, 1.5, 2 (sum 5): of the 16 sign patterns only all-plus and all-minus reach
    # |sum| >= 5, so the two-sided exact p-value is 2/16.
    base = [0.3, 0.1, 0.7, 0.2]
    a = [row(f"r{i}", {"sim": v}) for i, v in enumerate(base)]
    b = [row(f"r{i}", {"sim": v + d}) for i, (v, d) in enumerate(zip(base, [0.5, 1.0, 1.5, 2.0], strict=True))]
    s = compare_rows(a, b).get("sim")
    assert s is not None and s.test == "paired-permutation"
    brute = sum(
        abs(sum(sg * d for sg, d in zip(signs, [0.5, 1, 1.5, 2], strict=True))) >= 5
        for signs in product([1, -1], repeat=4)
    )
    assert brute == 2 and s.p_value == pytest.approx(2 / 16)


def test_several_scores_get_holm_and_the_output_says_so() -> None:
    from statsmodels.stats.multitest import multipletests

    a, b = mcnemar_rows(n11=20, n10=10, n01=3, n00=7)
    for i, (ra, rb) in enumerate(zip(a, b, strict=True)):  # a second score: a small shift
        ra["scores"].append({"name": "sim", "score": 0.5 + 0.01 * (i % 7)})
        rb["scores"].append({"name": "sim", "score": 0.52 + 0.01 * (i % 5)})
    c = compare_rows(a, b)
    ps = [s.p_value for s in c.scores]
    assert all(p is not None for p in ps)
    expected = multipletests(ps, method="holm")[1]
    assert [s.p_adjusted for s in c.scores] == pytest.approx(list(expected))
    assert "p-values are Holm-adjusted across the 2 scores compared." in c.to_text()
    assert "- p-values are Holm-adjusted across the 2 scores compared." in c.to_markdown()
    assert c.to_dict()["holm_adjusted"] is True
    one = compare_rows(*mcnemar_rows(5, 2, 1, 2))
    assert "Holm" not in " ".join(one.notes()) and one.to_dict()["holm_adjusted"] is False


def test_seeded_and_deterministic_whatever_the_order_rows_were_stored_in() -> None:
    a = [row(f"r{i}", {"sim": (i * 37 % 11) / 10}) for i in range(60)]
    b = [row(f"r{i}", {"sim": (i * 53 % 13) / 12}) for i in range(60)]
    first = compare_rows(a, b)
    assert compare_rows(a, b).to_dict() == first.to_dict()
    assert compare_rows(list(reversed(a)), b).scores == first.scores
    assert compare_rows(a, b, seed=1).scores != compare_rows(a, b, seed=2).scores


# -- rendering ----------------------------------------------------------------------------------------
def test_markdown_is_a_pull_request_comment() -> None:
    a, b = mcnemar_rows(n11=3, n10=1, n01=2, n00=0)
    a[4]["inputs"] = {"q": "a | pipe\nand a newline"}
    md = compare_rows(a, b, label_a="main-7", label_b="pr-12").to_markdown()
    lines = md.splitlines()
    assert lines[0] == "### pr-12 (B) vs main-7 (A)"
    assert lines[2] == "| score | A | B | B − A | 95% CI of B − A | p | p (Holm) | win/tie/loss | n | test |"
    assert lines[3] == "|---|---|---|---|---|---|---|---|---|---|"
    assert lines[4].startswith("| em | 0.667 | 0.833 | +0.167 | [") and lines[4].endswith(
        "| 1.000 | 1.000 | 2/3/1 | 6 | mcnemar-exact |"
    )
    assert "- Rows: 6 in both runs, 0 only in main-7, 0 only in pr-12" in md
    assert "**Regressed most**" in md and "**Improved most**" in md
    assert "| r3 | q: question r3 | out | out | em 1.00→0.00 |" in md
    assert "a \\| pipe and a newline" in md  # a cell never breaks the table
    widths = {len(re.split(r"(?<!\\)\|", line)) for line in lines if line.startswith("|")}
    assert widths == {12, 7}  # the score table's 10 columns, the row tables' 5: no cell leaks a pipe


def test_html_and_json() -> None:
    a, b = mcnemar_rows(3, 1, 2, 0)
    c = compare_rows(a, b)
    assert "<table>" in c._repr_html_() and "mcnemar-exact" in c._repr_html_()
    data = json.loads(json.dumps(c.to_dict()))
    assert data["scores"][0]["name"] == "em" and data["regressions"][0]["scores"] == {"em": [1.0, 0.0]}


# -- Result.compare on real runs --------------------------------------------------------------------------
def _questions(n: int) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "x": i, "target": str(i)} for i in range(n)]


def test_result_compare_on_real_runs(door: Door) -> None:
    from evals import exact_match

    data = _questions(12)
    base = Experiment(name="echo", data=data, func=lambda x: str(x), evals=[exact_match], **door.kwargs())
    worse = Experiment(
        name="echo", data=data, func=lambda x: str(x) if x % 3 else "?", evals=[exact_match], **door.kwargs()
    )
    a = base.run("base", quiet=True)
    b = worse.run("cand", quiet=True, n_trials=2)
    c = b.compare(a)
    s = c.get("exact_match")
    assert s is not None
    assert (c.label_a, c.label_b) == ("base", "cand")
    assert s.mean_a == 1.0 and s.mean_b == pytest.approx(8 / 12) and s.n_shared == 12
    assert (s.wins, s.ties, s.losses) == (0, 8, 4)
    assert s.p_value == pytest.approx(2 / 2**4)  # McNemar: 4 discordant rows, all one way (trials agree)
    assert sorted(r.row_id for r in c.regressions) == ["q0", "q3", "q6", "q9"][: len(c.regressions)]
    assert len(c.regressions) == 4 and c.regressions[0].output_b == "?"
    assert c.errors_b == (0, 24)  # two trials of each row


# -- the compare command ----------------------------------------------------------------------------------
CONFIG = """
import os
from runner import Experiment
from evals import exact_match

WRONG = {int(i) for i in os.environ.get("WRONG", "").split(",") if i}

def answer(i):
    return "wrong" if i in WRONG else "yes"

def length(log):
    return float(len(str(log.output)))

qa = Experiment(name="qa", data=[{"i": i, "target": "yes"} for i in range(N)], func=answer, evals=[exact_match, length])
"""


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compare_command(tmp_path: Path) -> None:
    (tmp_path / "qa.py").write_text(textwrap.dedent(CONFIG).replace("N)", "20)"), encoding="utf-8")
    (tmp_path / "other.py").write_text(textwrap.dedent(CONFIG).replace("N)", "3)").replace('"i": i', '"i": i + 100'))
    assert cli("qa.py", "--run-name", "base", "--quiet", cwd=tmp_path).returncode == 0
    assert cli("qa.py", "--run-name", "cand", "--quiet", env={"WRONG": "1,2,3"}, cwd=tmp_path).returncode == 0
    assert cli("other.py", "--run-name", "elsewhere", "--quiet", cwd=tmp_path).returncode == 0

    text = cli("compare", "base", "cand", cwd=tmp_path)
    assert text.returncode == 0, text.stderr  # a comparison informs; gates decide
    assert text.stdout.startswith("cand (B) vs base (A)\n")
    assert "p-values are Holm-adjusted across the 2 scores compared." in text.stdout
    assert "Regressed most:" in text.stdout and text.stderr == ""

    md = cli("compare", "base", "cand", "--markdown", "--top", "1", cwd=tmp_path)
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("### cand (B) vs base (A)\n")
    regressed = md.stdout.split("**Regressed most**")[1].split("**Improved most**")[0]
    assert regressed.count("| i: ") == 1  # --top 1

    as_json = json.loads(cli("compare", "base", "cand", "--json", cwd=tmp_path).stdout)
    em = next(s for s in as_json["scores"] if s["name"] == "exact_match")
    assert (em["mean_a"], em["mean_b"], em["losses"]) == (1.0, 0.85, 3)
    assert as_json["run_a"]["run_name"] == "base" and as_json["holm_adjusted"] is True

    mismatch = cli("compare", "base", "elsewhere", cwd=tmp_path)
    assert mismatch.returncode == 0
    assert mismatch.stderr.startswith("warning: only 0 of the 20 rows of base and 3 rows of elsewhere")

    missing = cli("compare", "base", "nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no run or experiment called 'nope'; `python -m runner list` shows them"
    both = cli("compare", "base", "cand", "--json", "--markdown", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_compare_command_over_http(tmp_path: Path) -> None:
    servers = pytest.importorskip("tests.servers")
    (tmp_path / "qa.py").write_text(textwrap.dedent(CONFIG).replace("N)", "6)"), encoding="utf-8")
    with servers.start_server(tmp_path / "server.db") as server:
        env = {"PAREA_BASE_URL": server.base_url}
        assert cli("qa.py", "--run-name", "base", "--quiet", env=env, cwd=tmp_path).returncode == 0
        env["WRONG"] = "0"
        assert cli("qa.py", "--run-name", "cand", "--quiet", env=env, cwd=tmp_path).returncode == 0
        proc = cli("compare", "base", "cand", "--json", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        em = next(s for s in json.loads(proc.stdout)["scores"] if s["name"] == "exact_match")
        assert (em["n_shared"], em["losses"], em["mean_b"]) == (6, 1, pytest.approx(5 / 6))
        gated = cli("qa.py", "--baseline", "base", "--fail-under", "exact_match=0.9", env=env, cwd=tmp_path)
        assert gated.returncode == 1, gated.stderr
        assert "(B) vs base (A)" in gated.stdout
        assert gated.stderr.strip().splitlines()[-1] == "gate failed: exact_match mean 0.833 < 0.9"
    assert not (tmp_path / ".runner").exists()


def _ranked_by_definition(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], top: int) -> tuple[Any, Any]:
    """The rows that regressed and improved most, computed row by row from :class:`RowChange`'s
    definition (the oracle of the array computation in ``compare_runs``)."""
    from runner.results.compare import run_rows

    a, b = run_rows(rows_a), run_rows(rows_b)
    shared = [rid for rid in a.first if rid in b.first]
    names = list(a.means) + [n for n in b.means if n not in a.means]
    scale = {}
    for name in names:
        values = [per[rid] for per in (a.means.get(name, {}), b.means.get(name, {})) for rid in shared if rid in per]
        scale[name] = max(values) - min(values) if values else 0.0
    moved = []
    for rid in shared:
        moves, per = [], {}
        for name in names:
            va, vb = a.means.get(name, {}).get(rid), b.means.get(name, {}).get(rid)
            if va is None and vb is None:
                continue
            per[name] = (va, vb)
            if va is None or vb is None:
                moves.append(1.0 if va is None else -1.0)
            elif va != vb and scale[name] > 0:
                moves.append((vb - va) / scale[name])
        if any(moves):
            moved.append((rid, min(0.0, *moves), max(0.0, *moves), per))
    worst = [m for m in sorted(moved, key=lambda m: m[1]) if m[1] < 0][:top]
    best = [m for m in sorted(moved, key=lambda m: -m[2]) if m[2] > 0][:top]
    return worst, best


@pytest.mark.parametrize("seed", range(6))
def test_the_rows_ranked_over_arrays_are_those_of_the_definition(seed: int) -> None:
    """Missing scores on either side, trials, ties of the largest change (kept in row order),
    a score one run lacks altogether, and rows in one run only."""
    import random

    rng = random.Random(seed)

    def run(n: int, names: tuple[str, ...]) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            for trial in range(rng.choice((1, 1, 2))):
                scores = {k: float(rng.choice((0, 1, 2, 0.5))) for k in names if rng.random() > 0.15}
                out.append(row(f"r{i:03d}", scores, trial=trial, status=rng.choice(("success", "error"))))
        rng.shuffle(out)
        return out

    rows_a, rows_b = run(120, ("em", "len")), run(130, ("em", "len", "new"))
    worst, best = _ranked_by_definition(rows_a, rows_b, top=7)
    cmp = compare_rows(rows_a, rows_b, top=7)
    assert worst and best
    assert [(c.row_id, c.worst, c.best, c.scores) for c in cmp.regressions] == [(m[0], m[1], m[2], m[3]) for m in worst]
    assert [(c.row_id, c.worst, c.best, c.scores) for c in cmp.improvements] == [(m[0], m[1], m[2], m[3]) for m in best]
    for c in (*cmp.regressions, *cmp.improvements):
        first = next(r for r in rows_a if r["metadata"]["row_id"] == c.row_id and r["metadata"]["trial"] == 0)
        assert c.inputs == first["inputs"] and c.status_a == first["status"]
