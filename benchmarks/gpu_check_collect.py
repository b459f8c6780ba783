"""Fold the parts of `benchmarks/gpu_check.sh` into its one JSON file of figures.

    python benchmarks/gpu_check_collect.py WORK_DIR OUT_JSON

WORK_DIR holds what the script's parts left: `tests.xml` (pytest's JUnit report), `train.log`, `eval.log`
and `profile.log` (each benchmark prints a JSON object as its last JSON line), and `<part>.status` files
(`<exit code> <seconds>`). A part that failed or timed out is recorded as such, never dropped.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def last_json(path: Path) -> dict | None:
    """The last line of `path` that parses as a JSON object (the benchmark's result), or None.

    Progress lines (`{"llm7b_row": ...}`) are not results."""
    if not path.is_file():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and '"llm7b_row"' not in line:
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def partial_rows(path: Path, key: str) -> list[dict]:
    """Rows a benchmark printed as `{key: row}` while it ran: what is left when its time limit stopped it."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and key in line:
            try:
                rows.append(json.loads(line)[key])
            except (json.JSONDecodeError, KeyError):
                continue
    return rows


def status(work: Path, part: str) -> dict:
    """Exit code and seconds of one part (`timed_out` where the time limit killed it)."""
    path = work / f"{part}.status"
    if not path.is_file():
        return {"ran": False}
    code, seconds = path.read_text().split()
    return {"ran": True, "exit_code": int(code), "seconds": int(seconds), "timed_out": int(code) in (124, 137)}


def test_report(path: Path) -> dict | None:
    """Counts and each test's outcome (passed / failed / error / skipped with its reason) from JUnit XML."""
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    outcomes = {}
    for case in root.iter("testcase"):
        name = case.get("name")
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                message = (found.get("message") or "").splitlines()
                outcome = f"{kind}: {message[0][:200] if message else ''}"
                break
        outcomes[name] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 1)}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}
    return {**counts, "cases": outcomes}


def collect(work: Path, meta: dict | None = None) -> dict:
    """Everything the check measured, with each part's status beside its figures."""
    return {
        "meta": meta or {},
        "gpu_tests": {"status": status(work, "tests"), "report": test_report(work / "tests.xml")},
        "train_7b": {
            "status": status(work, "train"),
            "result": last_json(work / "train.log"),
            "rows_so_far": partial_rows(work / "train.log", "llm7b_row"),
        },
        "eval_mvbench_sized": {"status": status(work, "eval"), "result": last_json(work / "eval.log")},
        "train_7b_profile": {"status": status(work, "profile"), "result": last_json(work / "profile.log")},
    }


def main(argv: list[str]) -> None:
    work, out = Path(argv[0]), Path(argv[1])
    meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    figures = collect(work, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures in {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
