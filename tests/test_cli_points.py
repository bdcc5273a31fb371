"""``qnr erm-theory --points FILE``: a batch of theory points in one program per group."""

import json

import pytest

from qnr.cli import main


def _write(tmp_path, text):
    path = tmp_path / "points.csv"
    path.write_text(text)
    return str(path)


def test_points_json_matches_reference_rows(tmp_path, capsys):
    """THEORY.md rows through the batch CLI: (0.3, 0.5, lam 0.05) and noiseless lam -> 0+ at
    alpha 0.1 and 0.3; alpha 0.6 is perfect recovery; one row is rank-constrained."""
    path = _write(
        tmp_path,
        "alpha,kappa_star,kappa,lam,delta\n"
        "0.3,0.5,,0.05,0\n0.1,0.5,,0,0\n0.3,0.5,,0,0\n0.6,0.5,,0,0\n0.3,0.5,0.4,0.05,0.1\n",
    )
    assert main(["erm-theory", "--points", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    pts = out["points"]
    assert len(pts) == 5 and out["converged_fraction"] == 1.0
    assert set(out["timings"]) >= {"compile_s", "solve_s"}
    assert abs(pts[0]["E"] - 0.3796) < 5e-5 and abs(pts[0]["rank"] - 0.501) < 5e-4
    assert abs(pts[1]["E"] - 2.126) < 5e-4 and abs(pts[2]["E"] - 0.322) < 5e-4
    assert pts[3]["branch"] == "perfect" and pts[3]["E"] == 0.0
    assert pts[4]["rank"] <= 0.4 + 1e-10 and pts[4]["kappa"] == 0.4


def test_points_csv_output(tmp_path, capsys):
    path = _write(tmp_path, "alpha,kappa_star,kappa,lam,delta\n0.3,0.5,,0.05,0\n")
    assert main(["erm-theory", "--points", path]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split(",")
    assert header[:5] == ["alpha", "kappa_star", "kappa", "lam", "delta"]
    row = dict(zip(header, lines[1].split(","), strict=True))
    assert abs(float(row["E"]) - 0.3796) < 5e-5 and row["converged"] == "True"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("alpha,kappa_star,lam,delta\n0.3,0.5,0.05,0\n", "missing column"),
        ("alpha,kappa_star,kappa,lam,delta\n-1,0.5,,0.05,0\n", "line 2: alpha"),
        ("alpha,kappa_star,kappa,lam,delta\nabc,0.5,,0.05,0\n", "not a number"),
        ("alpha,kappa_star,kappa,lam,delta\n0.3,0.5,,inf,0\n", "finite"),
        ("alpha,kappa_star,kappa,lam,delta\n", "no data rows"),
    ],
)
def test_points_bad_files_are_refused(tmp_path, capsys, text, needle):
    path = _write(tmp_path, text)
    assert main(["erm-theory", "--points", path, "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_points_and_alpha_are_exclusive(tmp_path, capsys):
    path = _write(tmp_path, "alpha,kappa_star,kappa,lam,delta\n0.3,0.5,,0.05,0\n")
    assert main(["erm-theory", "--points", path, "--alpha", "0.3"]) == 2
    assert "exactly one of --alpha" in capsys.readouterr().err


def test_threshold_points_match_theory_values(tmp_path, capsys):
    """THEORY.md section 3: alpha_SR(0.1, 0.5, 0.9) = 0.157572, 0.422175, 0.497405;
    alpha_inter(kappa* 0.5, Delta 0.1) = 0.3597; the Delta -> 0+ limit 1/4 + k/2 - k^2/4."""
    path = _write(tmp_path, "kappa_star,kappa,delta\n0.1,,0\n0.5,,0.1\n0.9,,0\n")
    assert main(["thresholds", "--points", path, "--json"]) == 0
    pts = json.loads(capsys.readouterr().out)["points"]
    for p, sr in zip(pts, (0.157572, 0.422175, 0.497405), strict=True):
        assert abs(p["alpha_SR"] - sr) < 2e-6 and p["converged"]
    assert abs(pts[1]["alpha_inter"] - 0.3597) < 1e-4
    assert abs(pts[0]["alpha_inter"] - (0.25 + 0.05 - 0.0025)) < 1e-9
