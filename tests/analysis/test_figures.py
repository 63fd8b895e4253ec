"""The report's figures share one look per model, and dvc.yaml's plots put every model's file in one chart."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from pipeline import dvc_yaml
from pipeline.analysis import figures, training_figures
from pipeline.analysis.figures import model_styles

matplotlib.use("Agg")

VARIANTS = ["mae", "mff"]
REFINED = ["mae_nna", "mff_nna", "mae_nnclr", "mae_moco", "mae_mochi"]
STAMP = "code abc1234 · report params 0123abcd"


@pytest.fixture
def styles() -> dict[str, figures.ModelStyle]:
    return model_styles(VARIANTS, REFINED)


def _knn_rows(offset: float) -> list[dict[str, float]]:
    return [{"block": b, "cls": 0.7 + offset + 0.01 * b, "mean_patch": 0.72 + offset} for b in range(4)]


def _spectrum(scale: float) -> pd.DataFrame:
    values = scale * np.logspace(0, -3, 16)
    return pd.DataFrame({"index": range(16), **{f"log10_singular_value_{how}": np.log10(values)
                                                for how in ("raw", "centred", "standardized")}})


def _fewshot(acc: float) -> dict[str, dict]:
    return {"1": {"runs": [acc, acc + 0.02]}, "5": {"runs": [acc + 0.1, acc + 0.11]}}


def _model_lines(fig) -> dict[str, list[str]]:
    """Model label -> colours of the lines drawn under it, over every panel of `fig`."""
    out: dict[str, list[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                out.setdefault(line.get_label(), []).append(to_hex(line.get_color()))
    return out


class TestModelStyles:
    def test_model_styles__distinct_models_get_distinct_colours(self, styles):
        """Every model, baselines included, has a colour of its own; random-init is grey and pixels black."""
        colors = [s.color for s in styles.values()]
        assert len(set(colors)) == len(colors) == len(VARIANTS) + len(REFINED) + 2
        assert styles["pixels"].color == "#000000" and styles["random-init"].color == "#8c8c8c"

    def test_model_styles__many_models_stay_distinct(self):
        """Past the qualitative palette (18 models), hues are still distinct and never a baseline's."""
        many = model_styles([f"v{i}" for i in range(8)], [f"r{i}" for i in range(16)])
        colors = [s.color for s in many.values()]
        assert len(set(colors)) == len(colors)

    def test_model_styles__same_names_same_styles_and_appending_keeps_colours(self, styles):
        """The styles are a function of the names in params; a model added at the end recolours no other."""
        assert model_styles(VARIANTS, REFINED) == styles
        grown = model_styles(VARIANTS, [*REFINED, "mff_moco"])
        assert all(grown[m].color == s.color for m, s in styles.items())

    def test_model_styles__refinements_differ_in_marker_and_dashes(self, styles):
        """Refinements that lie on top of each other stay apart by marker and dash pattern, and draw over variants."""
        looks = [(styles[r].marker, str(styles[r].linestyle)) for r in REFINED]
        assert len(set(looks)) == len(REFINED)
        assert all(styles[r].zorder > styles[v].zorder for r in REFINED for v in VARIANTS)

    def test_model_styles__unknown_model_is_named(self, styles, tmp_path):
        with pytest.raises(KeyError, match="'byol'"):
            figures.spectrum_figure({"byol": [_spectrum(1.0)]}, tmp_path / "s.png", styles, STAMP)


