"""The study report's metric families, agreement verdicts and first figure (gan_kd.study.families, .agreement,
.figure), and re-scoring copies from their generator files (gan_kd.study.rescoring), on synthetic run copies."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from gan_kd import study
from gan_kd.metrics.evaluator import RESULT_KEYS, parse_metrics
from gan_kd.study import agreement, families, figure, published, rescoring
from kd_core.stats import bootstrap_mean_ci, compare, mean_std

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# A row's evaluation when nothing differs from DA: every metric of the families, a 1% spread over the seeds.
BASE = {"fd_vgg": 40.0, "kid_vgg_mean": 0.05, "fd": 10.0, "icfd": 20.0, "cls_acc": 0.5, "precision": 0.6,
        "recall": 0.5, "density": 0.9, "coverage": 0.5, "icfd_vgg": 60.0, "gan_train_acc": 0.6, "memorised": 0.01,
        "nn_ratio": 1.0, "channel_spread": 1.0}
SEEDS = 5


def seeded(value: float) -> list[float]:
    return [value * (1 + 0.01 * (seed - 2)) for seed in range(SEEDS)]


def scored_row(fake_copy, results: Path, row: str, **values: float | list[float]) -> list[Path]:
    """SEEDS copies of ``row``: :data:`BASE` but for ``values`` (a number: spread like BASE; a list: per seed)."""
    metrics = {key: seeded(value) for key, value in BASE.items()}
    metrics.update({key: value if isinstance(value, list) else seeded(value) for key, value in values.items()})
    return [fake_copy(results, row, seed, metrics["fd"][seed], [30.0, 20.0], [0.1, 0.2],
                      metrics={key: value[seed] for key, value in metrics.items() if key != "fd"})
            for seed in range(len(metrics["fd"]))]


def verdict(runs: list[dict], candidate: str = "vkd-whiten", baseline: str = "da") -> dict:
    return agreement.claim_verdict(runs, study.Claim("claim", candidate, baseline))


def test_every_family_metric_is_a_key_of_the_final_evaluation_with_one_direction():
    final = {key for metric in parse_metrics(",".join(study.FINAL_METRICS)) for key in RESULT_KEYS[metric]}
    keys = [key for family in families.FAMILIES for key, _ in family.metrics]
    assert set(keys) <= final and len(keys) == len(set(keys)) == len(BASE)
    assert set(families.DIRECTIONS.values()) == {families.LOWER, families.HIGHER, families.CLOSEST_TO_ONE}
    assert {k for k, d in families.DIRECTIONS.items() if d == families.CLOSEST_TO_ONE} == {"density", "nn_ratio"}
    for key in keys:  # the rule above the verdicts is generated from the same list
        assert f"`{key}` {families.DIRECTIONS[key]}" in agreement.RULE or key == agreement.PRIMARY
    sanity = [claim for claim in study.CLAIMS if claim.source != "VkD"]
    assert [(c.candidate, c.baseline, c.source) for c in sanity] == [("da", "no-da", "DiffAugment")]


def test_better_label_free_fd_with_collapsed_recall_is_contradicted_by_recall(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da")
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd_vgg=30.0, recall=0.1)
    item = verdict(study.load_runs(tmp_path))
    assert item["primary"]["verdict"] == "yes" and item["worse"] == ["recall"]
    assert item["verdict"] == "contradicted (by recall, k-NN fidelity and diversity (label-free))"
    line = agreement.describe(item)
    assert "agree (better): none" in line and "contradict (worse): recall (k-NN fidelity and diversity (label-free))" in line
    # the same collapse with the label-free FD worse is no contradiction: nothing says better
    scored_row(fake_copy, tmp_path / "worse", "da")
    scored_row(fake_copy, tmp_path / "worse", "vkd-whiten", fd_vgg=50.0, recall=0.1)
    assert verdict(study.load_runs(tmp_path / "worse"))["verdict"] == "no"


def test_agreement_everywhere_is_yes_and_names_the_metrics_that_agree(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da")
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd_vgg=30.0, recall=0.7, fd=8.0)
    item = verdict(study.load_runs(tmp_path))
    assert item["verdict"] == "yes" and item["better"] == ["fd", "recall"] and item["worse"] == []
    line = agreement.describe(item)
    assert line.startswith("**yes** — label-free FD vkd-whiten − da = -10 [") and "(n = 5 vs 5)" in line
    assert "agree (better): fd (classifier space), recall (k-NN fidelity and diversity (label-free))" in line
    assert "contradict (worse): none" in line and "not resolved: kid_vgg_mean, icfd, cls_acc" in line


def test_worse_label_free_fd_contradicted_by_a_better_metric(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da")
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd_vgg=50.0, gan_train_acc=0.8)
    item = verdict(study.load_runs(tmp_path))
    assert item["verdict"] == "contradicted (by gan_train_acc, GAN-train accuracy)"


def test_overlapping_label_free_fd_is_not_resolved_whatever_the_others_say(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da", fd_vgg=[40.0, 42.0, 38.0, 41.0, 39.0])
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd_vgg=[39.0, 41.0, 40.0, 42.0, 38.5], recall=0.7)
    runs = study.load_runs(tmp_path)
    item = verdict(runs)
    assert item["primary"]["verdict"] == "not resolved" and item["verdict"] == "not resolved"
    assert "; better: recall (k-NN fidelity and diversity (label-free))" in agreement.describe(item)
    lines = agreement.verdict_lines(runs)
    assert len(lines) == len(study.CLAIMS)
    assert "**(0) DA improves on the no-DiffAugment control** (DiffAugment's claim: the sanity check, not VkD's): " \
           "**not resolved** — too few seeds with the label-free FD (5 da, 0 no-da; at least 5 each)" in lines[0]


def test_one_seed_is_too_few_and_a_metric_no_copy_holds_counts_neither_way(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da")
    fake_copy(tmp_path, "vkd-whiten", 0, 5.0, [5.0], [0.1], fd_vgg=1.0)
    item = verdict(study.load_runs(tmp_path))
    assert item["verdict"] == "not resolved" and item["n"] == (1, 5) and item["primary"] is None
    assert "too few seeds with the label-free FD (1 vkd-whiten, 5 da; at least 5 each)" in agreement.describe(item)
    assert "recall" in item["unscored"] and item["better"] == item["worse"] == []


def test_a_verdict_waits_for_five_seeds_per_row_though_the_family_tables_show_four(fake_copy, tmp_path):
    """Four seeds a row, FD 25% apart: the table's interval resolves it, the verdict waits for the fifth seed."""
    scored_row(fake_copy, tmp_path, "da", fd=seeded(10.0)[:4])
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd=seeded(10.0)[:4], fd_vgg=30.0)
    runs = study.load_runs(tmp_path)
    assert families.compare_metric(study.row_runs(runs, "vkd-whiten"), study.row_runs(runs, "da"), "fd_vgg")["verdict"] == "yes"
    item = verdict(runs)
    assert item["verdict"] == "not resolved" and item["primary"] is None and item["n"] == (4, 4)
    assert "too few seeds with the label-free FD (4 vkd-whiten, 4 da; at least 5 each)" in agreement.describe(item)
    assert agreement.VERDICT_SEEDS == 5 and "with at least 5 seeds per row" in agreement.RULE
    scored_row(fake_copy, tmp_path / "five", "da")
    scored_row(fake_copy, tmp_path / "five", "vkd-whiten", fd_vgg=30.0)
    assert verdict(study.load_runs(tmp_path / "five"))["verdict"] == "yes"


