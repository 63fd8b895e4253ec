"""The compare command on a tiny git repo: hand-computed noise per rule, marks, blanks, fallbacks, revisions."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.compare import main, noise

REPO = Path(__file__).resolve().parents[2]
ALL = "results/report/all_metrics.json"

# A: commit tagged "a"; B: the commit after it (HEAD). Sizes as in the report stage: 5000 test, 2000 val images.
A = {"mae": {"n": 1, "test_size": 5000, "val_size": 2000, "knn_cls": 0.70, "linear": 0.75, "fewshot_1": 0.40,
             "fewshot_1_split_se": 0.004, "val_knn_best": 0.70},
     "mae_nna": {"n": 3, "test_size": 5000, "knn_cls": 0.72, "knn_cls_std": 0.002, "fewshot_1": 0.45,
                 "fewshot_1_std": 0.02, "fewshot_1_split_se": 0.0001},
     "mff": {"n": 1, "finetune": 0.60},
     "pixels": {"n": 1, "test_size": 5000, "knn_cls": 0.80}}
B = {"mae": {"n": 1, "test_size": 5000, "val_size": 2000, "knn_cls": 0.75, "linear": 0.755, "fewshot_1": 0.42,
             "fewshot_1_split_se": 0.003, "val_knn_best": 0.725},
     "mae_nna": {"n": 3, "test_size": 5000, "knn_cls": 0.73, "knn_cls_std": 0.002, "fewshot_1": 0.46,
                 "fewshot_1_std": 0.02, "fewshot_1_split_se": 0.0001},
     "mff": {"n": 1, "finetune": 0.70},
     "random-init": {"n": 1, "test_size": 5000, "knn_cls": 0.60}}
# an older report: only metrics.json, with strings and a bool among the numbers
OLD = {"mae": {"knn_cls": 0.65, "objective": "nna", "pretrained": "mae", "flag": True}, "note": "not a model"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, object], message: str, tag: str) -> None:
    for path, obj in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    _git(repo, "tag", tag)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Commits: empty (no report), old (metrics.json only), a, b (= HEAD); experiment my-exp at a."""
    root = tmp_path_factory.mktemp("cmp")
    _git(root, "init", "-q")
    for key, value in (("user.email", "t@example.com"), ("user.name", "t"), ("commit.gpgsign", "false")):
        _git(root, "config", key, value)
    _commit(root, {"README": "x\n"}, "empty", "empty")
    _commit(root, {"results/report/metrics.json": OLD}, "old", "old")
    (root / "results/report/metrics.json").unlink()
    _commit(root, {ALL: A}, "a", "a")
    _commit(root, {ALL: B}, "b", "b")
    _git(root, "update-ref", "refs/exps/ab/cdef/my-exp", _git(root, "rev-parse", "a"))
    return root


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """(model, metric) -> [A, B, Δ, ±2σ] cells of the printed markdown table."""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()
             if line.startswith("| ") and not line.startswith("| model ")]
    return {(c[0], c[1]): c[2:] for c in cells}


def test_noise__binomial_uses_the_split_size():
    # knn_cls on 5000 test images: sqrt(.7*.3/5000 + .75*.25/5000)
    assert noise("knn_cls", A["mae"], B["mae"]) == (pytest.approx(math.sqrt((0.21 + 0.1875) / 5000)), "binomial")
    # val_knn_* is on the 2000 val images: sqrt(.7*.3/2000 + .725*.275/2000)
    sigma, kind = noise("val_knn_best", A["mae"], B["mae"])
    assert (sigma, kind) == (pytest.approx(math.sqrt((0.21 + 0.199375) / 2000)), "binomial")


def test_noise__splits_when_one_seed():
    # sqrt(.004^2 + .003^2) = .005
    assert noise("fewshot_1", A["mae"], B["mae"]) == (pytest.approx(0.005), "splits")


def test_noise__per_split_accuracies_pair_the_splits():
    # B - A per split: .02, .04, .03 -> mean .03, sample std .01, SE .01 / sqrt(3) (the unpaired SE would be larger)
    a = {"fewshot_1": 0.40, "fewshot_1_split0": 0.40, "fewshot_1_split1": 0.38, "fewshot_1_split2": 0.42,
         "fewshot_1_split_se": 0.0115}
    b = {"fewshot_1": 0.43, "fewshot_1_split0": 0.42, "fewshot_1_split1": 0.42, "fewshot_1_split2": 0.45,
         "fewshot_1_split_se": 0.0100}
    assert noise("fewshot_1", a, b) == (pytest.approx(0.01 / math.sqrt(3)), "paired splits")
    del b["fewshot_1_split2"], b["fewshot_1_split1"]  # one shared split: no pairing, the unpaired rule
    assert noise("fewshot_1", a, b)[1] == "splits"