class TestFigures:
    def test_figures__a_model_has_one_colour_in_every_figure(self, styles, tmp_path):
        """The same model is drawn in the same colour in the k-NN, few-shot and spectrum figures, the frequency
        panel and the fusion bars, for two seeds per model."""
        models = [*VARIANTS, *REFINED]
        drawn = [
            figures.knn_blocks_figure({**{m: [_knn_rows(0.01 * i), _knn_rows(0.01 * i + 0.005)]
                                          for i, m in enumerate(models)}, "random-init": [_knn_rows(-0.1)]},
                                      tmp_path / "knn.png", styles, STAMP),
            figures.fewshot_figure({**{m: [_fewshot(0.3), _fewshot(0.31)] for m in models},
                                    "pixels": [_fewshot(0.4)]}, tmp_path / "fewshot.png", styles, STAMP),
            figures.spectrum_figure({**{m: [_spectrum(1.0), _spectrum(1.1)] for m in models},
                                     "random-init": [_spectrum(0.5)], "pixels": [_spectrum(0.8)]},
                                    tmp_path / "spectrum.png", styles, STAMP),
        ]
        seen: dict[str, set[str]] = {}
        for fig in drawn:
            for model, colors in _model_lines(fig).items():
                seen.setdefault(model, set()).update(colors)
        assert set(seen) == {*models, "random-init", "pixels"}
        assert all(colors == {styles[m].color} for m, colors in seen.items())

        freq = pd.DataFrame({"block": [0, 0, 1, 1], "relative_depth": [0.5, 0.5, 1.0, 1.0],
                             "frequency": [0.0, 1.0, 0.0, 1.0], "frequency_label": ["0", "π", "0", "π"],
                             "dlog_amplitude": [0.0, -1.0, 0.0, -2.0], "amplitude": [1.0, 0.3, 1.2, 0.2]})
        fig = figures.frequency_figure({"mae": [freq], "mff": [freq]}, tmp_path / "freq.png", styles, STAMP)
        assert {ax.get_title(): to_hex(ax.title.get_color()) for ax in fig.axes[:-1] if ax.get_title()} == {
            "mae": styles["mae"].color, "mff": styles["mff"].color}
        # the last panel: the last block's linear amplitude, one line per variant in its colour, exact tick labels
        amplitude = fig.axes[-1]
        assert {line.get_label(): to_hex(line.get_color()) for line in amplitude.get_lines()} == {
            "mae": styles["mae"].color, "mff": styles["mff"].color}
        assert [t.get_text() for t in amplitude.get_xticklabels()] == ["0", "π"]
        # the deepest block is drawn in the model's own colour
        assert to_hex(fig.axes[0].get_lines()[-1].get_color()) == styles["mae"].color

        fig = training_figures.fusion_weights_figure({"mff": [{"0": 0.3, "1": 0.7}]}, tmp_path / "fusion.png", styles,
                                                     STAMP)
        assert {to_hex(p.get_facecolor()) for p in fig.axes[0].patches} == {styles["mff"].color}

    def test_knn_blocks_figure__equal_refinements_sit_side_by_side(self, styles, tmp_path):
        """Two refinements with the same curve are both visible: shifted apart along the block axis."""
        fig = figures.knn_blocks_figure({"mae_nna": [_knn_rows(0.0)], "mae_nnclr": [_knn_rows(0.0)]},
                                        tmp_path / "knn.png", styles, STAMP)
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        assert np.allclose(lines["mae_nna"].get_ydata(), lines["mae_nnclr"].get_ydata())
        gap = lines["mae_nnclr"].get_xdata() - lines["mae_nna"].get_xdata()
        assert np.all(gap > 0.02) and np.all(gap < 0.5)

    def test_fusion_weights_figure__draws_the_uniform_reference(self, styles, tmp_path):
        """Bars start at 1/n, a dashed line marks it, and the axis spans the deviation, far from 0."""
        seeds = [{"0": 0.251, "1": 0.249, "3": 0.2495, "5": 0.2505}, {"0": 0.2512, "1": 0.2488, "3": 0.25, "5": 0.25}]
        fig = training_figures.fusion_weights_figure({"mff": seeds}, tmp_path / "fusion.png", styles, STAMP)
        ax = fig.axes[0]
        uniform = [line for line in ax.get_lines() if np.allclose(line.get_ydata(), 0.25)]
        assert len(uniform) == 1 and uniform[0].get_linestyle() == "--"
        assert all(np.isclose(p.get_y(), 0.25) for p in ax.patches)  # every bar grows from the uniform line
        low, high = ax.get_ylim()
        assert 0.24 < low < 0.249 and 0.251 < high < 0.26

    def test_fusion_weights_figure__exactly_uniform_weights_keep_an_axis(self, styles, tmp_path):
        """The fixed-mean ablation (weights exactly 1/n) still gets a finite axis around 1/n."""
        fig = training_figures.fusion_weights_figure({"mff": [{"0": 0.5, "2": 0.5}]}, tmp_path / "f.png", styles, STAMP)
        low, high = fig.axes[0].get_ylim()
        assert low < 0.5 < high and high - low < 0.01

    def test_fusion_weights_figure__notes_when_no_variant_fuses(self, styles, tmp_path):
        fig = training_figures.fusion_weights_figure({}, tmp_path / "fusion.png", styles, STAMP)
        assert any("no MFF variant" in t.get_text() for t in fig.axes[0].texts)

    def test_figures__stamped_and_byte_identical_on_a_rerun(self, styles, tmp_path):
        """The footer carries the stamp, and the same inputs write the same bytes (a forced rerun changes nothing)."""
        curves = {"mae": [_knn_rows(0.0)], "random-init": [_knn_rows(-0.1)]}
        fig = figures.knn_blocks_figure(curves, tmp_path / "a.png", styles, STAMP)
        figures.knn_blocks_figure(curves, tmp_path / "b.png", styles, STAMP)
        assert STAMP in [t.get_text() for t in fig.texts]
        assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


