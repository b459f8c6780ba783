"""`python -m videochat2.eval.convert <benchmark> SRC_ROOT OUT_ROOT`: a benchmark's release -> a tasks.json root.

SRC_ROOT is the benchmark's folder as downloaded; OUT_ROOT receives json/, tasks.json and links to the
release's video folders, ready for `python eval.py benchmark=<benchmark> benchmark.root=OUT_ROOT`. The files
each converter reads are named in its module docstring and in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from videochat2.eval.converters import Conversion, egoschema, mlvu, nextqa, perception_test, videomme, write_root

CONVERTERS: dict[str, Callable[..., Conversion]] = {
    "videomme": videomme.convert,
    "videomme_subtitles": partial(videomme.convert, subtitles=True),
    "egoschema": egoschema.convert,
    "nextqa": nextqa.convert,
    "perception_test": perception_test.convert,
    "mlvu": mlvu.convert,
}
# Options that only one converter takes: option -> the benchmark it belongs to.
ONLY_FOR = {"subtitle_words": "videomme_subtitles", "full": "egoschema"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m videochat2.eval.convert", description=__doc__.splitlines()[0])
    p.add_argument("benchmark", choices=sorted(CONVERTERS))
    p.add_argument("src", type=Path, help="the benchmark's release folder")
    p.add_argument("out", type=Path, help="the tasks.json root to write")
    p.add_argument("--annotations", type=Path, help="another annotation file (or MLVU json folder) than the default")
    p.add_argument("--subtitle-words", type=int, help="videomme_subtitles: keep each video's first N subtitle words")
    p.add_argument("--full", action="store_true", help="egoschema: add the 4,531 questions of withheld answers")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    options = {key: getattr(args, key) for key in ONLY_FOR if getattr(args, key)}
    wrong = [f"--{key.replace('_', '-')}" for key in options if ONLY_FOR[key] != args.benchmark]
    if wrong:
        parser().error(f"{', '.join(wrong)} does not apply to {args.benchmark}")
    if args.annotations is not None:
        options["annotations"] = args.annotations
    if not args.src.is_dir():
        sys.exit(f"convert: {args.src} is not a folder")
    try:
        report = write_root(args.out, CONVERTERS[args.benchmark](args.src, **options))
    except (OSError, ValueError, ImportError) as err:
        sys.exit(f"convert: {err}")
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
