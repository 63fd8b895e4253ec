"""dvc.yaml, written from the Snakemake rules (rules/*.smk, the DAG's source of truth) and params.yaml.

    python -m pipeline.dvc_yaml            # (re)write dvc.yaml; `make run`, `make repro` and `make profile` do it
    python -m pipeline.dvc_yaml --check    # exit 1 with one line when dvc.yaml is not what the rules give

Snakemake expands the rules into jobs (`snakemake --dry-run --forceall --printshellcmds`); each rule becomes one
DVC stage in DVC's idiom: its jobs' command, deps and outs written once with `${item.<wildcard>}` in place of the
wildcards' values, and a `matrix` over the same params keys as the rule's wildcards (`${pretrain.variants}`,
`${refine.variants}`, `${seeds}`), so `dvc exp run -S` of any key but those three needs no new dvc.yaml. DVC's
matrix cannot look a refinement's pretrained source up (an item of a dict axis is its key only, treeverse/dvc#10094),
so a rule whose paths name it (refine, evaluate_refined) gets a `foreach` over its (refinement, seed) items, each
item carrying its source. The stage names are DVC's `<rule>@<item>` in both forms: `refine@mae_nna-0`.
Every job is rendered back from the written stage and compared with Snakemake's before the file is written, so the
file says what the rules say or is not written at all.

The params keys a stage depends on are its module's PARAMS tuple (pipeline/deps.py), as in the rules. Checkpoints and
arrays are DVC-cached; every other output is a small text or image file kept in git (`cache: false`); the report's
headline file is the one DVC metrics file.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.deps import stage_params_keys

CACHED_SUFFIXES = (".pt", ".npz")  # big binary outputs: DVC-cached; all others are small files kept in git
METRICS = "results/report/metrics.json"
DATA = "results/data/${data.dataset}"  # prepare's folder, named by a params key
# a wildcard's params axis in a DVC matrix
AXES = {"variant": "pretrain.variants", "refined": "refine.variants", "seed": "seeds"}
HEADER = ("# Written from rules/*.smk (the DAG's source of truth) and params.yaml by `python -m pipeline.dvc_yaml`,\n"
          "# which `make run`, `make repro` and `make profile` call: edit the rules, not this file. Each rule is one\n"
          "# stage, a matrix over the params its wildcards come from; refine and evaluate_refined list their\n"
          "# (refinement, seed) items instead, since a DVC matrix cannot look up a refinement's pretrained source.\n")

# Top-level plots: one chart per quantity, every model's file in it (DVC's multi-file form: `y` maps each file to
# its column), so `dvc plots diff A B` overlays two commits in each chart. {variant} / {refined} templates expand
# over every pretrain variant / refinement and seed. The "live" charts read DVCLive's per-epoch tsv, which a training
# stage appends to while it runs: gitignored working files, so DVC leaves those charts out (with a warning) where
# they are missing, as in a fresh clone.
_KNN = ("results/plots/knn_blocks/{variant}/seed{seed}.csv", "results/plots/knn_blocks/{refined}/seed{seed}.csv",
        "results/plots/knn_blocks/random-init.csv")
_SPECTRUM = ("results/plots/spectrum/{variant}/seed{seed}.csv", "results/plots/spectrum/{refined}/seed{seed}.csv",
             "results/plots/spectrum/random-init.csv", "results/plots/spectrum/pixels.csv")
_PRETRAIN_LIVE = "results/pretrain/{variant}/seed{seed}/live/plots/metrics/train/"
_REFINE_LIVE = "results/refine/{refined}/seed{seed}/live/plots/metrics/refine/"
PLOTS: dict[str, dict] = {
    "knn_cls_per_block": {"files": _KNN, "x": "block", "y": "cls",
                          "title": "k-NN accuracy of the CLS token per block",
                          "x_label": "block (0-based)", "y_label": "k-NN accuracy (val)"},
    "knn_mean_patch_per_block": {"files": _KNN, "x": "block", "y": "mean_patch",
                                 "title": "k-NN accuracy of the mean patch token per block",
                                 "x_label": "block (0-based)", "y_label": "k-NN accuracy (val)"},
    "pretrain_loss": {"files": ("results/plots/pretrain_curve/{variant}/seed{seed}.csv",), "x": "epoch", "y": "loss",
                      "title": "pretraining loss (reconstruction)", "x_label": "epoch", "y_label": "loss"},
    "refine_loss": {"files": ("results/plots/refine_curve/{refined}/seed{seed}.csv",), "x": "epoch", "y": "loss",
                    "title": "refinement loss", "x_label": "epoch (heads, then encoder)", "y_label": "loss"},
    "refine_monitor": {"files": ("results/plots/refine_curve/{refined}/seed{seed}.csv",), "x": "epoch",
                       "y": ["knn", "nn_accuracy"],
                       "title": "refinement monitor: k-NN of the EMA encoder, NN-retrieval accuracy",
                       "x_label": "epoch (heads, then encoder)", "y_label": "accuracy"},
    "spectrum": {"files": _SPECTRUM, "x": "index", "y": "log10_singular_value_centred",
                 "title": "singular values of the feature covariance (val, L2-normalized, centred: Jing et al.)",
                 "x_label": "index", "y_label": "log10 singular value"},
    "live_pretrain_loss": {"files": (_PRETRAIN_LIVE + "loss.tsv",), "x": "step", "y": "loss",
                           "title": "live: pretraining loss while a stage trains (DVCLive)",
                           "x_label": "epoch (0-based)", "y_label": "loss"},
    "live_refine_loss": {"files": (_REFINE_LIVE + "loss.tsv",), "x": "step", "y": "loss",
                         "title": "live: refinement loss while a stage trains (DVCLive)",
                         "x_label": "epoch (0-based, both phases)", "y_label": "loss"},
    "live_refine_knn": {"files": (_REFINE_LIVE + "knn.tsv",), "x": "step", "y": "knn",
                        "title": "live: refinement k-NN monitor while a stage trains (DVCLive)",
                        "x_label": "epoch (0-based, both phases)", "y_label": "k-NN accuracy (monitor)"},
}
IMAGE_PLOTS = ("results/report/knn_blocks.png", "results/report/frequency.png", "results/report/fusion_weights.png",
               "results/report/fewshot.png", "results/report/spectrum.png", "results/report/negatives_top_share.png")


class StaleError(Exception):
    """dvc.yaml is not what the rules and params give."""


@dataclass(frozen=True)
class Job:
    """One Snakemake job: its rule, wildcards (in the rule's order), command (log redirect removed), inputs, outputs."""

    rule: str
    wildcards: tuple[tuple[str, str], ...]
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def snakemake_jobs(root: Path = Path(".")) -> list[Job]:
    """Every job of the DAG, from Snakemake's dry run (rule `all` left out), in the rules' definition order."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    args = [_tool("snakemake"), "--dry-run", "--forceall", "--printshellcmds", "--cores", "1"]
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StaleError(f"snakemake --dry-run failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}")
    order = rule_order(root)
    jobs = []
    for block in proc.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        if rule == "all":
            continue
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines()[1:]
                      if line.startswith("    ") and ": " in line)
        cmd = block.split("Shell command: ", 1)[1].splitlines()[0]
        cmd = cmd.removesuffix(f" > {fields['log']} 2>&1")
        wildcards = tuple(tuple(w.split("=", 1)) for w in fields["wildcards"].split(", ")) if "wildcards" in fields \
            else ()
        jobs.append(Job(rule, wildcards, cmd, tuple(fields.get("input", "").split(", ")) if "input" in fields else (),
                        tuple(fields["output"].split(", "))))
    return sorted(jobs, key=lambda j: (order.index(j.rule), j.wildcards))


def rule_order(root: Path = Path(".")) -> list[str]:
    """The rules in the order the Snakefile includes and defines them (the DAG's order, prepare to report)."""
    names = []
    for line in (root / "Snakefile").read_text().splitlines():
        if m := re.match(r'include: "(.+)"', line):
            names += re.findall(r"^rule (\w+):", (root / m.group(1)).read_text(), flags=re.M)
    return names


def _items(job: Job, params: dict) -> dict[str, str]:
    """A job's DVC item: its wildcards and a refinement's pretrained source (DVC cannot look it up)."""
    item = dict(job.wildcards)
    if "refined" in item:
        item["pretrained"] = params["refine"]["variants"][item["refined"]]["pretrained"]
    return item


def _abstract(text: str, item: dict[str, str]) -> str:
    """`text` with each item value, where it stands as a name (an argument, or a path part or `seed<N>` of a path
    under results/), as ${item.k}; other files (code, an init checkpoint) keep their names even where a variant
    shares one."""
    words = text.split(" ")
    for key, value in sorted(item.items(), key=lambda kv: -len(kv[1])):
        pattern = rf"(?<![\w-]){re.escape(value)}(?![\w-])|(?<=seed){re.escape(value)}(?!\w)"
        words = ["${item." + key + "}" if w == value else re.sub(pattern, "${item." + key + "}", w)
                 if w.startswith("results/") else w for w in words]
    return " ".join(words)


def _render(text: str, item: dict[str, str], dataset: str) -> str:
    text = text.replace(DATA, f"results/data/{dataset}")
    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)


def _template(job: Job, item: dict[str, str], dataset: str) -> tuple:
    """The job's command, deps and outs with its item's values, and the dataset (a params key, so `dvc exp run -S
    data.dataset=...` needs no new file), written as DVC interpolations."""
    def abstract(text: str) -> str:
        return re.sub(rf"results/data/{re.escape(dataset)}(?=/| |$)", DATA, _abstract(text, item))

    return (abstract(job.cmd), tuple(abstract(d) for d in job.deps), tuple(abstract(o) for o in job.outs))


def _stage_body(cmd: str, deps: tuple[str, ...], outs: tuple[str, ...], params_keys: list[str]) -> dict:
    body: dict = {"cmd": cmd, "deps": list(deps), "params": params_keys}
    cached = [o for o in outs if o.endswith(CACHED_SUFFIXES)]
    files = [{o: {"cache": False}} for o in outs if not o.endswith(CACHED_SUFFIXES) and o != METRICS]
    if cached or files:
        body["outs"] = cached + files
    if METRICS in outs:
        body["metrics"] = [{METRICS: {"cache": False}}]
    return body


def _matrix(items: list[dict[str, str]], params: dict) -> dict | None:
    """The `matrix` over params axes whose product is exactly these items, or None."""
    keys = list(items[0])
    if not set(keys) <= set(AXES):
        return None
    values = {k: [str(v) for v in _lookup(params, AXES[k])] for k in keys}
    if sorted(tuple(i[k] for k in keys) for i in items) != sorted(itertools.product(*values.values())):
        return None
    return {k: "${" + AXES[k] + "}" for k in keys}


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return list(node)


def rule_stages(rule: str, jobs: list[Job], params: dict) -> dict[str, dict]:
    """The dvc.yaml entries of one rule: a plain stage, a matrix, or a foreach over its items (groups of jobs that
    share a template; a second group, such as a variant started from an `init` file, gets `<rule>-<first item>`)."""
    module = re.search(r"python -m ([\w.]+)", jobs[0].cmd).group(1)
    keys = list(stage_params_keys(module))
    dataset = params["data"]["dataset"]
    if not jobs[0].wildcards:
        (job,) = jobs
        return {rule: _stage_body(*_template(job, {}, dataset), keys)}
    groups: dict[tuple, list[dict[str, str]]] = {}
    for job in jobs:
        item = _items(job, params)
        groups.setdefault(_template(job, item, dataset), []).append(item)
    for template, items in groups.items():  # the source stays in the items only where the rule's paths name it
        if "${item.pretrained}" not in str(template):
            for item in items:
                item.pop("pretrained", None)
    entries = {}
    # the most jobs (then the fewest deps) keep the rule's name: a variant started from an init file is the other one
    ordered = sorted(groups.items(), key=lambda g: (-len(g[1]), len(g[0][1])))
    for n, (template, items) in enumerate(ordered):
        model_key = next(k for k in ("variant", "refined") if k in items[0])
        body = _stage_body(*template, [k.replace("{variant}", "${item." + model_key + "}") for k in keys])
        name = rule if n == 0 else f"{rule}-{items[0][model_key]}"
        matrix = _matrix(items, params)
        loop = {"matrix": matrix} if matrix else {
            "foreach": {"-".join(v for k, v in i.items() if k in dict(jobs[0].wildcards)): i for i in items}}
        entries[name] = {**loop, "do": body} if "foreach" in loop else {**loop, **body}
    return entries


def _check_renders(entries: dict[str, dict], jobs: list[Job], params: dict) -> None:
    """Every job rendered back from the entries equals Snakemake's job (the file says what the rules say)."""
    rendered = set()
    for entry in entries.values():
        body = entry.get("do", entry)
        if "foreach" in entry:
            items = list(entry["foreach"].values())
        elif "matrix" in entry:
            axes = {k: [str(v) for v in _lookup(params, AXES[k])] for k in entry["matrix"]}
            items = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
            items = [i | ({"pretrained": params["refine"]["variants"][i["refined"]]["pretrained"]}
                          if "refined" in i else {}) for i in items]
        else:
            items = [{}]
        outs = [o if isinstance(o, str) else next(iter(o)) for o in body.get("outs", [])]
        outs += [next(iter(m)) for m in body.get("metrics", [])]
        dataset = params["data"]["dataset"]
        for item in items:
            rendered.add((_render(body["cmd"], item, dataset), tuple(_render(d, item, dataset) for d in body["deps"]),
                          tuple(sorted(_render(o, item, dataset) for o in outs))))
    expected = {(j.cmd, j.deps, tuple(sorted(j.outs))) for j in jobs}
    if rendered != expected:
        raise StaleError(f"dvc.yaml would not render Snakemake's jobs: {sorted(expected ^ rendered)[0][0]}")


def plot_files(templates: tuple[str, ...], params: dict) -> list[str]:
    """The files of plot templates for `params`: {variant} / {refined} over their variants and the seeds."""
    files = []
    for t in templates:
        per = next((p for p in ("variant", "refined") if "{" + p + "}" in t), None)
        if per is None:
            files.append(t)
            continue
        for name in _lookup(params, AXES[per]):
            files += [t.replace("{" + per + "}", name).replace("{seed}", str(s)) for s in params["seeds"]]
    return files


def dvc_plots(params: dict) -> list:
    charts = [{plot_id: {"title": spec["title"], "x": spec["x"], "x_label": spec["x_label"],
                         "y": {f: spec["y"] if isinstance(spec["y"], str) else list(spec["y"])
                               for f in plot_files(spec["files"], params)},
                         "y_label": spec["y_label"]}}
              for plot_id, spec in PLOTS.items()]
    return charts + list(IMAGE_PLOTS)


def dvc_yaml_text(root: Path = Path(".")) -> str:
    """The dvc.yaml the rules and params.yaml of `root` give."""
    from pipeline.config import load_params

    params = load_params(root / "params.yaml")
    jobs = snakemake_jobs(root)
    stages: dict[str, dict] = {}
    for rule, rule_jobs in itertools.groupby(jobs, key=lambda j: j.rule):
        stages.update(rule_stages(rule, list(rule_jobs), params))
    _check_renders(stages, jobs, params)
    return HEADER + yaml.safe_dump({"stages": stages, "plots": dvc_plots(params)}, sort_keys=False, width=120)


def stage_argv(name: str, fill: dict, path: Path = Path(__file__).resolve().parent.parent / "dvc.yaml"
               ) -> tuple[str, list[str]]:
    """The module and argv of stage `name` as dvc.yaml runs it, its ${...} filled from `fill` (keys: the items'
    `variant`, `refined`, `pretrained`, `seed`, and `dataset`): for drivers that call a stage's `main(argv)` in
    process, without either tool (benchmarks/gpu_chain.py, the params fuzz test)."""
    entry = yaml.safe_load(path.read_text())["stages"][name]
    cmd = entry.get("do", entry)["cmd"].replace("${data.dataset}", str(fill["dataset"]))
    words = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(fill[m.group(1)]), cmd).split()
    assert words[:2] == ["python", "-m"], cmd
    return words[2], words[3:]


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m pipeline.dvc_yaml", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether dvc.yaml is current (exit 1 if not)")
    args = parser.parse_args(argv)
    try:
        text = dvc_yaml_text()
    except (ConfigError, StaleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = Path("dvc.yaml")
    current = path.read_text() if path.is_file() else ""
    if args.check:
        if current != text:
            print("error: dvc.yaml is out of date with rules/ and params.yaml: run `make dvc.yaml`", file=sys.stderr)
            return 1
        return 0
    if current != text:  # unchanged files keep their mtime
        tmp = path.with_name(".tmp-dvc.yaml")
        tmp.write_text(text)
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
