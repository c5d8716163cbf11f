"""Accuracy reports: a tidy table per dataset, a Markdown summary with mean ± std, a bar chart,
and the provenance of every run in it.

The tidy table has one row per (dataset, model, seed, protocol, metric). Protocol is `sampled`
(target plus 100 stored negatives), `full` (every item, the user's other interactions excluded)
or `training` (epochs, best epoch, training seconds, seconds per epoch, parameter count). New
results replace the rows of the same (model, seed) and keep every other row, so reports of
different models can be added over several invocations.
"""

from __future__ import annotations

import fcntl
import json
import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from convrec.errors import ConvbenchError  # noqa: E402
from convrec.metrics import metric_names  # noqa: E402

COLUMNS = ["dataset", "model", "seed", "protocol", "metric", "value"]
TRAINING_METRICS = ["epochs", "best_epoch", "train_seconds", "seconds_per_epoch", "params"]

TUNING_STATEMENT = (
    "Tuning budget: none for any model. Each model runs with the defaults its docstring "
    "documents (from its paper or its authors' code) unless the model label lists an override. "
    "Every model is selected the same way: validation NDCG@10 (sampled) every `eval_every` "
    "epochs, a stop after `patience` evaluations without improvement, and the test metrics of "
    "the checkpoint with the best validation score. The defaults of ConvRec, SASRec and CARCA "
    "set `patience` to `max_epochs`, so they train every epoch, as their authors' code does. "
    "`eval_every`, `patience` and `max_epochs` are per-model defaults, listed with every other "
    "setting in the provenance file."
)


def result_rows(result: dict) -> list[dict]:
    """Flatten one run's result into tidy rows."""
    base = {"dataset": result["dataset"], "model": result["model"], "seed": result["seed"]}
    rows = []
    for protocol in ("sampled", "full"):
        for metric, value in result["metrics"][f"test_{protocol}"].items():
            rows.append({**base, "protocol": protocol, "metric": metric, "value": value})
    train = result["train"]
    training_values = {
        "epochs": train["epochs_run"],
        "best_epoch": train["best_epoch"],
        "train_seconds": train["train_seconds"],
        "seconds_per_epoch": train["seconds_per_epoch"],
        "params": result["params"],
    }
    for metric, value in training_values.items():
        rows.append({**base, "protocol": "training", "metric": metric, "value": value})
    return rows


def write_accuracy_report(results: list[dict], output_dir: Path) -> list[Path]:
    """Merge `results` into the per-dataset reports under `output_dir`; return the files written.

    A lock file in `output_dir` serialises writers, so that processes sharing one output
    directory (for example one per seed) do not lose each other's rows.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _write_locked(results, output_dir)


def _write_locked(results: list[dict], output_dir: Path) -> list[Path]:
    written = []
    frame = pd.DataFrame([row for result in results for row in result_rows(result)],
                         columns=COLUMNS)
    for dataset, new_rows in frame.groupby("dataset", sort=True):
        provenance_path = output_dir / f"{dataset}.provenance.json"
        runs = _read_provenance(provenance_path)
        for result in results:
            if result["dataset"] != dataset:
                continue
            _check_same_data(provenance_path, runs, result)
            runs[f"{result['model']}/seed{result['seed']}"] = {
                "split_fingerprint": result.get("split_fingerprint"),
                "config": result["config"],
                "epochs_run": result["train"]["epochs_run"],
                "best_epoch": result["train"]["best_epoch"],
                "stopped_early": result["train"]["stopped_early"],
                "wall_seconds": result["wall_seconds"],
                "provenance": result["provenance"],
            }
        csv_path = output_dir / f"{dataset}.csv"
        table = _merge(csv_path, new_rows)
        _write_text_atomic(csv_path, table.to_csv(index=False, float_format="%.6f"))
        _write_text_atomic(provenance_path, json.dumps(runs, indent=2, sort_keys=True) + "\n")

        markdown_path = output_dir / f"{dataset}.md"
        _write_text_atomic(markdown_path, render_markdown(dataset, table, runs))
        chart_path = output_dir / f"{dataset}.png"
        plot_accuracy(dataset, table, chart_path)
        written += [csv_path, markdown_path, provenance_path, chart_path]
    return written


def _read_provenance(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        runs = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvbenchError(f"{path} is damaged ({error}); move it away or choose another "
                             "--output") from None
    if not isinstance(runs, dict):
        raise ConvbenchError(f"{path} is not a convbench provenance file; move it away or "
                             "choose another --output")
    return runs


def _check_same_data(path: Path, runs: dict, result: dict) -> None:
    """Reject merging results of two different datasets that share a name into one report."""
    new = result.get("split_fingerprint")
    for key, run in runs.items():
        old = run.get("split_fingerprint")
        if old is not None and new is not None and old != new:
            raise ConvbenchError(
                f"{path} contains results of another dataset also named {result['dataset']!r} "
                f"(run {key}, split fingerprint {old}; this run {new}); choose another --output"
            )


def _merge(csv_path: Path, new_rows: pd.DataFrame) -> pd.DataFrame:
    if not csv_path.exists():
        return new_rows.reset_index(drop=True)
    try:
        old = pd.read_csv(csv_path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        raise ConvbenchError(f"{csv_path} is damaged ({error}); move it away or choose another "
                             "--output") from None
    missing = [column for column in COLUMNS if column not in old.columns]
    if missing:
        raise ConvbenchError(f"{csv_path} lacks the columns {', '.join(missing)} of a convbench "
                             "accuracy table; move it away or choose another --output")
    replaced = set(zip(new_rows["model"], new_rows["seed"], strict=True))
    keep = [(model, seed) not in replaced
            for model, seed in zip(old["model"], old["seed"], strict=True)]
    merged = pd.concat([old[keep], new_rows], ignore_index=True)
    return merged.sort_values(["model", "seed", "protocol"], kind="stable").reset_index(drop=True)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1; 0 for one seed) and seed count per model and metric."""
    grouped = table.groupby(["model", "protocol", "metric"], sort=False)["value"]
    summary = grouped.agg(["mean", "std", "count"]).reset_index()
    summary["std"] = summary["std"].fillna(0.0)
    return summary