def test_rows_beside_the_published_numbers_agree_disagree_or_are_not_resolved(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da")  # label-free FD 40
    scored_row(fake_copy, tmp_path, "vkd", fd_vgg=30.0, fd=8.0)  # better than DA, as VkD's Table 4
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd_vgg=50.0)  # worse, against Table 4
    scored_row(fake_copy, tmp_path, "spkd", fd=seeded(10.0)[:4], fd_vgg=20.0)  # better, but 4 seeds
    scored_row(fake_copy, tmp_path, "no-da", fd_vgg=60.0)  # not in VkD's tables
    runs = study.load_runs(tmp_path)
    rows = ["da", "no-da", "vkd", "vkd-whiten", "spkd", "pkd"]
    items = {item["row"]: item for item in published.comparisons(runs, rows)}
    assert list(items) == ["vkd", "vkd-whiten", "spkd", "pkd"]  # DA is the reference; no-DA was never published
    assert {row: item["reading"] for row, item in items.items()} == {
        "vkd": "agrees", "vkd-whiten": "disagrees", "spkd": "not resolved", "pkd": "not resolved"}
    assert items["vkd"]["fid_change"] == pytest.approx(16.42 / 23.34 - 1) and items["pkd"]["seeds"] == 0
    sentence = published.chain_sentence(runs)
    assert sentence.startswith("VkD's CIFAR-10 FIDs (Table 4): DA 23.34 → VkD 16.42 → VkD w/ whitening 13.16, each "
                               "step better. Here, label-free FD: DA 40.00 → VkD 30.00 (-25%, better, resolved) → VkD "
                               "w/ whitening 50.00 (+67%, worse, resolved);")
    assert published.summary(list(items.values())) == (
        "Of the 4 distillation rows VkD's tables place ahead of DA on CIFAR-10, the label-free FD here gives: 1 agrees "
        "(vkd); 1 disagrees (vkd-whiten); 2 not resolved (spkd, pkd).")
    section = "\n".join(published.published_section(runs, rows))
    vkd = next(line for line in section.splitlines() if line.startswith("| DA + VkD (orthogonal"))
    assert vkd.startswith("| DA + VkD (orthogonal, no normaliser) | 16.42 (Table 4) | -30% | 30.00 (-25%) | 8.00 (-20%) | 5 | -10 [")
    assert vkd.endswith("| **agrees** |") and "| DA (baseline) | 23.34 (Table 4) | | 40.00 | 10.00 | 5 | | |" in section
    assert "| DA + PKD (Passalis & Tefas 2018) | 21.34 (Table 5) | -9% | — (—) | — (—) | 0 | — | **not resolved** |" in section
    text = study.write_report(tmp_path / "none", tmp_path, tmp_path / "report.md", tmp_path / "figures", rows=rows)
    assert section in text and text.index("### Verdicts") < text.index("### Beside VkD's published numbers")


