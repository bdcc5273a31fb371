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