def test_noise__seeds_take_precedence_over_splits():
    # sqrt(.002^2/3 + .002^2/3); and for fewshot_1 the seed std (.02) wins over the tiny split SE
    assert noise("knn_cls", A["mae_nna"], B["mae_nna"]) == (pytest.approx(math.sqrt(8e-6 / 3)), "seeds")
    assert noise("fewshot_1", A["mae_nna"], B["mae_nna"]) == (pytest.approx(math.sqrt(8e-4 / 3)), "seeds")


def test_noise__none_without_split_size_or_for_non_accuracies():
    assert noise("finetune", A["mff"], B["mff"]) is None
    assert noise("rankme", {"rankme": 20.0, "test_size": 5000}, {"rankme": 25.0, "test_size": 5000}) is None


def test_main__marks_deltas_beyond_two_sigma(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    rc, out, err = _run(["a", "b", "--no-figure"], capsys)
    assert rc == 0 and err == ""
    short_a, short_b = _git(repo, "rev-parse", "--short", "a"), _git(repo, "rev-parse", "--short", "b")
    assert out.splitlines()[0] == f"A = a ({short_a}), B = b ({short_b})"
    rows = _rows(out)
    assert rows[("mae", "knn_cls")] == ["70.0", "75.0", "+5.0*", "±1.8 binomial"]
    assert rows[("mae", "linear")] == ["75.0", "75.5", "+0.5", "±1.7 binomial"]
    assert rows[("mae", "fewshot_1")] == ["40.0", "42.0", "+2.0*", "±1.0 splits"]
    # 2.5 points is inside 2σ on 2000 val images (2.9), though it would exceed it on 5000 (1.8)
    assert rows[("mae", "val_knn_best")] == ["70.0", "72.5", "+2.5", "±2.9 binomial"]
    assert rows[("mae_nna", "knn_cls")] == ["72.0", "73.0", "+1.0*", "±0.3 seeds"]
    assert rows[("mae_nna", "fewshot_1")] == ["45.0", "46.0", "+1.0", "±3.3 seeds"]
    assert rows[("mff", "finetune")] == ["60.0", "70.0", "+10.0", ""]  # no noise estimate: never marked
    assert out.rstrip().splitlines()[-1].startswith("* |Δ| > 2σ")


def test_main__missing_model_is_blank_and_models_follow_b_then_a(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    rows = _rows(_run(["a", "b", "--no-figure"], capsys)[1])
    assert rows[("random-init", "knn_cls")] == ["", "60.0", "", ""]
    assert rows[("pixels", "knn_cls")] == ["80.0", "", "", ""]
    assert list(dict.fromkeys(m for m, _ in rows)) == ["mae", "mae_nna", "mff", "random-init", "pixels"]
    assert ("pixels", "linear") not in rows  # on neither side: no row


def test_main__metrics_option_selects_rows_and_rejects_unknown_ones(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    rows = _rows(_run(["a", "b", "--no-figure", "--metrics", "linear"], capsys)[1])
    assert set(rows) == {("mae", "linear")}
    rc, out, err = _run(["a", "b", "--no-figure", "--metrics", "linear,lienar"], capsys)
    assert (rc, out, err) == (2, "", "error: --metrics: lienar in neither a nor b\n")


def test_main__falls_back_to_metrics_json_and_drops_strings(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    rc, out, _ = _run(["old", "a", "--no-figure"], capsys)
    assert rc == 0
    assert _rows(out)[("mae", "knn_cls")] == ["65.0", "70.0", "+5.0", ""]  # no sizes in the old file: no σ
    assert "note" not in out and "objective" not in out


def test_main__experiment_name_and_its_short_sha(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    short_a = _git(repo, "rev-parse", "--short", "a")
    by_name = _run(["my-exp", "HEAD", "--no-figure"], capsys)[1]
    assert by_name.splitlines()[0].startswith(f"A = my-exp ({short_a}), B = HEAD (")
    assert _rows(by_name) == _rows(_run(["a", "b", "--no-figure"], capsys)[1])
    assert _rows(_run([short_a, "HEAD", "--no-figure"], capsys)[1]) == _rows(by_name)


def test_main__workspace_reads_the_working_tree(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    edited = {**B, "mae": {**B["mae"], "knn_cls": 0.80}}
    (repo / ALL).write_text(json.dumps(edited))
    try:
        rc, out, _ = _run(["HEAD", "workspace", "--no-figure"], capsys)
    finally:
        _git(repo, "checkout", "--", ALL)
    assert rc == 0 and "B = workspace (working tree)" in out.splitlines()[0]
    assert _rows(out)[("mae", "knn_cls")][:3] == ["75.0", "80.0", "+5.0*"]


@pytest.mark.parametrize("rev, message", [
    ("nope", "error: unknown revision 'nope' (not a git revision, DVC experiment name or 'workspace')"),
    ("empty", "error: empty has no results/report/all_metrics.json (was the report stage run and committed?)"),
])
def test_main__bad_revision_is_one_line_and_exit_2(repo, monkeypatch, capsys, rev, message):
    monkeypatch.chdir(repo)
    rc, out, err = _run([rev, "HEAD"], capsys)
    assert (rc, out, err) == (2, "", message + "\n")


def test_main__writes_the_figure_at_the_default_path(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    rc, _, err = _run(["HEAD~1", "HEAD"], capsys)
    path = repo / "compare" / "HEAD_1..HEAD.png"
    assert rc == 0 and err == "figure: compare/HEAD_1..HEAD.png\n"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_cli__runs_as_a_module(repo):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline.compare", "a", "b", "--no-figure"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _rows(done.stdout)[("mae", "knn_cls")] == ["70.0", "75.0", "+5.0*", "±1.8 binomial"]


def _details(bits: str) -> dict:
    return {"knn": {"headline": "mim_refiner", "protocols": {"mim_refiner": {"correct": {"cls": bits}}}},
            "linear": {"test_correct": bits}}


@pytest.mark.parametrize("same_test_split", [True, False])
def test_main__paired_images_when_both_commits_scored_the_same_test_images(tmp_path, monkeypatch, capsys,
                                                                           same_test_split):
    """Per-image correctness in both commits' details.json and one test split: σ pairs image by image (18 points on
    these 10 images, against the binomial rule's 19); another test split falls back to the binomial rule."""
    _git(tmp_path, "init", "-q")
    for key, value in (("user.email", "t@example.com"), ("user.name", "t"), ("commit.gpgsign", "false")):
        _git(tmp_path, "config", key, value)
    card = "results/data/digits/card.json"
    metrics = {"n": 1, "test_size": 10, "val_size": 10}
    _commit(tmp_path, {card: {"sha256": {"x_test": "1", "y_test": "2"}},
                       ALL: {"mae": {**metrics, "knn_cls": 0.7, "linear": 0.7}},
                       "results/evaluate/mae/seed0/details.json": _details("1111100110")}, "c", "c")
    _commit(tmp_path, {card: {"sha256": {"x_test": "1" if same_test_split else "3", "y_test": "2"}},
                       ALL: {"mae": {**metrics, "knn_cls": 0.8, "linear": 0.8}},
                       "results/evaluate/mae/seed0/details.json": _details("1111111100")}, "d", "d")
    monkeypatch.chdir(tmp_path)
    rc, out, _ = _run(["c", "d", "--no-figure", "--metrics", "knn_cls,linear"], capsys)
    rows = _rows(out)
    assert rc == 0
    expected = "±35.9 paired images" if same_test_split else "±38.5 binomial"
    assert rows[("mae", "knn_cls")][-1] == expected and rows[("mae", "linear")][-1] == expected


@pytest.mark.parametrize("same_val_split", [True, False])
def test_main__the_probes_val_knn_pairs_images_at_each_sides_best_block(tmp_path, monkeypatch, capsys,
                                                                         same_val_split):
    """val_knn_best pairs the probe's per-image correctness at each side's own best block (A: block 1 of 2, B: block
    0), the same 10 val images as the test case above, so the same ±35.9; another val split: the binomial rule."""
    _git(tmp_path, "init", "-q")
    for key, value in (("user.email", "t@example.com"), ("user.name", "t"), ("commit.gpgsign", "false")):
        _git(tmp_path, "config", key, value)
    card, blocks = "results/data/digits/card.json", "results/probe/mae/seed0/blocks.json"
    metrics = {"n": 1, "test_size": 10, "val_size": 10}
    _commit(tmp_path, {card: {"sha256": {"x_val": "1", "y_val": "2", "x_test": "5"}},
                       ALL: {"mae": {**metrics, "val_knn_best": 0.7}},
                       blocks: {"cls_correct": ["1110000000", "1111100110"]}}, "c", "c")
    _commit(tmp_path, {card: {"sha256": {"x_val": "1" if same_val_split else "3", "y_val": "2", "x_test": "6"}},
                       ALL: {"mae": {**metrics, "val_knn_best": 0.8}},
                       blocks: {"cls_correct": ["1111111100", "1111110000"]}}, "d", "d")
    monkeypatch.chdir(tmp_path)
    rc, out, _ = _run(["c", "d", "--no-figure", "--metrics", "val_knn_best"], capsys)
    assert rc == 0
    assert _rows(out)[("mae", "val_knn_best")][-1] == ("±35.9 paired images" if same_val_split else "±38.5 binomial")


def test_noise__a_named_few_shot_protocol_pairs_its_splits_too():
    # fewshot_msn_1 (the non-headline protocol) pairs by its own splits: B - A = .01, .03 -> SE std / sqrt(2) = .01
    a = {"fewshot_msn_1": 0.40, "fewshot_msn_1_split0": 0.40, "fewshot_msn_1_split1": 0.40, "test_size": 100}
    b = {"fewshot_msn_1": 0.42, "fewshot_msn_1_split0": 0.41, "fewshot_msn_1_split1": 0.43, "test_size": 100}
    assert noise("fewshot_msn_1", a, b) == (pytest.approx(0.01), "paired splits")
