"""Copy a real run folder into ``tests/report/data/NAME`` as a small, portable fixture.

    python tests/report/trim_fixture.py RUN_DIR NAME [--keep-results N] [--only SUBSTRING]

Keeps the journal, meta/state/plan files and check artifacts; drops logs, markers, reports and the
baseline; rewrites the run folder's absolute path to a relative one (artifact paths then resolve inside
the fixture), and keeps the full results of only the first N reachability checks (the others fall back on
the bounded grids of their details, which the tests cover too).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

KEEP = ("journal.jsonl", "meta.json", "state.json", "plan.json", "plan.yaml")


def trim(src: Path, dest: Path, keep_results: int, only: str | None = None) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    prefix = str(src.resolve()) + "/"
    for name in KEEP:
        if (src / name).exists():
            text = (src / name).read_text().replace(prefix, "")
            if name == "meta.json":
                meta = json.loads(text)
                meta["plan_path"] = f"plans/examples/{Path(str(meta.get('plan_path'))).name}"
                meta["host"] = "host"
                text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
            (dest / name).write_text(text)
    results = sorted((src / "checks").glob("*/results-*.json")) if (src / "checks").is_dir() else []
    if only:
        results = [p for p in results if only in str(p)]
    kept = set(results[:keep_results])
    for path in sorted((src / "checks").rglob("*")) if (src / "checks").is_dir() else []:
        if path.is_file() and (not path.name.startswith("results-") or path in kept):
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text().replace(prefix, ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--keep-results", type=int, default=1)
    parser.add_argument("--only", help="keep only results files whose path contains this")
    args = parser.parse_args()
    trim(args.run_dir, Path(__file__).parent / "data" / args.name, args.keep_results, args.only)


if __name__ == "__main__":
    main()