def test_closest_to_one_metrics_compare_the_distance_to_one(fake_copy, tmp_path):
    """Density 1.05 beats 0.7 (|x − 1| 0.05 < 0.3) though both would be 'higher'; 1.4 loses to 0.8 though higher."""
    for name, candidate, expected in (("near", 1.05, "yes"), ("over", 1.4, "no")):
        scored_row(fake_copy, tmp_path / name, "da", density=0.7 if name == "near" else 0.8)
        scored_row(fake_copy, tmp_path / name, "vkd-whiten", density=candidate)
        runs = study.load_runs(tmp_path / name)
        c = families.compare_metric(study.row_runs(runs, "vkd-whiten"), study.row_runs(runs, "da"), "density")
        assert c["verdict"] == expected
        assert c["difference"] == pytest.approx(abs(candidate - 1) - abs((0.7 if name == "near" else 0.8) - 1), abs=1e-3)
        assert ("density" in verdict(runs)["better" if expected == "yes" else "worse"])


def test_family_tables_give_mean_std_intervals_seeds_and_delta_vs_da_from_compare(fake_copy, tmp_path):
    scored_row(fake_copy, tmp_path, "da")
    scored_row(fake_copy, tmp_path, "vkd-whiten", fd_vgg=30.0, density=1.2)
    fake_copy(tmp_path, "vkd", 0, 9.0, [9.0], [0.1], fd_vgg=35.0)  # one seed, the label-free FD only
    runs = study.load_runs(tmp_path)
    rows = ["da", "no-da", "vkd", "vkd-whiten"]
    table = families.family_table(runs, rows, families.FAMILIES[0]).splitlines()
    da, cand = seeded(40.0), seeded(30.0)
    c = compare(cand, da)
    low, high = bootstrap_mean_ci(cand)
    assert table[2] == f"| fd_vgg ↓ | DA (baseline) | {mean_std(da)[0]:.4g} ± {mean_std(da)[1]:.2g} " \
                       f"| [{bootstrap_mean_ci(da)[0]:.4g}, {bootstrap_mean_ci(da)[1]:.4g}] | 5 of 5 | — |"
    assert table[3] == "|  | DA + VkD (orthogonal, no normaliser) | 35 ± 0 | — | 1 of 1 | — |"  # no interval from one seed
    assert table[4] == (f"|  | DA + VkD w/ whitening (orthogonal) | {mean_std(cand)[0]:.4g} ± {mean_std(cand)[1]:.2g} "
                        f"| [{low:.4g}, {high:.4g}] | 5 of 5 | {c['difference']:+.3g} [{c['ci'][0]:+.3g}, {c['ci'][1]:+.3g}] better |")
    assert not any("without DiffAugment" in line for line in table)  # a row without runs is left out
    assert "|  | DA + VkD (orthogonal, no normaliser) | — | — | 0 of 1 | — |" in table  # its KID is missing
    density = families.family_table(runs, rows, families.FAMILIES[2])
    d = compare([abs(v - 1) for v in seeded(1.2)], [abs(v - 1) for v in seeded(0.9)])
    assert "density (Δ of \\|x − 1\\|)" not in density and "| density → 1 (Δ of \\|x − 1\\|) | DA (baseline) |" in density
    assert f"| 5 of 5 | {d['difference']:+.3g} [{d['ci'][0]:+.3g}, {d['ci'][1]:+.3g}] worse |" in density  # 0.2 > 0.1
    everywhere = families.family_table([r for r in runs if r["row"] == "vkd"], ["vkd"], families.FAMILIES[3])
    assert "| icfd_vgg ↓ | every row | — | — | 0 of 1 runs | — |" in everywhere


