"""How the app's caches key a checkpoint: Streamlit hashes a frozen dataclass by value, a checkpoint's label
is left out of the key (`caches.BY_WEIGHTS`), and every Streamlit cache of the app is in `drnet_app.caches`."""
from __future__ import annotations

import ast
from pathlib import Path

import streamlit as st

from drnet_app import caches
from drnet_app.state import Checkpoint

APP = Path(__file__).resolve().parent.parent / "app"
SHA_A, SHA_B = "a" * 64, "b" * 64


def test_streamlit_keys_a_checkpoint_by_value_and_by_every_field_even_one_left_out_of_equality():
    calls = []

    @st.cache_data(show_spinner=False)
    def toy(checkpoint: Checkpoint) -> str:
        calls.append(checkpoint)
        return checkpoint.sha256

    toy.clear()
    toy(Checkpoint("model.pt", SHA_A, "model.pt"))
    toy(Checkpoint("model.pt", SHA_A, "model.pt"))  # another instance, equal: the same entry
    assert len(calls) == 1
    toy(Checkpoint("model.pt", SHA_B, "model.pt"))
    assert len(calls) == 2
    # Equal to the first in Python (`name` is compare=False), yet another entry: Streamlit hashes
    # `dataclasses.asdict`, every field. This is why the app's caches take `hash_funcs=BY_WEIGHTS`.
    relabelled = Checkpoint("model.pt", SHA_A, "my upload.pt")
    assert relabelled == Checkpoint("model.pt", SHA_A, "model.pt")
    toy(relabelled)
    assert len(calls) == 3


def test_the_apps_caches_key_a_checkpoint_by_path_and_sha256_not_by_its_label():
    data_calls, resource_calls = [], []

    @st.cache_data(show_spinner=False, hash_funcs=caches.BY_WEIGHTS)
    def data(checkpoint: Checkpoint, tau: float) -> str:
        data_calls.append(checkpoint)
        return checkpoint.sha256

    @st.cache_resource(show_spinner=False, hash_funcs=caches.BY_WEIGHTS)
    def resource(checkpoint: Checkpoint) -> object:
        resource_calls.append(checkpoint)
        return object()

    data.clear(), resource.clear()
    for cached, calls in ((lambda c: data(c, 0.5), data_calls), (resource, resource_calls)):
        first = cached(Checkpoint("model.pt", SHA_A, "model.pt"))
        assert cached(Checkpoint("model.pt", SHA_A, "upload aaaaaaaaaaaa…")) == first
        assert len(calls) == 1
        cached(Checkpoint("model.pt", SHA_B, "model.pt"))
        cached(Checkpoint("other.pt", SHA_A, "model.pt"))
        assert len(calls) == 3
    assert data(Checkpoint("model.pt", SHA_A, "model.pt"), 0.75) == SHA_A and len(data_calls) == 4


def test_a_relabelled_checkpoint_shares_its_loaded_model():
    from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, sha256_of

    digest = sha256_of(SHIPPED_CHECKPOINT)
    model, _ = caches.model_and_meta(Checkpoint(str(SHIPPED_CHECKPOINT), digest, SHIPPED_CHECKPOINT.name))
    again, _ = caches.model_and_meta(Checkpoint(str(SHIPPED_CHECKPOINT), digest, "a label of its own"))
    assert again is model


def _cache_decorators(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(call) in ("st.cache_data", "st.cache_resource"):
                    yield node, decorator


def test_every_streamlit_cache_of_the_app_is_in_the_caches_module():
    elsewhere = [f"{path.relative_to(APP)}: {function.name}" for path in sorted(APP.rglob("*.py"))
                 if path.name != "caches.py" for function, _ in _cache_decorators(ast.parse(path.read_text()))]
    assert not elsewhere, elsewhere


def test_every_cache_that_takes_a_checkpoint_keys_it_by_weights():
    tree = ast.parse((APP / "caches.py").read_text())
    taking = [(function, decorator) for function, decorator in _cache_decorators(tree)
              if any(arg.annotation is not None and ast.unparse(arg.annotation) == "Checkpoint"
                     for arg in function.args.args)]
    assert len(taking) >= 20
    unkeyed = [function.name for function, decorator in taking
               if not (isinstance(decorator, ast.Call) and any(
                   keyword.arg == "hash_funcs" and ast.unparse(keyword.value) == "BY_WEIGHTS"
                   for keyword in decorator.keywords))]
    assert not unkeyed, unkeyed
