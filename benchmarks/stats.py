"""Timing loops and latency statistics in the conventions of TFLite's `benchmark_model`."""

import dataclasses
import json
import os
import platform
import time
from importlib import metadata

import numpy as np


def machine():
    """CPU model, core count and library versions, recorded with every measurement."""
    versions = {}
    for package in ("tensorflow", "keras", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), **versions, "cpu_flags": _cpu_flags()}


def _cpu_flags():
    """The CPU features int8, bfloat16 and oneDNN timings depend on (AVX2, AVX-512, VNNI,
    bfloat16, AMX)."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                              "amx_bf16", "amx_int8")  # fmt: skip
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarize(seconds):
    """Latency statistics in milliseconds of a list of per-run durations in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    percentiles = np.percentile(ms, [50, 90, 95, 99])
    return {
        "count": int(ms.size),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        **{f"p{p}_ms": float(v) for p, v in zip((50, 90, 95, 99), percentiles, strict=True)},
    }


def time_runs(run, warmup_runs=1, min_runs=10, min_secs=1.0, max_secs=150.0):
    """Times `run()` as `benchmark_model` does.

    First inference and warm-up are timed apart; the timed phase runs until both `min_runs` and
    `min_secs` are reached, and stops early once `max_secs` have passed.

    Returns:
        {"first_ms", "warmup_mean_ms", "runs": summarize(timed phase)}.
    """
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    warmup = []
    for _ in range(warmup_runs):
        start = time.perf_counter()
        run()
        warmup.append(time.perf_counter() - start)
    timed, began = [], time.perf_counter()
    while True:
        start = time.perf_counter()
        run()
        timed.append(time.perf_counter() - start)
        elapsed = time.perf_counter() - began
        if (len(timed) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
            break
    return {
        "first_ms": first * 1000,
        "warmup_mean_ms": float(np.mean(warmup) * 1000) if warmup else None,
        "runs": summarize(timed),
    }


@dataclasses.dataclass(frozen=True)
class Timing:
    """The timed phase of `time_runs`, as every benchmark script takes it on its command line."""

    warmup_runs: int = 1
    min_runs: int = 10
    min_secs: float = 1.0
    max_secs: float = 150.0

    @classmethod
    def from_args(cls, args):
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    def as_dict(self):
        return dataclasses.asdict(self)


def add_timing_arguments(parser, **defaults):
    """--warmup-runs, --min-runs, --min-secs, --max-secs; `defaults` overrides Timing's."""
    timing = Timing(**defaults)
    helps = {
        "warmup_runs": "untimed runs after the first inference",
        "min_runs": "timed runs, at least",
        "min_secs": "timed seconds, at least",
        "max_secs": "stop the timed phase after this many seconds",
    }
    for field in dataclasses.fields(Timing):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=field.type,
            default=getattr(timing, field.name),
            help=f"{helps[field.name]} (default: %(default)s)",
        )


def time_steps(step, warmup_steps=2, steps=8):
    """Times `steps` calls of a training `step()` after `warmup_steps` untimed ones (the first
    traces or compiles). Returns {"first_s", "steps": summarize(timed), "total_s"}."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(warmup_steps - 1):
        step()
    timed = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        timed.append(time.perf_counter() - start)
    return {"first_s": first, "steps": summarize(timed), "total_s": float(sum(timed))}


def percent(value):
    """A [0, 1] score as a percentage with one decimal; "—" for None."""
    return "—" if value is None else f"{100 * value:.1f}"


def generated_by(report):
    """ "Generated by `command` on CPU (its flags)": how a report's numbers were made."""
    machine = report["machine"]
    flags = ", ".join(machine["cpu_flags"]) or "no AVX2"
    return f"Generated by `{report['command']}` on {machine['cpu']} ({flags})"


def write_report(out, text, report):
    """Writes the Markdown `text` to `out` and `report` as JSON beside it, each atomically,
    and prints the Markdown."""
    from tfdeeplab.atomic import atomic_write_bytes

    atomic_write_bytes(out, text.encode())
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(report, indent=2).encode())
    print(text)