def tiny_generator_file(path: Path, seed: int, **config) -> Path:
    from gan_kd.models.biggan import Generator
    from gan_kd.snapshot import save_generator_file
    from gan_kd.config import TrainConfig

    torch.manual_seed(seed)
    generator = Generator(num_classes=10, g_ch=4)
    return save_generator_file(generator, TrainConfig(g_ch=4, d_ch=4, **config).to_dict(), 10, path)


def test_curve_panels_group_the_rows_by_family_with_da_in_each():
    from gan_kd.study.rows import CURVE_PANELS, curve_panels

    assert curve_panels(["da", "no-da", "vkd", "spkd", "custom"]) == {
        "DiffAugment and its control": ["da", "no-da"], "VkD's ablation (Table 4)": ["da", "vkd"],
        "the other distillation baselines": ["da", "spkd"], "other rows": ["da", "custom"]}
    # a panel holding only rows an earlier panel shows is left out
    assert curve_panels(["vkd-whiten", "da"]) == {"VkD's ablation (Table 4)": ["vkd-whiten", "da"]}
    assert curve_panels(["da", "vkd-whiten", "pkd"]) == {"VkD's ablation (Table 4)": ["da", "vkd-whiten"],
                                                         "the other distillation baselines": ["da", "vkd-whiten", "pkd"]}
    assert curve_panels(["da"]) == {"every row": ["da"]}
    placed = {row for members in CURVE_PANELS.values() for row in members}
    assert placed == set(study.ROWS)  # every study row has a panel


def test_first_figure_has_a_sample_row_per_method_with_the_same_latents_and_labels(fake_copy, tmp_path):
    from PIL import Image

    copies = {(row, seed): fake_copy(tmp_path, row, seed, 5.0, [5.0, 4.0], [0.1, 0.2], fd_vgg_curve=[9.0 - seed, 8.0])
              for row, seeds in (("da", (0, 1)), ("vkd-whiten", (0, 1)), ("vkd", (0,))) for seed in seeds}
    for generator_seed, key in enumerate((("da", 0), ("da", 1), ("vkd-whiten", 1))):  # vkd-whiten's seed 0 has none
        tiny_generator_file(copies[key] / "generator_ema.safetensors", generator_seed)
    runs = study.load_runs(tmp_path)
    samples = figure.sample_rows(runs, ["da", "vkd-whiten", "vkd"])
    assert [(row, run["config"]["seed"]) for row, run in samples["rows"]] == [("da", 0), ("vkd-whiten", 1)]
    assert samples["labels"].tolist() == list(range(10)) and samples["missing"] == ["vkd"]
    assert samples["images"].shape == (2, 10, 3, 32, 32) and samples["images"].dtype == torch.uint8
    assert not torch.equal(samples["images"][0], samples["images"][1])  # two generators, the same latents
    again = figure.sample_rows(runs, ["vkd-whiten"])["images"][0]
    assert torch.equal(again, samples["images"][1])  # a row does not depend on the rows above it

    record = figure.first_figure(runs, ["da", "vkd-whiten", "vkd"], tmp_path / "overview.png")
    image = Image.open(tmp_path / "overview.png")
    assert json.loads(image.text["Description"]) == record
    assert record["rows"] == [["da", 0], ["vkd-whiten", 1]] and record["labels"] == list(range(10))
    assert record["curves"] == ["da", "vkd-whiten (kd 1)", "vkd (kd 1)"]
    assert record["panels"] == {"VkD's ablation (Table 4)": ["da", "vkd-whiten (kd 1)", "vkd (kd 1)"]}
    one = figure.first_figure(runs, ["da"], tmp_path / "one.png")
    assert one["rows"] == [["da", 0]] and Image.open(tmp_path / "one.png").height < image.height  # a row per method

    grey = torch.full((10, 3, 32, 32), 7, dtype=torch.uint8)
    strip, options = figure._strip(grey)
    assert strip.shape == (32, 340) and options["cmap"] == "gray"  # grayscale shown as grayscale
    grey[0, 0] = 200
    assert figure._strip(grey)[0].shape == (32, 340, 3)  # colour stays visible


