"""Every command answers a store it cannot use with one line and exit 2, never a traceback:
a path that is a file, a path through a file, a file where the store keeps a folder."""

from __future__ import annotations

import pytest

from hhpulse.cli import main

COMMANDS = [
    ["collect", "--source", "demo", "--demo-size", "5", "--store", "{s}"],
    ["history", "--store", "{s}"],
    ["history", "--rebuild", "--store", "{s}"],
    ["store", "prune", "--raw-older-than", "1", "--store", "{s}"],
    ["monitor", "--store", "{s}"],
    ["serve", "--store", "{s}"],
    ["validate", "--store", "{s}"],
    ["predict", "--store", "{s}", "--input", "-"],
    ["deploy", "--store", "{s}"],
    ["logsink", "--store", "{s}", "--port", "1"],
    ["replay", "--store", "{s}", "--days", "2"],
    ["run", "--store", "{s}"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
@pytest.mark.parametrize("where", ["file", "below a file"])
def test_a_store_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys, argv, where):
    path = tmp_path / "store.txt"
    path.write_text("not a store\n")
    location = str(path) if where == "file" else str(path / "sub")
    rc = main([a.format(s=location) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"hhpulse {argv[0]}") and "not a folder" in err, err
    assert path.read_text() == "not a store\n"  # and nothing was written over it


def test_a_file_where_the_store_keeps_a_folder_is_one_line_too(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "history").write_text("x")
    rc = main(["collect", "--source", "demo", "--demo-size", "5", "--store", str(store)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "cannot write" in err and "history" in err and "Not a directory" in err


def test_a_champion_whose_manifest_does_not_check_is_one_line_for_serve(tmp_path, capsys):
    """A champion whose files do not match its manifest (a mixed bundle): one line, not a BundleError traceback."""
    import json

    from hhpulse.data.store import LocalStore
    from hhpulse.model.bundle import FORMAT, write_manifest
    from hhpulse.model.registry import publish

    bundle = tmp_path / "v1"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"format": FORMAT, "version": "v1"}))
    write_manifest(bundle, "v1")
    store = LocalStore(tmp_path / "store")
    publish(store, bundle)
    store.put_bytes("models/hhpulse/v1/bundle.json", b"{}")  # changed behind the registry's back
    rc = main(["serve", "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "bundle.json does not match its sha256" in err
