"""Benchmark releases -> MVBench-format tasks.json roots, one module per benchmark (see `videochat2.eval.convert`)."""

from videochat2.eval.converters.common import Conversion, Report, Task, write_root

__all__ = ["Conversion", "Report", "Task", "write_root"]
