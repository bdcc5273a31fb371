"""qnr.theory re-exports each submodule's ``__all__`` explicitly (``X as X``, no star imports):
a name added to a submodule's ``__all__`` must be added to ``qnr/theory/__init__.py`` too."""

import importlib

import qnr.theory


def test_theory_reexports_exactly_the_submodules_all():
    expected = set()
    for sub in ("bayes", "design", "dynamics", "erm", "thresholds"):
        module = importlib.import_module(f"qnr.theory.{sub}")
        for name in module.__all__:
            assert getattr(qnr.theory, name) is getattr(module, name), name
        expected |= set(module.__all__)
    public = {n for n, v in vars(qnr.theory).items() if not n.startswith("_")}
    public -= {"bayes", "design", "dynamics", "erm", "thresholds"}  # the submodules themselves
    assert public == expected


def test_top_level_all_resolves():
    """Every name of ``qnr.__all__`` (the lazily imported API, incl. ``qnr.RESULTS``) resolves."""
    import qnr

    assert "RESULTS" in qnr.__all__
    for name in qnr.__all__:
        assert getattr(qnr, name) is not None, name