def test_report_puts_the_first_figure_first_and_the_rule_above_the_verdicts(fake_copy, tmp_path):
    da = scored_row(fake_copy, tmp_path / "study", "da")
    scored_row(fake_copy, tmp_path / "study", "vkd-whiten", fd_vgg=30.0, recall=0.1)
    tiny_generator_file(da[0] / "generator_ema.safetensors", 0)
    text = study.write_report(tmp_path / "none", tmp_path / "study", tmp_path / "report.md", tmp_path / "figures",
                              rows=list(study.ROWS))
    assert text.index("![overview.png](figures/overview.png)") < text.index("Generated by") < text.index("## 2.")
    assert "Rows without a committed generator (not shown): vkd-whiten." in text
    assert text.index(agreement.RULE) < text.index("- **(c) distillation (VkD w/ whitening) improves on DA** (VkD's "
                                                   "claim): **contradicted (by recall, k-NN fidelity")
    assert all(f"#### {family.name}" in text for family in families.FAMILIES)


# ------------------------------------------------------------------------------ re-scoring from generator files


def rescorable_copy(fake_copy, results: Path, cifar10_root: Path, fd_net: Path, row: str = "da") -> Path:
    """A finished copy whose evaluation lacks ``fd`` and ``channel_spread`` (every other final key made up: 123),
    scored on 30 samples x 2 repeats at sample seeds 5 and 6, with a tiny generator of the fixture's CIFAR-10."""
    import hashlib

    copy = fake_copy(results, row, 0, 1.0, [1.0], [0.1])
    tiny_generator_file(copy / "generator_ema.safetensors", 0, dataset="cifar10", data_root=str(cifar10_root),
                        data_fraction=0.5)
    keys = {key for metric in parse_metrics(",".join(study.FINAL_METRICS)) for key in RESULT_KEYS[metric]}
    evaluation = {"metrics": {key: {"mean": 123.0, "std": 0.0, "values": [123.0, 123.0]}
                              for key in sorted(keys - {"fd", "channel_spread"})},
                  "labels": {"fd_vgg": "FD (vgg16-half-random:0)"}, "num_samples": 30, "repeats": 2, "seeds": [5, 6]}
    (copy / "evaluation.json").write_text(json.dumps(evaluation))
    (copy / "assets.json").write_text(json.dumps({"fd_net_sha256": hashlib.sha256(fd_net.read_bytes()).hexdigest()}))
    return copy


def test_rescore_merges_only_the_missing_keys_drawn_as_recorded(fake_copy, tmp_path, cifar10_root, classifier_ckpt,
                                                                monkeypatch):
    from click.testing import CliRunner

    from gan_kd.cli import main as gan_cli

    def gan_kd_in_process(command, **kwargs):  # the fixture's CIFAR-10 passes torchvision's md5 check only in here
        assert command[0] == "gan-kd"
        return CliRunner().invoke(gan_cli, command[1:], catch_exceptions=False).exit_code

    monkeypatch.setattr(subprocess, "call", gan_kd_in_process)
    copy = rescorable_copy(fake_copy, tmp_path / "results", cifar10_root, classifier_ckpt)
    before = json.loads((copy / "evaluation.json").read_text())
    assert rescoring.missing_metrics(before) == ("fd", "colour")
    assets = study.Assets(data_root=str(cifar10_root), teacher=str(classifier_ckpt), fd_net=str(classifier_ckpt))
    added = rescoring.fill_missing(copy, assets, runs=tmp_path / "runs", log=lambda _: None)
    after = json.loads((copy / "evaluation.json").read_text())
    assert added == ["fd", "channel_spread"] and set(after["metrics"]) == set(before["metrics"]) | set(added)
    assert {k: after["metrics"][k] for k in before["metrics"]} == before["metrics"]  # nothing recorded changes
    assert after["labels"]["fd_vgg"] == "FD (vgg16-half-random:0)" and after["labels"]["fd"] == "FD (resnet8x4)"
    assert after["rescored"][0]["keys"] == added and "--seed 5" in after["rescored"][0]["command"]
    # the same numbers as scoring the file by hand with the recorded samples (30 x 2 at seeds 5, 6)
    alone = tmp_path / "alone.json"
    result = CliRunner().invoke(gan_cli, ["evaluate", str(copy / "generator_ema.safetensors"), "--metrics", "fd,colour",
                                          "--num-samples", "30", "--repeats", "2", "--seed", "5", "--fd-features",
                                          f"ckpt:{classifier_ckpt}", "--data-root", str(cifar10_root), "--device", "cpu",
                                          "--out", str(alone)])
    assert result.exit_code == 0, result.output
    expected = json.loads(alone.read_text())["metrics"]
    assert {k: after["metrics"][k] for k in added} == {k: expected[k] for k in added}

    # a copy scored in a classifier space of another fingerprint is left as it was
    odd = rescorable_copy(fake_copy, tmp_path / "odd", cifar10_root, classifier_ckpt)
    recorded = {**json.loads((odd / "evaluation.json").read_text()), "feature_spaces": {"classifier": {"sha256_16": "0" * 16}}}
    (odd / "evaluation.json").write_text(json.dumps(recorded))
    with pytest.raises(RuntimeError, match="classifier feature space's fingerprint is [0-9a-f]{16}, the recorded "
                                           "evaluation's 0000000000000000; its copy is left as it was"):
        rescoring.fill_missing(odd, assets, runs=tmp_path / "runs", log=lambda _: None)
    assert json.loads((odd / "evaluation.json").read_text()) == recorded

    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("a complete copy was evaluated again"))
    assert rescoring.fill_missing(copy, assets, runs=tmp_path / "runs", log=lambda _: None) == []


