"""Re-scoring committed run copies from their generator files (issue 27, item 5): the metrics of the final
evaluation that a copy's ``evaluation.json`` lacks (a metric added since it was scored), computed by
``gan-kd evaluate <copy>/generator_ema.safetensors`` with the recorded sample count, repeats and sample seeds, and
merged into ``evaluation.json`` without changing anything it already holds.

A copy is re-scored only with the FD network it was scored with (its ``assets.json`` SHA-256) and only if the
feature spaces both evaluations share have the same fingerprint; otherwise one clear error and nothing is written.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from gan_kd.metrics.evaluator import METRICS, RESULT_KEYS, parse_metrics
from gan_kd.report import EVALUATION_FILE
from gan_kd.snapshot import GENERATOR_FILE
from gan_kd.study.rows import FINAL_METRICS, Assets
from gan_kd.study.runner import ASSETS_FILE, asset_digests, call_logged
from kd_core.runtime.io import write_json

SPACES = ("label_free", "classifier")  # evaluation.json's feature_spaces entries with a fingerprint (sha256_16)


def missing_metrics(evaluation: dict) -> tuple[str, ...]:
    """The metrics of the final evaluation (:data:`~gan_kd.study.rows.FINAL_METRICS`, ``gan-kd evaluate``'s
    names) with a result key that ``evaluation`` does not hold."""
    have = evaluation["metrics"]
    return tuple(m for m in parse_metrics(",".join(FINAL_METRICS)) if any(k not in have for k in RESULT_KEYS[m]))


def recorded_seeds(evaluation: dict) -> list[int]:
    """The sample seeds of the recorded repeats (``gan-kd evaluate`` draws seed, seed + 1, ...; evaluations from
    before it recorded them used its default, 0)."""
    return list(evaluation.get("seeds") or range(evaluation["repeats"]))


def rescore_command(copy: Path, evaluation: dict, missing: tuple[str, ...], assets: Assets, out: Path,
                    gan_kd: str = "gan-kd") -> list[str]:
    """``gan-kd evaluate`` of the copy's generator file for ``missing``, as the recorded evaluation drew its
    samples; ``ValueError`` when its seeds are not the consecutive ones ``--seed`` and ``--repeats`` give."""
    seeds = recorded_seeds(evaluation)
    if seeds != list(range(seeds[0], seeds[0] + evaluation["repeats"])):
        raise ValueError(f"{copy.name}: recorded sample seeds {seeds} are not {evaluation['repeats']} consecutive "
                         f"seeds; gan-kd evaluate cannot draw them again")
    command = [gan_kd, "evaluate", str(copy / GENERATOR_FILE), "--metrics", ",".join(missing),
               "--num-samples", str(evaluation["num_samples"]), "--repeats", str(evaluation["repeats"]),
               "--seed", str(seeds[0]), "--data-root", assets.data_root, "--device", "cpu", "--out", str(out)]
    label_free = evaluation.get("feature_spaces", {}).get("label_free", {}).get("name")
    if label_free and any(METRICS[m][0] == "label-free" for m in missing):
        command += ["--label-free-features", label_free]
    if any(METRICS[m][0] == "classifier" for m in missing):
        command += ["--fd-features", f"ckpt:{assets.fd_net}"]
    return command


def check_fd_network(copy: Path, assets: Assets) -> None:
    """``RuntimeError`` unless ``assets.fd_net`` is the FD network the copy's ``assets.json`` records."""
    recorded = json.loads((copy / ASSETS_FILE).read_text()).get("fd_net_sha256") if (copy / ASSETS_FILE).is_file() else None
    today = asset_digests(assets)["fd_net_sha256"]
    if recorded != today:
        raise RuntimeError(f"{copy.name}: the FD network {assets.fd_net} (SHA-256 {today[:16]}…) is not the one its "
                           f"{ASSETS_FILE} records ({recorded[:16] + '…' if recorded else 'none recorded'}); metrics "
                           f"measured with another network would not belong with its evaluation, so it is not re-scored")


def merged(evaluation: dict, fresh: dict, missing: tuple[str, ...], command: list[str]) -> tuple[dict, list[str]]:
    """``evaluation`` with the keys of ``fresh`` it lacks (metrics, labels, reference scores, feature spaces) and
    a ``rescored`` record; the keys added."""
    added = [key for key in fresh["metrics"] if key not in evaluation["metrics"]]
    result = {**evaluation, "metrics": {**evaluation["metrics"], **{k: fresh["metrics"][k] for k in added}},
              "labels": {**evaluation.get("labels", {}), **{k: v for k, v in fresh.get("labels", {}).items()
                                                             if k not in evaluation.get("labels", {})}}}
    for section in ("reference_scores", "feature_spaces"):
        if section in fresh:
            result[section] = {**fresh[section], **evaluation.get(section, {})}  # the recorded entries win
    record = {"keys": added, "metrics": list(missing), "command": " ".join(command[1:]),
              "hardware": fresh.get("hardware"), "wall_time_s": fresh.get("wall_time_s")}
    result["rescored"] = [*evaluation.get("rescored", []), record]
    return result, added


def fill_missing(copy: Path, assets: Assets, *, runs: Path, gan_kd: str = "gan-kd", log=print) -> list[str]:
    """Add the final evaluation's missing metrics to one finished copy (see the module docstring); the keys added
    (none when nothing is missing). ``RuntimeError`` (nothing written) when it cannot be done faithfully."""
    copy = Path(copy)
    evaluation = json.loads((copy / EVALUATION_FILE).read_text())
    missing = missing_metrics(evaluation)
    if not missing:
        return []
    if not (copy / GENERATOR_FILE).is_file():
        raise RuntimeError(f"{copy.name}: lacks {', '.join(missing)} but holds no {GENERATOR_FILE} to re-score")
    check_fd_network(copy, assets)
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / EVALUATION_FILE
        try:
            command = rescore_command(copy, evaluation, missing, assets, out, gan_kd)
        except ValueError as error:
            raise RuntimeError(str(error)) from None
        call_logged(command, copy.name, runs)
        fresh = json.loads(out.read_text())
    for space in SPACES:
        before = evaluation.get("feature_spaces", {}).get(space, {}).get("sha256_16")
        after = fresh.get("feature_spaces", {}).get(space, {}).get("sha256_16")
        if before and after and before != after:
            raise RuntimeError(f"{copy.name}: the {space.replace('_', '-')} feature space's fingerprint is {after}, "
                               f"the recorded evaluation's {before}; its copy is left as it was")
    result, added = merged(evaluation, fresh, missing, command)
    write_json(copy / EVALUATION_FILE, result)
    log(f"{copy.name}: added {', '.join(added)} (gan-kd evaluate --metrics {','.join(missing)})")
    return added


def fill_all(results: Path, assets: Assets, *, runs: Path, gan_kd: str = "gan-kd", log=print) -> list[str]:
    """:func:`fill_missing` for every finished copy under ``results``; the copies that failed, each error logged."""
    failed = []
    for evaluation in sorted(Path(results).glob(f"*/{EVALUATION_FILE}")):
        try:
            fill_missing(evaluation.parent, assets, runs=runs, gan_kd=gan_kd, log=log)
        except RuntimeError as error:
            log(f"error: {error}")
            failed.append(evaluation.parent.name)
    return failed
