"""make study: a profile's report kept in studies/<profile>/ with its params and the code commit it ran on."""
from __future__ import annotations

from pipeline import study
from tests.conftest import REPO


def test_study__unknown_profile_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert study.main(["no-such-profile"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: study: no profile 'no-such-profile' (profiles/no-such-profile/params.yaml is missing)"]


def test_record__keeps_the_report_curves_params_and_provenance(tmp_path):
    work, out = tmp_path / "work", tmp_path / "studies" / "seeds3"
    (work / "results/report").mkdir(parents=True)
    (work / "results/report/summary.md").write_text("| model |\n")
    (work / "results/report/.lock").write_text("123")
    (work / "results/plots/knn_blocks/mae").mkdir(parents=True)
    (work / "results/plots/knn_blocks/mae/seed1.csv").write_text("block,cls\n")
    (work / "results/plots/recon_blocks/mae").mkdir(parents=True)
    (work / "results/plots/recon_blocks/mae/seed1.csv").write_text("block,loss\n")
    (work / "params.yaml").write_text("seeds: [0, 1, 2]\n")
    (out / "stale").mkdir(parents=True)  # an older record of the study is replaced, not merged
    study.record("seeds3", work, out, "make study S=seeds3", 600.0, "abc1234")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "STUDY.md", "knn_blocks/mae/seed1.csv", "params.yaml", "recon_blocks/mae/seed1.csv", "report/summary.md"]
    text = (out / "STUDY.md").read_text()
    assert "commit abc1234" in text and "10.0 min" in text and "profiles/seeds3/params.yaml" in text


def test_study__a_resumed_study_records_the_commit_its_scratch_was_copied_from(tmp_path, monkeypatch):
    """A killed study resumes in its scratch copy, whose code is the commit it was made from, not today's HEAD."""
    import subprocess

    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles" / "seeds3").mkdir(parents=True)
    (tmp_path / "profiles" / "seeds3" / "params.yaml").write_text("seeds: [0, 1, 2]\n")
    work = tmp_path / study.SCRATCH / "seeds3"
    work.mkdir(parents=True)
    (work / study.COMMIT_FILE).write_text("abc1234\n")
    recorded = {}
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    monkeypatch.setattr(study, "_git", lambda *a: "fff9999")  # today's HEAD
    monkeypatch.setattr(study, "record", lambda *a: recorded.update(commit=a[-1]))
    assert study.main(["seeds3"]) == 0
    assert recorded["commit"] == "abc1234"


def test_code_version__a_study_scratch_stamps_the_commit_it_was_copied_from(tmp_path):
    """The report's figures and every stage's log name the code they ran: in a scratch copy inside the repository
    (gitignored), git would name today's HEAD, so the copy's .study-commit is read instead."""
    import shutil
    import subprocess
    import sys

    work = tmp_path / study.SCRATCH / "scaling"
    shutil.copytree(REPO / "pipeline", work / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (work / study.COMMIT_FILE).write_text("abc1234\n")
    probe = "from pipeline.stages.runner import code_version; print(code_version())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=work, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "abc1234"
    (work / study.COMMIT_FILE).unlink()
    out = subprocess.run([sys.executable, "-c", probe], cwd=work, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "unknown"  # outside git, and no record of a copy