def test_rescore_refuses_another_fd_network_and_a_copy_without_its_generator(fake_copy, tmp_path, cifar10_root,
                                                                             classifier_ckpt, monkeypatch):
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("gan-kd evaluate ran"))
    copy = rescorable_copy(fake_copy, tmp_path / "results", cifar10_root, classifier_ckpt)
    other = tmp_path / "other.pt"
    other.write_bytes(classifier_ckpt.read_bytes() + b"\0")
    before = (copy / "evaluation.json").read_bytes()
    assets = study.Assets(data_root=str(cifar10_root), teacher=str(other), fd_net=str(other))
    with pytest.raises(RuntimeError, match=r"the FD network .*other\.pt .* is not the one its assets\.json records"):
        rescoring.fill_missing(copy, assets, runs=tmp_path / "runs", log=lambda _: None)
    assert (copy / "evaluation.json").read_bytes() == before

    bare = rescorable_copy(fake_copy, tmp_path / "bare", cifar10_root, classifier_ckpt)
    (bare / "generator_ema.safetensors").unlink()
    logged = []
    same = study.Assets(data_root=str(cifar10_root), teacher=str(classifier_ckpt), fd_net=str(classifier_ckpt))
    assert rescoring.fill_all(tmp_path / "bare", same, runs=tmp_path / "runs", log=logged.append) == [bare.name]
    assert logged == [f"error: {bare.name}: lacks fd, colour but holds no generator_ema.safetensors to re-score"]


def test_rescore_command_draws_the_recorded_samples_and_refuses_seeds_it_cannot_draw(tmp_path):
    assets = study.Assets(data_root="data", teacher="t.pt", fd_net="f.pt")
    evaluation = {"metrics": {}, "num_samples": 10000, "repeats": 2, "seeds": [3, 4],
                  "feature_spaces": {"label_free": {"name": "vgg16-half-random:0"}}}
    command = rescoring.rescore_command(tmp_path, evaluation, ("fd", "fd_vgg"), assets, tmp_path / "out.json")
    assert command[:3] == ["gan-kd", "evaluate", str(tmp_path / "generator_ema.safetensors")]
    options = dict(zip(command[3::2], command[4::2]))
    assert options == {"--metrics": "fd,fd_vgg", "--num-samples": "10000", "--repeats": "2", "--seed": "3",
                       "--data-root": "data", "--device": "cpu", "--out": str(tmp_path / "out.json"),
                       "--label-free-features": "vgg16-half-random:0", "--fd-features": "ckpt:f.pt"}
    assert "--fd-features" not in rescoring.rescore_command(tmp_path, evaluation, ("colour",), assets, tmp_path / "o")
    assert rescoring.recorded_seeds({"repeats": 2}) == [0, 1]  # evaluations from before seeds were recorded
    with pytest.raises(ValueError, match=r"recorded sample seeds \[3, 9\] are not 2 consecutive seeds"):
        rescoring.rescore_command(tmp_path, {**evaluation, "seeds": [3, 9]}, ("fd",), assets, tmp_path / "o")