def render_markdown(dataset: str, table: pd.DataFrame, runs: dict) -> str:
    summary = summarize(table)
    models = list(dict.fromkeys(table["model"]))
    lines = [f"# Accuracy on {dataset}", ""]
    lines.append("Test metrics of the checkpoint with the best validation NDCG@10, mean ± "
                 "standard deviation over seeds (the mean alone for one seed). Ties between "
                 "scores count against the target (pessimistic rule).")
    lines.append("")
    for protocol, title in (("sampled", "Sampled: target plus 100 stored negatives"),
                            ("full", "Full ranking: every item, the user's other "
                                     "interactions excluded")):
        lines += [f"## {title}", ""]
        header = ["model", "seeds"] + metric_names()
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for model in models:
            cells = [model]
            part = summary[(summary["model"] == model) & (summary["protocol"] == protocol)]
            cells.append(str(int(part["count"].max())) if len(part) else "0")
            for metric in metric_names():
                row = part[part["metric"] == metric]
                cells.append(_mean_std(row, "{:.4f}"))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## Training", ""]
    header = ["model", "epochs", "best epoch", "training time (s)", "s / epoch", "parameters"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for model in models:
        part = summary[(summary["model"] == model) & (summary["protocol"] == "training")]
        cells = [model]
        for metric, fmt in (("epochs", "{:.0f}"), ("best_epoch", "{:.0f}"),
                            ("train_seconds", "{:.0f}"), ("seconds_per_epoch", "{:.2f}"),
                            ("params", "{:,.0f}")):
            cells.append(_mean_std(part[part["metric"] == metric], fmt))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", TUNING_STATEMENT, ""]

    machines = sorted({(_recorded(run, "cpu_model", "cpu"), _recorded(run, "device", "device"),
                        _recorded(run, "torch_version", "torch")) for run in runs.values()})
    commits = sorted({_recorded(run, "git_commit", "commit") for run in runs.values()})
    lines += ["## Provenance", ""]
    for cpu, device, torch_version in machines:
        lines.append(f"- machine: {cpu}, device {device}, torch {torch_version}")
    lines.append(f"- commits: {', '.join(commits)}")
    lines.append(f"- runs: {len(runs)}; per-run configs, epochs and wall times in "
                 f"`{dataset}.provenance.json`")
    lines.append("")
    return "\n".join(lines)


def _recorded(run: dict, key: str, older_key: str) -> str:
    # Results written before provenance keys were unified use the older key names.
    record = run["provenance"]
    return str(record.get(key, record.get(older_key, "?")))


def _mean_std(rows: pd.DataFrame, fmt: str) -> str:
    if rows.empty:
        return "–"
    row = rows.iloc[0]
    if row["count"] < 2:
        return fmt.format(row["mean"])
    return f"{fmt.format(row['mean'])} ± {fmt.format(row['std'])}"


def plot_accuracy(dataset: str, table: pd.DataFrame, path: Path) -> None:
    """Bar chart of HR@10 and NDCG@10 per model, sampled and full, with std error bars."""
    summary = summarize(table)
    models = list(dict.fromkeys(table["model"]))
    panels = [("sampled", "HR@10"), ("sampled", "NDCG@10"), ("full", "HR@10"), ("full", "NDCG@10")]
    # Labels with overrides can be long, so they are wrapped and the layout is constrained.
    tick_labels = [textwrap.fill(model, 18) for model in models]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.2),
                                layout="constrained")
    for axis, (protocol, metric) in zip(axes, panels, strict=True):
        part = summary[(summary["protocol"] == protocol) & (summary["metric"] == metric)]
        part = part.set_index("model").reindex(models)
        axis.bar(range(len(models)), part["mean"], yerr=part["std"], capsize=3,
                 color=plt.cm.tab10.colors[: len(models)])
        axis.set_xticks(range(len(models)), tick_labels, rotation=30, ha="right", fontsize=7)
        axis.set_title(f"{metric} ({protocol})", fontsize=10)
        axis.set_ylim(0, max(1e-3, float(part["mean"].max() + part["std"].max()) * 1.15))
    figure.suptitle(f"{dataset}: test accuracy, mean ± std over seeds", fontsize=11)
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def _write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
