"""Sweep results store: every chunk is verified (config hash + content checksum) before it
is adopted on resume or returned by ``load``; bad chunks are named, moved aside and
recomputed; chunks without matching metadata are never adopted."""

import json
import shutil
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qnr.sweep import SweepConfig, load, run_sweep
from qnr.sweep._store import verify_chunk_file

TASK = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp

    from qnr.sweep import Task


    def build(static, options, floats):
        def fn(params, keys):
            a = params["alpha"]
            noise = jax.vmap(lambda k: jax.random.normal(k, (), dtype=a.dtype))(keys)
            return {"closed": 2 * a, "mc": a + noise, "result": jnp.zeros((), jnp.int32)}

        return fn


    STORE_TOY = Task(
        name="store-toy", float_axes={"alpha": None}, static_axes={"d": 1}, build=build
    )
    """
)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    path = tmp_path_factory.mktemp("store_task")
    (path / "store_toy_task.py").write_text(TASK)
    sys.path.insert(0, str(path))
    import store_toy_task

    yield store_toy_task.STORE_TOY
    sys.path.remove(str(path))


def _config(n=6):
    grid = {"alpha": tuple(np.linspace(0.1, 1.0, n).tolist())}
    return SweepConfig(
        kind="custom", task="store_toy_task:STORE_TOY", grid=grid, seeds=(0, 1), chunk_size=2
    )


def _run(cfg, out, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_sweep(cfg, out, quiet=True, **kw)
    return report, [str(w.message) for w in caught]


@pytest.fixture
def finished(task, tmp_path):
    """A complete sweep (3 chunks) and a copy of its pristine table."""
    cfg = _config()
    out = tmp_path / "out"
    report, _ = _run(cfg, out)
    assert report.chunks_computed == 3
    return cfg, out, load(out)


def _chunk(out, i=1):
    return out / "chunks" / f"g000-c{i:05d}.parquet"


def test_chunks_carry_hash_and_checksum(finished):
    cfg, out, df = finished
    meta = pq.read_schema(_chunk(out)).metadata
    assert meta[b"qnr.config_hash"].decode() == cfg.config_hash()
    assert len(meta[b"qnr.sha256"]) == 64
    table, reason = verify_chunk_file(_chunk(out), cfg.config_hash())
    assert reason is None and table.num_rows == 4
    assert df.attrs["complete"] and df.attrs["bad_chunks"] == {}


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_chunk_is_named_skipped_and_recomputed(finished, damage):
    cfg, out, pristine = finished
    path = _chunk(out)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # one byte inside the data pages (not the footer)
        i = 40
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif damage == "garbage":
        path.write_bytes(b"not parquet at all")
    else:
        path.write_bytes(b"")

    with pytest.warns(RuntimeWarning, match="g000-c00001"):
        partial = load(out)
    assert "g000-c00001" in partial.attrs["bad_chunks"]
    assert not partial.attrs["complete"] and len(partial) == len(pristine) - 4

    report, messages = _run(cfg, out)
    assert report.chunks_recomputed == 1 and report.chunks_computed == 1
    assert report.chunks_skipped == 2 and "g000-c00001" in report.bad_chunks
    assert any("g000-c00001 is bad" in m for m in messages)
    assert len(list((out / "corrupt").glob("g000-c00001-*.parquet"))) == 1  # kept aside
    healed = load(out)
    assert healed.attrs["complete"]
    pd.testing.assert_frame_equal(healed, pristine)


def test_altered_values_fail_the_checksum(finished):
    """Rewrite a chunk as valid Parquet with one value changed but the original metadata:
    only the content checksum can tell."""
    cfg, out, _ = finished
    path = _chunk(out, 0)
    table = pq.read_table(path)
    cols = {k: table.column(k).to_numpy() for k in table.column_names}
    cols["mc"] = cols["mc"].copy()
    cols["mc"][0] += 1e-9
    forged = pa.table(cols).replace_schema_metadata(table.schema.metadata)
    pq.write_table(forged, path)
    _, reason = verify_chunk_file(path, cfg.config_hash())
    assert reason is not None and "checksum" in reason
    report, _ = _run(cfg, out)
    assert report.chunks_recomputed == 1


def test_missing_metadata_other_config_is_not_adopted(finished, tmp_path):
    """Delete metadata.json and run a different config in the same directory: refused
    (the chunks carry the old config's hash), never silently adopted."""
    cfg, out, _ = finished
    (out / "metadata.json").unlink()
    other = _config(n=5)
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(other, out, quiet=True)
    assert not (out / "metadata.json").exists()  # nothing was written
    report, _ = _run(other, out, overwrite=True)
    assert report.chunks_computed == report.n_chunks == 3
    df = load(out)
    np.testing.assert_allclose(sorted(set(df["alpha"])), np.linspace(0.1, 1.0, 5))


def test_missing_metadata_same_config_is_readopted(finished):
    cfg, out, pristine = finished
    (out / "metadata.json").unlink()
    report, _ = _run(cfg, out)
    assert report.chunks_skipped == 3 and report.chunks_computed == 0
    assert json.loads((out / "metadata.json").read_text())["config_hash"] == cfg.config_hash()
    pd.testing.assert_frame_equal(load(out), pristine)


def test_foreign_and_legacy_chunks_are_not_adopted(finished, tmp_path):
    """A chunk of another sweep copied in, and a chunk without a checksum (an older qnr),
    are both bad: skipped by load, recomputed by a resume."""
    cfg, out, pristine = finished
    other_out = tmp_path / "other"
    _run(_config(n=5), other_out)
    shutil.copy(_chunk(other_out, 0), _chunk(out, 0))
    legacy = pq.read_table(_chunk(out, 2)).replace_schema_metadata(None)
    pq.write_table(legacy, _chunk(out, 2))
    with pytest.warns(RuntimeWarning, match="2 bad chunk"):
        df = load(out)
    bad = df.attrs["bad_chunks"]
    assert "another sweep" in bad["g000-c00000"] and "no qnr checksum" in bad["g000-c00002"]
    report, _ = _run(cfg, out)
    assert report.chunks_recomputed == 2
    pd.testing.assert_frame_equal(load(out), pristine)


def test_results_path_that_is_a_file_is_refused_before_work(task, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        run_sweep(_config(), f, quiet=True)
    with pytest.raises(ValueError, match="not a directory"):
        run_sweep(_config(), f / "sub", quiet=True)
    assert f.read_text() == "x"


def test_huge_chunk_size_allocates_only_the_grid(task, tmp_path):
    """chunk_size far above the grid size must not pad the batch to chunk_size."""
    cfg = SweepConfig(
        kind="custom",
        task="store_toy_task:STORE_TOY",
        grid={"alpha": (0.5, 1.0)},
        chunk_size=1_000_000,
    )
    report, _ = _run(cfg, tmp_path / "o")
    assert report.n_chunks == 1 and len(load(tmp_path / "o")) == 2


def test_load_without_metadata_says_so(tmp_path):
    with pytest.raises(ValueError, match="not a qnr sweep"):
        load(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load(tmp_path)


def test_task_refusing_its_options_leaves_nothing_on_disk(tmp_path):
    """The point functions are built before the results directory is created: a task that
    refuses its configuration (here at build time) writes nothing."""
    from qnr.sweep import Task

    def build(static, options, floats):
        raise ValueError("this task refuses to be built")

    bad = Task(name="refuses", float_axes={"alpha": None}, static_axes={}, build=build)
    cfg = SweepConfig(kind="custom", task="x:y", grid={"alpha": (0.5,)})
    with pytest.raises(ValueError, match="refuses"):
        run_sweep(cfg, tmp_path / "out", task=bad, quiet=True)
    assert not (tmp_path / "out").exists()
