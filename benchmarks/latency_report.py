"""The latency report of `benchmarks.latency` as text: a plain table, a Markdown table, a chart."""

from benchmarks.artifacts import MIB

_COLUMNS = (
    ("artifact", "{label}"),
    ("format", "{format}"),
    ("input", "{input_hw}"),
    ("MiB", "{size_mib:.1f}"),
    ("init ms", "{init_ms:.0f}"),
    ("first ms", "{first_ms:.1f}"),
    ("mean ms", "{mean_ms:.1f}"),
    ("std", "{std_ms:.1f}"),
    ("p50 ms", "{p50_ms:.1f}"),
    ("p95 ms", "{p95_ms:.1f}"),
    ("runs", "{count}"),
    ("peak RSS MiB", "{peak_rss_mib:.0f}"),
    ("GMACs", "{gmacs:.2f}"),
    ("GFLOP/s", "{gflops_per_s:.1f}"),
    ("% peak", "{percent_of_peak:.0f}"),
    ("XNNPACK partitions", "{partitions}"),
)


def _cells(row):
    names = {"keras": "Keras", "saved_model": "SavedModel", "tflite": "TFLite"}
    values = {
        **row,
        **row["runs"],
        "format": f"{names[row['kind']]} {row['precision']}",
        "input_hw": "×".join(str(d) for d in row["input_shape"][1:3]),
        "size_mib": row["size_bytes"] / MIB,
        "gmacs": row["macs"] / 1e9,
        "percent_of_peak": 100 * row["fraction_of_peak"],
        "partitions": row.get("partitions", "-"),
    }
    return [template.format(**values) for _, template in _COLUMNS]


def _widths():
    return [42, 18, *(max(10, len(name) + 1) for name, _ in _COLUMNS[2:])]


def plain_row(row):
    return "".join(
        f"{cell:<{width}}" if index < 2 else f"{cell:>{width}}"
        for index, (cell, width) in enumerate(zip(_cells(row), _widths(), strict=True))
    )


def plain_header():
    return "".join(
        f"{name:<{width}}" if index < 2 else f"{name:>{width}}"
        for index, ((name, _), width) in enumerate(zip(_COLUMNS, _widths(), strict=True))
    )


def plain_table(report):
    lines = [plain_header(), *(plain_row(row) for row in report["results"])]
    return "\n".join(lines)


def markdown_table(report):
    header = [name for name, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in report["results"]]
    return "\n".join(lines)


def write_chart(report, path):
    """PNG: mean latency per artifact, whiskers from p50 to p95."""
    from tfdeeplab.plots import latency_bars

    rows = report["results"]
    settings = report["settings"]
    shapes = {tuple(row["input_shape"][1:3]) for row in rows}
    size = "×".join(map(str, shapes.pop())) if len(shapes) == 1 else "each file's size"
    runs = [row["runs"] for row in rows]
    return latency_bars(
        path,
        [f"{row['label']} ({_cells(row)[1]})" for row in rows],
        [r["mean_ms"] for r in runs],
        [r["p50_ms"] for r in runs],
        [r["p95_ms"] for r in runs],
        title=f"Latency at {size}, batch {settings['batch']}, {settings['threads']} threads",
    )