class TestDvcPlots:
    PARAMS = {"seeds": [0, 1],
              "pretrain": {"variants": {"mae": {"fuse_blocks": [], "fusion": "softmax"},
                                        "mff": {"fuse_blocks": [0, 2], "fusion": "softmax"}}},
              "refine": {"variants": {"mae_nna": {"pretrained": "mae", "objective": "nna"},
                                      "mff_nna": {"pretrained": "mff", "objective": "nna"}}}}

    def charts(self) -> dict[str, dict]:
        return {k: v for entry in dvc_yaml.dvc_plots(self.PARAMS) if isinstance(entry, dict)
                for k, v in entry.items()}

    def test_dvc_yaml__one_chart_per_quantity_names_every_models_file(self):
        """Each chart lists every (model, seed) file of its kind, baselines once; the PNGs stay image plots."""
        charts = self.charts()
        per_seed = [f"{m}/seed{s}" for m in ("mae", "mff", "mae_nna", "mff_nna") for s in (0, 1)]
        pretrained = [f"{m}/seed{s}" for m in ("mae", "mff") for s in (0, 1)]
        refined = [f"{m}/seed{s}" for m in ("mae_nna", "mff_nna") for s in (0, 1)]
        expected = {
            "knn_cls_per_block": [*(f"results/plots/knn_blocks/{m}.csv" for m in per_seed),
                                  "results/plots/knn_blocks/random-init.csv"],
            "pretrain_loss": [f"results/plots/pretrain_curve/{m}.csv" for m in pretrained],
            "refine_loss": [f"results/plots/refine_curve/{m}.csv" for m in refined],
            "refine_monitor": [f"results/plots/refine_curve/{m}.csv" for m in refined],
            "spectrum": [*(f"results/plots/spectrum/{m}.csv" for m in per_seed),
                         "results/plots/spectrum/random-init.csv", "results/plots/spectrum/pixels.csv"],
            "live_pretrain_loss": [f"results/pretrain/{m}/live/plots/metrics/train/loss.tsv" for m in pretrained],
        }
        for plot_id, files in expected.items():
            assert sorted(charts[plot_id]["y"]) == sorted(files), plot_id
        assert charts["knn_mean_patch_per_block"]["y"].keys() == charts["knn_cls_per_block"]["y"].keys()
        assert all(v == ["knn", "nn_accuracy"] for v in charts["refine_monitor"]["y"].values())
        assert all(c["title"] and c["x"] for c in charts.values())
        assert len({c["title"] for c in charts.values()}) == len(charts)
        images = [e for e in dvc_yaml.dvc_plots(self.PARAMS) if isinstance(e, str)]
        assert images == list(dvc_yaml.IMAGE_PLOTS)

    def test_dvc_yaml__every_plotted_csv_is_a_rule_output(self):
        """The charts of the repository's params read only files a rule declares, so a renamed output fails here."""
        from pipeline.config import load_params
        from tests.conftest import REPO

        outputs = {out for job in dvc_yaml.snakemake_jobs(REPO) for out in job.outs}
        charts = dvc_yaml.dvc_plots(load_params(REPO / "params.yaml"))
        plotted = {f for c in charts if isinstance(c, dict) for spec in c.values() for f in spec["y"]
                   if f.endswith(".csv")}
        assert plotted and plotted <= outputs


def test_negatives_top_share_figure__one_line_per_model_that_logs_it(styles, tmp_path):
    """MoCHi's hardness curves: a refinement without the column (an older curve, or cc) is left out; none at all
    gives a note instead of empty axes."""
    curve = pd.DataFrame({"epoch": [1, 2, 3], "neg_top1_share": [0.1, 0.2, 0.3], "neg_top5_share": [0.3, 0.4, 0.5]})
    fig = training_figures.negatives_top_share_figure(
        {REFINED[0]: [curve], REFINED[1]: [curve.drop(columns="neg_top1_share")]}, tmp_path / "top.png", styles, STAMP)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [REFINED[0]]
    assert np.allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.3, 0.4, 0.5])
    empty = training_figures.negatives_top_share_figure({REFINED[0]: [curve[["epoch"]]]}, tmp_path / "none.png",
                                                        styles, STAMP)
    assert "no refinement logged" in empty.axes[0].texts[0].get_text()
